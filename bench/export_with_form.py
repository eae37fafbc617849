#!/usr/bin/env python
"""Export TLG with a chosen 4D-conv form, overriding `BACKEND_FORM` (for measuring a form; bench only).

    python bench/export_with_form.py --form eager --backend openvino --int8 --out runs/c4d/eager
    python bench/export_with_form.py --form dil_c3d_swap --backend openvino --int8 --out runs/c4d/dil
    python bench/bundle_ab.py runs/c4d/eager runs/c4d/dil

The bundle is an ordinary one (its manifest records the form); random weights unless --checkpoint,
and the INT8 gate is forced, since random weights give it nothing to judge: speed only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.exporters import conv4d_forms  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--form", required=True, choices=sorted(conv4d_forms.FORMS))
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--imgsz", type=int, default=400)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from edgefss.exporters import export

    conv4d_forms.BACKEND_FORM[(a.backend, "int8" if a.int8 else "fp32")] = a.form
    out = export("tlg", checkpoint=a.checkpoint, backend=a.backend, int8=a.int8 or None, imgsz=a.imgsz,
                 out=a.out, force=True if a.int8 else None)
    print(f"wrote {out} (conv4d form {a.form})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
