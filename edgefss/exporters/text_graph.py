"""The CLIP text tower as a graph of its own in a TLG bundle (`edgefss export --model tlg --text-encoder`).

`stage_text_encoder` exports `text_encoder.onnx` (`text_ids` (N, T) int64 -> `text_embed` (N, D)
float32 unit rows; N and T dynamic), verifies it against the PyTorch tower, quantizes it when
asked (`--text-encoder int8`: ONNX Runtime QDQ with the project's exclusion policy, quant/ort_int8.py)
and gates the INT8 graph against the FP32 one (quant/text_gate.py), and writes next to it the CLIP
merges file (for the device's tokenizer) and the background vocabulary with its embeddings (for the
maximum matching, text/background.py). The runtime side is runtime/text_encoder.py.

Prompts (held out from calibration): the table's classes alternate between calibration (even
rows) and the gate / verification set (odd rows), each with its three HC prompts; the background
words alternate the same way. Docs: docs/open_vocabulary.md.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefss.errors import CheckpointError, InputError, StateError
from edgefss.exporters.graphs import GraphDef
from edgefss.exporters.onnx_export import export_graph, io_signature
from edgefss.exporters.verify import FP32_ATOL_FLOOR, FP32_RTOL, tolerance
from edgefss.runtime.text_encoder import GRAPH, INPUT, OUTPUT
from edgefss.text.background import BACKGROUND_FILE, BG_TOPK, BackgroundVocab, background_vocabulary
from edgefss.text.prompts import TEMPLATE, resolve_prompts

GRAPH_FILE = "text_encoder.onnx"
BPE_FILE = "clip_bpe.txt.gz"
PRECISIONS = ("fp32", "int8")
BATCH = 32


class TextEncoderGraph(nn.Module):
    """text_ids (N, T) int64 -> text_embed (N, D) float32: `ClipTextModel.encode` (EOT feature,
    projection, L2 norm)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, text_ids):
        return self.model.encode(text_ids)


def graph_def(model) -> GraphDef:
    """The tower's GraphDef (fixed I/O names, N and T dynamic)."""
    return GraphDef(TextEncoderGraph(model).eval(), [INPUT], [OUTPUT],
                    {INPUT: {0: "N", 1: "T"}, OUTPUT: {0: "N"}})


def split_prompts(class_names, template: str = TEMPLATE):
    """Calibration and held-out prompt lists (templated, deduplicated, order kept).

    Returns:
        (calib prompts, held-out prompts, indices of the held-out class (fg) prompts, held-out
        background words).
    """
    triples = resolve_prompts(list(class_names))
    calib, held, fg_rows = [], [], []
    for i, (name, t) in enumerate(triples.items()):
        texts = t.texts(template)
        (calib if i % 2 == 0 else held).extend(texts)
    words = background_vocabulary()
    calib += [template.format(w) for w in words[0::2]]
    held_words = words[1::2]
    held += [template.format(w) for w in held_words]
    calib, held = list(dict.fromkeys(calib)), list(dict.fromkeys(held))
    fg = {template.format(t.fg) for i, t in enumerate(triples.values()) if i % 2 == 1}
    fg_rows = [j for j, p in enumerate(held) if p in fg]
    return calib, held, fg_rows, held_words


def _ids(tok, prompts, context: int) -> np.ndarray:
    ids = tok(prompts, context_length=context)
    return np.ascontiguousarray(ids[:, : int((ids != 0).sum(axis=1).max())])


def embed_torch(model, tok, prompts) -> np.ndarray:
    """(N, D) float32 PyTorch embeddings of templated prompts, in batches cut to their longest."""
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), BATCH):
            ids = _ids(tok, prompts[i:i + BATCH], model.cfg.context_length)
            out.append(model.encode(torch.from_numpy(ids)).numpy())
    return np.concatenate(out).astype(np.float32)


def embed_engine(engine, tok, prompts, context: int) -> np.ndarray:
    """(N, D) float32 embeddings of templated prompts from a runtime Backend holding the tower."""
    out = [engine.run(GRAPH, {INPUT: _ids(tok, prompts[i:i + BATCH], context)})[OUTPUT]
           for i in range(0, len(prompts), BATCH)]
    return np.concatenate(out).astype(np.float32)


def verify_tower(ref: np.ndarray, got: np.ndarray, label: str, rtol: float = FP32_RTOL) -> dict:
    """The export verification record of the tower: max-abs vs PyTorch within the FP32 tolerance
    of the graphs (exporters/verify.py: max(rtol x max|ref|, floor))."""
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    tol = tolerance(scale, rtol)
    return {"backend": label, "prompts": len(ref), "rtol": rtol, "atol_floor": FP32_ATOL_FLOOR,
            "max_abs": float(f"{err:.3g}"), "scale": float(f"{scale:.3g}"), "tol": float(f"{tol:.3g}"),
            "passed": err <= tol}


def load_tower(clip_checkpoint, bpe_path, dim: int):
    """(CLIP text model in eval mode, ClipTokenizer) checked against each other and the head's dim."""
    from edgefss.text.clip_text import load_clip_text
    from edgefss.text.tokenizer import ClipTokenizer

    model = load_clip_text(clip_checkpoint)
    if model.cfg.embed_dim != dim:
        raise CheckpointError(f"--clip-checkpoint: '{clip_checkpoint}' gives {model.cfg.embed_dim}-d text "
                              f"features; the TLG head takes {dim}-d (CLIP ViT-B/32)")
    tok = ClipTokenizer(bpe_path)
    if tok.vocab_size != model.cfg.vocab_size:
        raise InputError(f"--clip-bpe: the merges file '{tok.path}' gives {tok.vocab_size} tokens but the "
                         f"checkpoint's vocabulary has {model.cfg.vocab_size}; use the merges file of this CLIP model")
    return model, tok


def stage_text_encoder(o, table, work: Path, writer, log=print) -> dict:
    """Export, verify (and quantize + gate) the tower; stage its files in the bundle writer.

    Args:
        o: ExportOptions (text_encoder 'fp32' | 'int8', clip_checkpoint, clip_bpe, target_isa,
            force, strict). table: the bundle's TextTable (its classes give the prompts).
        work: private work folder. writer: the BundleWriter.

    Returns:
        the manifest's "text_encoder" entry.

    Raises:
        StateError: verification failed, or the INT8 gate failed (without --force) or was
        uninformative with --strict.
    """
    from edgefss.runtime.session import open_graphs

    precision = o.text_encoder
    if precision not in PRECISIONS:
        raise InputError(f"--text-encoder {precision!r}; expected one of {list(PRECISIONS)}")
    model, tok = load_tower(o.clip_checkpoint, o.clip_bpe, table.dim)
    ctx = model.cfg.context_length
    calib, held, fg_rows, held_words = split_prompts(table.classes.tolist())
    fp32 = work / GRAPH_FILE
    g = graph_def(model)
    example = {INPUT: torch.from_numpy(_ids(tok, held[:2], ctx))}
    with warnings.catch_warnings():
        # benign here: the as_tensor/length check of encode() runs on the traced shape (T stays a
        # dynamic axis; verified below at several lengths), and the advanced index is the EOT
        # position from argmax, never negative
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        export_graph(g, example, fp32)
    log(f"exported {GRAPH_FILE} (CLIP text tower {model.cfg.layers} layers x {model.cfg.width}, "
        f"{fp32.stat().st_size / 2**20:.1f} MiB)")
    ref_engine = open_graphs("onnxruntime", "fp32", {GRAPH: fp32}, device="cpu")
    prompts = held + calib
    torch_emb = embed_torch(model, tok, prompts)
    ref_emb = embed_engine(ref_engine, tok, prompts, ctx)
    ver = verify_tower(torch_emb, ref_emb, "onnxruntime")
    log(f"verification text_encoder onnxruntime vs PyTorch on {ver['prompts']} prompts: max-abs "
        f"{ver['max_abs']:g} (tol {ver['tol']:g}): {'PASS' if ver['passed'] else 'FAIL'}")
    if not ver["passed"]:
        raise StateError(f"text encoder verification failed: max-abs {ver['max_abs']:g} > {ver['tol']:g}; "
                         "bundle not written")
    words = background_vocabulary()
    bg = BackgroundVocab(np.array(words), embed_torch(model, tok, [TEMPLATE.format(w) for w in words]),
                         TEMPLATE, BG_TOPK)
    bg.save(writer.path(BACKGROUND_FILE))
    entry = {"file": GRAPH_FILE, "precision": precision, "bpe": BPE_FILE, "background": BACKGROUND_FILE,
             "template": TEMPLATE, "context_length": int(ctx), "embed_dim": int(model.cfg.embed_dim),
             "layers": int(model.cfg.layers), "width": int(model.cfg.width),
             "runs_on": "onnxruntime cpu (any bundle backend)",
             "clip_checkpoint": str(o.clip_checkpoint), "verification": {"onnxruntime_fp32": ver},
             "background_words": len(words),
             **io_signature(fp32, g.dynamic_axes, {INPUT: example[INPUT].shape,
                                                  OUTPUT: (2, model.cfg.embed_dim)})}
    src = fp32
    if precision == "int8":
        src, entry["quantization"], entry["gate"] = _int8(o, fp32, work, tok, ctx, calib, held, fg_rows, bg,
                                                           held_words, ref_emb[: len(held)], log)
    shutil.copyfile(src, writer.path(GRAPH_FILE))
    shutil.copyfile(tok.path, writer.path(BPE_FILE))
    return entry


def _int8(o, fp32, work, tok, ctx, calib, held, fg_rows, bg, held_words, ref_held, log):
    from edgefss.quant.ort_int8 import quantize_onnx
    from edgefss.quant.text_gate import text_gate
    from edgefss.runtime.session import open_graphs

    feeds = [{INPUT: _ids(tok, [p], ctx)} for p in calib]
    qpath = work / "text_encoder.int8.onnx"
    qinfo = quantize_onnx(fp32, qpath, feeds, keep_last=True, cache_path=work / "text_encoder.calib.json",
                          label="", isa=o.target_isa)  # one sample per prompt: a bar per pass is noise
    qinfo.update(method="onnxruntime quantize_static QDQ, MinMax", calibration_prompts=len(calib))
    test = open_graphs("onnxruntime", "int8", {GRAPH: qpath}, device="cpu")
    res = text_gate(ref_held, embed_engine(test, tok, held, ctx), "int8", fg_rows, bg.embeddings, bg.k)
    log(res.summary())
    gate = {**res.to_dict(), "forced": False}
    if res.status == "uninformative" and o.strict:
        raise StateError("--strict: the text tower's INT8 gate is uninformative (the FP32 prompt embeddings are "
                         "too close to judge retrieval: untrained CLIP weights?); bundle not written")
    if res.status == "fail":
        why = "; ".join(res.failures())
        if not o.force:
            raise StateError(f"text tower INT8 gate failed ({why}); bundle not written. Export the tower in FP32 "
                             "(--text-encoder fp32) or pass --force")
        warnings.warn(f"--force: writing an INT8 text tower that FAILED its gate ({why})", stacklevel=3)
        gate["forced"] = True
    return qpath, qinfo, gate
