"""Few-shot segmentation on a camera/video/folder with an exported bundle (no torch needed).

    python examples/camera_app.py --bundle B --support dog.jpg:dog --source 0
    python examples/camera_app.py --bundle B --support dog.jpg:dog \
        --source ../shared/data/davis2016_val_subset/dog/images --output out.mp4

The same app as `edgefss demo`: this file shows the Python API it is built on.
"""

from __future__ import annotations

import argparse
import sys

from edgefss.app import run_demo
from edgefss.cli.demo import add_arguments, config_from_args
from edgefss.errors import EdgeFSSError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        stats = run_demo(config_from_args(args))
    except EdgeFSSError as exc:
        print(f"camera_app: error: {exc}", file=sys.stderr)
        return 1
    print(f"{stats.frames} frames at {stats.fps:.1f} FPS; classes found per frame: {stats.present}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
