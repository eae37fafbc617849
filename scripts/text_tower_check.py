"""Export, verify and INT8-gate a CLIP text tower at its real size, without exporting a whole bundle.

    python scripts/text_tower_check.py --clip-bpe bpe_simple_vocab_16e6.txt.gz \
        (--clip-checkpoint ViT-B-32.pt | --random default|nondegenerate) [--work DIR] [--json out.json]

Runs exactly what `edgefss export --model tlg --text-encoder int8` runs for the tower
(exporters/text_graph.stage_text_encoder: ONNX export, verification against PyTorch, INT8 QDQ, the
text gate of quant/text_gate.py) over the default class list's prompts, and prints the figures
(docs/open_vocabulary.md quotes them). `--random` builds a seeded CLIP ViT-B/32 text tower (12
layers x 512, vocabulary 49408: needs the official merges file): `default` = PyTorch's default
initialisation, `nondegenerate` = the recipe of tests/test_open_vocab.tower_state_dict (LayerNorm
scales 1 + 0.2 N, biases 0.1 N, weights N(0, 1/fan_in), residual output projections x3).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def random_checkpoint(kind: str, path: Path, seed: int = 0) -> Path:
    import torch

    from edgefss.text.clip_text import CLIP_TEXT_CONFIGS, ClipTextModel

    torch.manual_seed(seed)
    sd = ClipTextModel(CLIP_TEXT_CONFIGS["ViT-B/32"]).state_dict()
    if kind == "nondegenerate":
        sys.path.insert(0, str(REPO / "tests"))
        from test_open_vocab import tower_state_dict

        sd = tower_state_dict(sd["token_embedding.weight"].shape[0], seed=seed, cfg=CLIP_TEXT_CONFIGS["ViT-B/32"])
    torch.save(sd, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip-bpe", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--clip-checkpoint")
    src.add_argument("--random", choices=["default", "nondegenerate"])
    ap.add_argument("--work", type=Path, default=None, help="keep the graphs here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from edgefss.exporters.text_graph import stage_text_encoder
    from edgefss.text.prompts import default_classes
    from edgefss.text.table import build_text_table

    work = args.work or Path(tempfile.mkdtemp(prefix="text_tower_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.clip_checkpoint or str(random_checkpoint(args.random, work / f"random_{args.random}.pt"))
    t0 = time.time()
    table = build_text_table(default_classes(), clip_checkpoint=ckpt, bpe_path=args.clip_bpe)
    o = types.SimpleNamespace(text_encoder="int8", clip_checkpoint=ckpt, clip_bpe=args.clip_bpe, target_isa=None,
                              force=True, strict=False)
    staged = work / "staged"
    staged.mkdir(exist_ok=True)
    e = stage_text_encoder(o, table, work, types.SimpleNamespace(path=lambda n: staged / n), log=print)
    res = {"checkpoint": args.clip_checkpoint or f"random {args.random}", "seconds": round(time.time() - t0, 1),
           "fp32_mib": round((work / "text_encoder.onnx").stat().st_size / 2**20, 1),
           "int8_mib": round((staged / "text_encoder.onnx").stat().st_size / 2**20, 1),
           "verification": e["verification"]["onnxruntime_fp32"], "gate": e["gate"],
           "quantization": {k: e["quantization"][k] for k in ("quantized_nodes", "quantizable_nodes", "format")}}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
