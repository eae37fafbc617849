"""A tiny CLIP checkpoint (official key layout, scripts/goldens/cam_weights.py) with a vocabulary that
fits a tiny merges file: the CAM tests' stand-in for OpenAI's RN50.pt + bpe_simple_vocab_16e6.txt.gz."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MERGES = [("p", "h"), ("o", "t"), ("ph", "o"), ("d", "o")]


def tiny_clip_files(d: Path) -> tuple[Path, Path]:
    """Write (checkpoint, merges file) into folder d."""
    import torch

    sys.path.insert(0, str(REPO / "scripts" / "goldens"))
    from cam_weights import SEED, clip_state_dict, edgefss_shapes

    from edgefss.text.tokenizer import ClipTokenizer

    bpe = d / "tiny_vocab.txt.gz"
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n"
    bpe.write_bytes(gzip.compress(merges.encode()))
    shapes = edgefss_shapes()
    shapes["token_embedding.weight"] = (ClipTokenizer(bpe).vocab_size, shapes["token_embedding.weight"][1])
    torch.save(clip_state_dict(shapes, SEED), d / "tiny_clip.pt")
    return d / "tiny_clip.pt", bpe


def pseudo_masks_argv(images, classes: str, out, clip_files) -> list[str]:
    """`edgefss pseudo-masks` arguments for a folder of images with the tiny CLIP files, no progress bar."""
    ckpt, bpe = clip_files[0], clip_files[1]
    return ["pseudo-masks", "--images", str(images), "--classes", classes, "--out", str(out), "--no-progress",
            "--clip-checkpoint", str(ckpt), "--clip-bpe", str(bpe)]
