"""`edgefss classes BUNDLE`: the class names a bundle can segment.

TLG: whether it carries the CLIP text tower (then any name works: names outside the table are
embedded on the device on first use) and the names of its text table (exported; with the tower
they cost no tower run). Without the tower, another name is refused with close matches and the
export command that adds it. CST: any name; its pseudo-mask is class-agnostic and the name only
labels the output. Reads the manifest, the table and the tower's side files (no engine starts).
Torch-free; the Python API is `edgefss.runtime.text_encoder.bundle_vocabulary(BUNDLE)` and
`Segmenter.vocabulary()`.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory written by `edgefss export`")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the list")


def known_classes(bundle_dir) -> tuple[list | None, str]:
    """(the bundle's table names, where they come from); names None when the bundle has no table (CST)."""
    from edgefss.runtime.text_encoder import bundle_vocabulary

    v = bundle_vocabulary(bundle_dir)
    return v.table, (f"TLG text table, {v.source}" if v.table is not None else v.reason)


def run(args) -> int:
    from edgefss.runtime.text_encoder import bundle_vocabulary

    v = bundle_vocabulary(args.bundle)
    if getattr(args, "json", False):
        import json
        from dataclasses import asdict

        print(json.dumps(asdict(v)))
        return 0
    if v.table is None:
        print(f"{args.bundle}: any name — {v.reason}")
        return 0
    head = "any name" if v.any_name else "only these names"
    print(f"{args.bundle}: {head} — {v.reason}")
    print(f"text table: {len(v.table)} classes ({v.source}):")
    for n in v.table:
        print(f"  {n}")
    return 0
