"""CST model: parameter count, checkpoint layout, encode/head/learner split, N-way K-shot, export.

Forward tests run at imgsz 128 (16x16 tokens; the support grid is 12 as at 400), the exports at
96/128; the 400x400 encoder export is measured by hand (see the report), not here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgefss.errors import CheckpointError, InputError
from edgefss.models import build_model
from edgefss.models.cst import CST, CSTCfg, predict_nway_kshot
from edgefss.models.cst_learner import CorrAttention

S = 128
G = S // 8


def _build(**kw) -> CST:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("cst", imgsz=kw.pop("imgsz", S), **kw)


@pytest.fixture(scope="module")
def model():
    return _build()


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, S, S, generator=gen), torch.randn(3, 3, S, S, generator=gen)


@pytest.fixture(scope="module")
def encoded(model, images):
    q, s = images
    with torch.no_grad():
        return model.encode(q), model.encode(s)


def learner_layout() -> set[str]:
    """`learner.*` module prefixes of the official checkpoint (spec §3.7)."""
    out = set()
    for b in (0, 1):
        p = f"learner.corrtransformer.{b}."
        out |= {p + "attn." + m for m in ("short_cut.0", "short_cut.2", "qkv", "agg.0", "agg.2", "agg.3", "out_norm")}
        out |= {p + "ff." + m for m in ("ff.0", "ff.1", "ff.3", "out_norm")}
    out |= {f"learner.linear.{i}" for i in (0, 1, 3, 4)}
    out |= {f"learner.{d}.{i}" for d in ("decoder1_cls", "decoder2_cls", "decoder1_seg", "decoder2_seg") for i in (0, 2)}
    return out


def test_learnable_params_and_checkpoint_layout(model):
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert learnable == 366_004
    assert all(not p.requires_grad for p in model.backbone.parameters())
    keys = model.state_dict().keys()
    assert {k.rsplit(".", 1)[0] for k in keys if k.startswith("learner.")} == learner_layout()
    assert not list(model.buffers())  # GroupNorm only: the official state_dict has no buffers


def test_random_init_warns_and_bad_config_raises():
    with pytest.warns(UserWarning, match="RANDOMLY initialised"):
        build_model("cst", imgsz=64)
    with pytest.raises(InputError, match="imgsz"):
        build_model("cst", imgsz=100)
    with pytest.raises(InputError, match="unknown config option"):
        build_model("cst", imgsize=400)
    assert CSTCfg(400).support_grid == 12 and CSTCfg(400).grid == 50


def test_encode_shapes_and_pseudo_prob(model, images, encoded):
    (q, _), (s, _) = encoded, images
    eq, es = encoded
    assert eq["query_feats"].shape == (1, 12, 384, G * G)
    assert es["support_feats"].shape == (3, 12, 384, 1 + 12 * 12)
    p = es["pseudo_prob"]
    assert p.shape == (3, G, G) and float(p.min()) >= 0 and float(p.max()) <= 1
    # independent pseudo-prob: last block's qkv recomputed by hand, F.normalize as the official code
    vit = model.backbone
    with torch.no_grad():
        x = vit.prepare_tokens(images[1])
        for blk in vit.blocks[:-1]:
            x = blk(x)
        qkv = vit.blocks[-1].attn.qkv(vit.blocks[-1].norm1(x)).reshape(3, -1, 3, 6, 64).permute(2, 0, 3, 1, 4)
        cos = torch.einsum("bntc,bnc->bnt", F.normalize(qkv[1][:, :, 1:], dim=-1), F.normalize(qkv[0][:, :, 0], dim=-1))
        ref = ((cos.mean(1) + 1) / 2).reshape(3, G, G)
    torch.testing.assert_close(p, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(es["pseudo_cos"], cos.mean(1).reshape(3, G, G), atol=1e-5, rtol=0)
    # support tokens: CLS first, then the bilinear (align_corners) 12x12 resize of the query tokens
    torch.testing.assert_close(es["support_feats"][..., 1:2], es["query_feats"][..., :1])  # corner kept
    torch.testing.assert_close(es["support_feats"][..., -1:], es["query_feats"][..., -1:])


def test_support_pseudo_mask_is_the_official_recipe(model):
    """Spec §3.3: upsample the head-mean cosine to S x S (align_corners), (x+1)/2 > 0.4 -- not a
    mask thresholded at S/8 and resized (the two keep different key cells in the learner)."""
    gen = torch.Generator().manual_seed(3)
    cos = torch.rand(2, G, G, generator=gen) * 0.8 - 0.6  # straddles the 0.4 threshold (cos = -0.2)
    got = model.pseudo_mask(cos)
    ref = ((F.interpolate(cos[:, None], (S, S), mode="bilinear", align_corners=True)[:, 0] + 1) / 2 > 0.4).float()
    assert got.shape == (2, S, S) and torch.equal(got, ref)
    assert torch.equal(model.support_pseudo_mask({"pseudo_cos": cos}), ref)
    coarse = F.interpolate(((cos + 1) / 2 > 0.4).float()[:, None], (S, S), mode="bilinear", align_corners=True)[:, 0]
    assert not torch.equal((coarse > 0.5).float(), ref)
    # and the learner's 12x12 key mask it produces differs from the coarse one's
    key = lambda m: F.interpolate(m[:, None], (12, 12), mode="bilinear", align_corners=True) == 0  # noqa: E731
    assert not torch.equal(key(ref), key(((cos + 1) / 2 > 0.4).float()))
    assert model.pseudo_mask(cos, (30, 20)).shape == (2, 30, 20)


def test_query_pseudo_mask_uses_the_support_cls_query(model, encoded):
    """Spec §3.3 (`cros_corr`): the query's keys against the SUPPORT image's CLS query."""
    eq, es = encoded
    ref_cos = torch.einsum("ntc,bnc->bnt", eq["keys"][0], es["cls_query"]).mean(1).reshape(3, G, G)
    torch.testing.assert_close(model.pseudo_cos(eq["keys"].expand(3, -1, -1, -1), es["cls_query"]), ref_cos,
                               atol=1e-6, rtol=0)
    assert not torch.allclose(ref_cos[0], eq["pseudo_cos"][0], atol=1e-3)  # not the query's own CLS
    # the mask is the official recipe applied to that map
    torch.testing.assert_close(model.query_pseudo_mask(eq, es), model.pseudo_mask(ref_cos), atol=0, rtol=0)


def test_correlation_is_head_major_cosine(model, encoded):
    eq, es = encoded
    corr = model.correlation(eq["query_feats"], es["support_feats"])
    assert corr.shape == (3, 72, G * G, 145)
    qf, sf = eq["query_feats"], es["support_feats"]
    for n, l in [(0, 0), (2, 5), (5, 11)]:
        qh = F.normalize(qf[0, l, 64 * n:64 * (n + 1)], dim=0)
        sh = F.normalize(sf[1, l, 64 * n:64 * (n + 1)], dim=0)
        torch.testing.assert_close(corr[1, n * 12 + l], qh.T @ sh, atol=1e-5, rtol=0)


def _attention_reference(att: CorrAttention, x, mask):
    """Spec §3.2 written with einsum and AvgPool3d (the official formulation)."""
    B, C, T, S_ = x.shape
    g = int((S_ - 1) ** 0.5)
    k_ = att.pool.k

    def pool(t):
        img = t[..., 1:].reshape(*t.shape[:3], g, g)
        img = torch.nn.AvgPool3d((1, k_, k_), (1, k_, k_))(img).flatten(3)
        return torch.cat([t[..., :1], img], -1)

    sc = att.short_cut[3](att.short_cut[2](pool(att.short_cut[0](x))))
    qkv = att.qkv(x).reshape(B, 3, att.heads, -1, T, S_)
    q = pool(qkv[:, 0].flatten(1, 2)).reshape(B, att.heads, -1, T, (g // k_) ** 2 + 1)
    logits = torch.einsum("bgctl,bgctm->bgtlm", q, qkv[:, 1])
    if mask is not None:
        m = F.interpolate(mask[:, None], (g, g), mode="bilinear", align_corners=True).flatten(1)
        img = logits[..., 1:].masked_fill(m[:, None, None, None] == 0, -1e9)
        logits = torch.cat([logits[..., :1], img], -1)
    out = torch.einsum("bgtlm,bgctm->bgctl", logits.softmax(-1), qkv[:, 2]).flatten(1, 2)
    return att.out_norm(att.agg(out) + sc)


@pytest.mark.parametrize("use_mask", [False, True])
def test_corr_attention_matches_einsum_reference(model, use_mask):
    torch.manual_seed(0)
    att = model.learner.corrtransformer[0].attn
    x = torch.randn(2, 72, 9, 145)
    mask = torch.zeros(2, S, S)
    mask[0, 16:72, 24:96] = 1
    mask[1, 64:, :40] = 1
    with torch.no_grad():
        got = att(x, mask if use_mask else None)
        ref = _attention_reference(att, x, mask if use_mask else None)
    assert got.shape == (2, 32, 9, 10)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_head_of_encodings_equals_forward(model, images, encoded):
    q, s = images
    eq, es = encoded
    pseudo = model.support_pseudo_mask(es)
    mask = torch.zeros(3, S, S)
    mask[:, 24:80, 32:96] = 1
    with torch.no_grad():
        h = model.head(eq["query_feats"], es["support_feats"], mask)
        f = model(q, s, mask)
        f_pseudo, h_pseudo = model(q, s), model.head(eq["query_feats"], es["support_feats"], pseudo)
        h_ones = model.head(eq["query_feats"], es["support_feats"], torch.ones(3, S, S))
        h_nomask = model.head(eq["query_feats"], es["support_feats"], None)
        l_ = model.learner(model.correlation(eq["query_feats"], es["support_feats"]), mask)
    torch.testing.assert_close(f_pseudo["cls_logits"], h_pseudo["cls_logits"])
    assert h["cls_logits"].shape == (3, 2) and h["seg_logits"].shape == (3, 2, S // 4, S // 4)
    assert f["seg_logits"].shape == (3, 2, S, S) and f["query_pseudo_mask"].shape == (3, S, S)
    assert torch.equal(f["support_pseudo_mask"], pseudo)
    torch.testing.assert_close(f["cls_logits"], h["cls_logits"])
    up = F.interpolate(h["seg_logits"], (S, S), mode="bilinear", align_corners=True)
    torch.testing.assert_close(f["seg_logits"], up)
    torch.testing.assert_close(l_["seg_logits"], h["seg_logits"])
    # an all-ones mask masks nothing; a partial mask changes the result
    torch.testing.assert_close(h_ones["seg_logits"], h_nomask["seg_logits"])
    assert not torch.allclose(h["seg_logits"], h_nomask["seg_logits"])


def test_gradient_reaches_learner_not_backbone(model, images):
    q, s = images
    model.zero_grad(set_to_none=True)
    out = model(q, s[:1])
    (out["cls_logits"].sum() + out["seg_logits"].mean()).backward()
    grads = [p.grad for p in model.learner.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.backbone.parameters())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("N, K", [(1, 1), (1, 5), (2, 1), (2, 5)])
def test_predict_nway_kshot(model, N, K):
    gen = torch.Generator().manual_seed(N * 10 + K)
    q = torch.randn(1, 3, S, S, generator=gen)
    sup = torch.randn(N, K, 3, S, S, generator=gen)
    masks = (torch.rand(N, K, S, S, generator=gen) > 0.3).float() if K == 5 else None
    out = predict_nway_kshot(model, q, sup, masks, out_size=(70, 90))
    assert out["mask"].shape == (70, 90) and out["fg_prob"].shape == (N, 70, 90)
    assert out["probs"].shape == (N,) and torch.isfinite(out["fg_prob"]).all()
    assert int(out["mask"].min()) >= 0 and int(out["mask"].max()) <= N
    # the label rule of spec §3.5, re-derived from fg_prob
    best, idx = out["fg_prob"].max(0)
    assert torch.equal(out["mask"], torch.where(best < 0.5, 0, idx + 1))
    if K == 1 and N == 1:
        with torch.no_grad():
            eq, es = model.encode(q), model.encode(sup[0])
            h = model.head(eq["query_feats"], es["support_feats"], model.support_pseudo_mask(es))
        seg = F.interpolate(h["seg_logits"], (70, 90), mode="bilinear", align_corners=True).softmax(1)[:, 1]
        torch.testing.assert_close(out["fg_prob"], seg, atol=1e-5, rtol=0)
        torch.testing.assert_close(out["probs"], h["cls_logits"].softmax(1)[:, 1])


def test_input_errors(model, encoded):
    eq, es = encoded
    with pytest.raises(InputError, match="image"):
        model.encode(torch.zeros(1, 3, 96, 96))
    with pytest.raises(InputError, match="support_feats"):
        model.head(eq["query_feats"], eq["query_feats"], None)
    with pytest.raises(InputError, match="support_mask"):
        model.head(eq["query_feats"], es["support_feats"], torch.ones(2, G, G))
    with pytest.raises(InputError, match="support_imgs"):
        predict_nway_kshot(model, torch.zeros(1, 3, S, S), torch.zeros(2, 3, S, S))


# ---------------------------------------------------------------- checkpoints

def _lightning(model: CST, path):
    sd = model.state_dict()
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.6.5",
                "optimizer_states": [], "lr_schedulers": [], "callbacks": {}}, str(path))
    return path


def test_lightning_ckpt_round_trip(tmp_path, images):
    src = _build(seed=7)
    p = _lightning(src, tmp_path / "cst.ckpt")
    dst = _build(checkpoint=p)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    q, s = images
    with torch.no_grad():
        a, b = src(q, s[:1]), dst(q, s[:1])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_dino_backbone_checkpoint_via_builder(tmp_path, model):
    p = tmp_path / "dino.pth"
    torch.save(model.backbone.state_dict(), str(p))
    m = _build(backbone_checkpoint=p, seed=3)
    assert torch.equal(m.backbone.pos_embed, model.backbone.pos_embed)
    with pytest.raises(CheckpointError, match="DINO backbone-only"):
        _build(checkpoint=p)


def test_checkpoint_errors(tmp_path, model):
    tlg = tmp_path / "tlg.pt"
    torch.save({"module.hpn_learner.encoder_layer4.0.conv1.weight": torch.zeros(1)}, str(tlg))
    with pytest.raises(CheckpointError, match="TLG"):
        _build(checkpoint=tlg)
    sd = dict(model.state_dict())
    sd.pop("learner.linear.0.bias")
    sd["learner.extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": sd}, str(bad))
    with pytest.raises(CheckpointError, match=r"learner\.linear\.0\.bias") as ei:
        _build(checkpoint=bad)
    assert "learner.extra.weight" in str(ei.value) and "CST" in str(ei.value)


# ---------------------------------------------------------------- ONNX export

def _export_and_run(graph, inputs, io, path, feeds):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    names_in, names_out, dyn = io
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.eval(), inputs, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=dyn or None, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: t.numpy() for n, t in zip(names_in, feeds)})


def test_encoder_export_matches_torch(tmp_path):
    import onnx

    from edgefss.exporters.cst_graphs import CST_IO, CSTEncoderGraph, cst_example_inputs

    m = _build(imgsz=96)
    (image,) = cst_example_inputs(m, 96)["encoder"]
    g = CSTEncoderGraph(m)
    res = _export_and_run(g, (image,), CST_IO["encoder"], tmp_path / "enc.onnx", (image,))
    with torch.no_grad():
        ref = g(image)
    assert [r.shape for r in res] == [(1, 12, 384, 144), (1, 12, 384, 145), (1, 12, 12)]
    for r, t in zip(res, ref):
        assert np.abs(r - t.numpy()).max() <= 1e-4
    # the pos-embed resize is baked in: the only Resize left is the bilinear support-grid one
    resizes = [n for n in onnx.load(str(tmp_path / "enc.onnx")).graph.node if n.op_type == "Resize"]
    modes = [a.s for n in resizes for a in n.attribute if a.name == "mode"]
    assert b"cubic" not in modes


@pytest.mark.parametrize("which", ["head", "learner"])
def test_head_and_learner_export_dynamic_batch(tmp_path, which):
    from edgefss.exporters.cst_graphs import CST_IO, CSTHeadGraph, CSTLearnerGraph, cst_example_inputs

    m = _build(imgsz=S)
    graph = {"head": CSTHeadGraph, "learner": CSTLearnerGraph}[which](m)
    traced_with = cst_example_inputs(m, S, n_support=2)[which]
    feeds = cst_example_inputs(m, S, n_support=3, seed=1)[which]  # B differs from the trace
    res = _export_and_run(graph, traced_with, CST_IO[which], tmp_path / f"{which}.onnx", feeds)
    with torch.no_grad():
        ref = graph(*feeds)
    assert res[0].shape == (3, 2) and res[1].shape == (3, 2, S // 4, S // 4)
    for r, t in zip(res, ref):
        assert np.abs(r - t.numpy()).max() <= 1e-4
