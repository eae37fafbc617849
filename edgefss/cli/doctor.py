"""`edgefss doctor`: report installed engines, the native extension, CPU ISA, GPU and Jetson model."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    import json

    from edgefss.doctor import collect, format_report

    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0
