"""TLG model: geometry, parameter counts, K-shot/N-way forward, gradient routing, checkpoints, ONNX."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgefss.errors import CheckpointError, InputError
from edgefss.models.checkpoints import save_edgefss
from edgefss.models.tlg import (
    TEXT_KEYS,
    TLG,
    TLGCfg,
    load_tlg_checkpoint,
    predict_mask_nshot,
    tlg_resnet50,
    tlg_vgg16,
)
from edgefss.models.tlg_modules import CrossAttention, SelfAttention, row_tokens

S = 208  # smallest convenient size with an even S/8 grid (26) for ResNet-50 and VGG16
H = S // 8


def _text(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: F.normalize(torch.randn(B, 512, generator=g), dim=1) for k in TEXT_KEYS}


def _imgs(n, seed=0):
    return torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tlg_resnet50(imgsz=S)


def _count(m: TLG) -> int:
    return sum(p.numel() for p in m.head_parameters().values())


# ------------------------------------------------------------------ structure
def test_param_counts_at_400():
    r = TLG(TLGCfg(backbone="resnet50", imgsz=400))
    assert _count(r) == 3_675_740  # spec §1.6, official minus its unused convs
    sizes = {name: sum(p.numel() for p in mod.parameters()) for name, mod in r.named_children()}
    assert sizes["hpn_learner"] == 2_314_336 and sizes["proj"] == 125_000
    assert sizes["linear_512_625"] == 320_625 and sizes["SelfAttention"] == 49_280
    assert sizes["CrossAttention"] == 65_536 and sizes["merge"] == 32_768
    assert tuple(r.proj.weight.shape) == (2500, 50)
    v = TLG(TLGCfg(backbone="vgg16", imgsz=400))
    # VGG16 drops the never-called 1024/2048 reducers (393,472) that the official object keeps
    assert _count(v) == 3_675_740 - 3_776 - 131_200 - 262_272
    assert abs(_count(v) + 131_200 + 262_272 - 3_671_340) / 3_671_340 < 1e-3
    assert not any(p.requires_grad for p in r.backbone.parameters())
    names = set(r.state_dict())
    for key in ("hpn_learner.encoder_layer4.0.conv1.weight", "SelfAttention.q.weight",
                "SelfAttention.kv.weight", "CrossAttention.q_fc.weight", "linear_512_625.weight",
                "conv_2_1.weight", "final_cat.weight", "merge.0.weight", "bn.running_mean",
                "decoder1.0.weight", "decoder2.2.weight", "res.2.weight", "conv_512_128.weight",
                "conv_1024_128.weight", "conv_2048_128.weight", "backbone.layer1.0.conv1.weight"):
        assert key in names, key
    assert not any(k.startswith(("conv1024_512", "voc_conv_bach", "coco_conv_batch")) for k in names)


def test_bad_config_raises():
    with pytest.raises(InputError, match="multiple of 16"):
        TLGCfg(imgsz=200)
    with pytest.raises(InputError, match="backbone"):
        TLGCfg(backbone="resnet101")
    with pytest.raises(InputError, match="unknown config option"):
        tlg_resnet50(imgsize=208)


def test_registry_names():
    from edgefss.models import _REGISTRY

    assert _REGISTRY["tlg"] is tlg_resnet50 and _REGISTRY["tlg_vgg16"] is tlg_vgg16


def test_random_init_warns_and_is_seeded():
    with pytest.warns(UserWarning, match="RANDOMLY initialised"):
        a = tlg_vgg16(imgsz=64)
    with pytest.warns(UserWarning):
        b = tlg_vgg16(imgsz=64)
    assert torch.equal(a.proj.weight, b.proj.weight)


# ------------------------------------------------------------------ blocks vs independent references
def test_row_tokens_equal_adaptive_pool():
    x = torch.randn(2, 128, H, H)
    ref = torch.nn.AdaptiveAvgPool1d(H)(x.flatten(2)).permute(0, 2, 1)
    torch.testing.assert_close(row_tokens(x), ref)


def test_self_attention_keys_even_values_odd():
    torch.manual_seed(0)
    sa = SelfAttention(128, 8, 0.1).eval()
    x = torch.randn(2, 10, 128)
    kv = sa.kv(x)
    k, v = kv[:, 0::2].reshape(2, 5, 8, 16).transpose(1, 2), kv[:, 1::2].reshape(2, 5, 8, 16).transpose(1, 2)
    q = sa.q(x).reshape(2, 10, 8, 16).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    ref = sa.proj((a @ v).transpose(1, 2).reshape(2, 10, 128))
    torch.testing.assert_close(sa(x), ref)


def test_cross_attention_ot_matches_pot():
    ot = pytest.importorskip("ot")
    torch.manual_seed(0)
    ca = CrossAttention(128, 0.1).eval().double()
    q, kv = torch.randn(2, H, 128).double(), torch.randn(2, H, 128).double()
    attn = torch.softmax(ca.q_fc(q) @ ca.k_fc(kv).transpose(-1, -2) / 128 ** 0.5, dim=-1)
    refs = []
    for i in range(2):
        cost = (1 - attn[i]).detach().numpy()
        plan = ot.sinkhorn(np.ones(H) / H, np.ones(H) / H, cost, 0.5)  # released code's call
        refs.append(ca.proj(torch.from_numpy(plan) @ ca.v_fc(kv[i])))
    with torch.no_grad():
        got = ca(q, kv)
    torch.testing.assert_close(got, torch.stack(refs).detach(), atol=1e-8, rtol=1e-6)


# ------------------------------------------------------------------ forward
@torch.no_grad()
def test_one_shot_forward_shapes(model):
    out = model(_imgs(1), _imgs(1, 1), _text(1))
    assert set(out) == {"query_logits", "support_logits"}
    for v in out.values():
        assert v.shape == (1, 2, S, S) and torch.isfinite(v).all()
    feats_q, feats_s = model.encode(_imgs(1)), model.encode(_imgs(1, 1))
    pq, ps = model.prior(feats_q, feats_s)
    assert pq.shape == ps.shape == (1, 1, S, S)  # pseudo-masks live at the input resolution
    assert 0 <= pq.min() and pq.max() <= 1 and pq.max() > 0.5
    head = model.head(feats_q, feats_s, _text(1), pq, ps)
    assert head["query_logits"].shape == (1, 2, S // 4, S // 4)
    # forward with no masks == head with the prior, upsampled
    up = F.interpolate(head["query_logits"], size=(S, S), mode="bilinear", align_corners=True)
    torch.testing.assert_close(up, out["query_logits"])
    # the query pseudo-mask is a real input of the query output
    other = model.head(feats_q, feats_s, _text(1), 1 - pq, ps)
    assert (other["query_logits"] - head["query_logits"]).abs().max() > 1e-6
    torch.testing.assert_close(other["support_logits"], head["support_logits"])


@torch.no_grad()
def test_five_shot_voting(model):
    K = 5
    q, s, text = _imgs(1), _imgs(K, 2), _text(K)
    mask = predict_mask_nshot(model, q, s, text)
    assert mask.shape == (1, S, S) and mask.dtype == torch.int64 and set(mask.unique().tolist()) <= {0, 1}
    # HSNet voting recomputed from per-shot 1-shot predictions
    votes = sum(
        predict_mask_nshot(model, q, s[k:k + 1], {n: t[k:k + 1] for n, t in text.items()}) for k in range(K)
    )
    ref = (votes.float() / votes.max().clamp(min=1) >= 0.5).long()
    assert torch.equal(mask, ref)


@torch.no_grad()
def test_query_broadcast_and_two_way(model):
    # 2-way 1-shot: one support (and text) per class, the query shared; run per class == batched
    q, s, text = _imgs(1), _imgs(2, 3), _text(2, 5)
    batched = model(q, s, text)
    for c in range(2):
        single = model(q, s[c:c + 1], {k: v[c:c + 1] for k, v in text.items()})
        for key in batched:
            torch.testing.assert_close(batched[key][c:c + 1], single[key], atol=1e-4, rtol=1e-4)
    assert batched["query_logits"].shape == (2, 2, S, S) and torch.isfinite(batched["query_logits"]).all()


@torch.no_grad()
def test_vgg16_forward():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = tlg_vgg16(imgsz=S)
    out = m(_imgs(1), _imgs(2, 1), _text(2))
    assert out["query_logits"].shape == (2, 2, S, S) and torch.isfinite(out["query_logits"]).all()
    assert len(m.encode(_imgs(1))) == 7


def test_bad_head_inputs_raise(model):
    fq, fs = model.encode(_imgs(1)), model.encode(_imgs(2, 1))
    p = torch.zeros(2, 1, S, S)
    with pytest.raises(InputError, match="text\\['support'\\]"):
        model.head(fq, fs, {**_text(2), "support": torch.zeros(2, 256)}, p, p)
    with pytest.raises(InputError, match="query_pseudo"):
        model.head(fq, fs, _text(2), torch.zeros(2, 1, 10, 10), p)
    with pytest.raises(InputError, match="support_pseudo"):  # the old S/8 grid is refused
        model.head(fq, fs, _text(2), p, torch.zeros(2, 1, H, H))
    with pytest.raises(InputError, match="list of 13"):
        model.head(fq[:5], fs, _text(2), p, p)
    with pytest.raises(InputError, match="image"):
        model.encode(torch.zeros(1, 3, 100, 100))


# ------------------------------------------------------------------ gradients
HA_HT_HC = ("final_cat.weight", "conv_512_128.weight", "merge.0.weight", "SelfAttention.q.weight",
            "CrossAttention.q_fc.weight", "proj.weight", "bn.weight", "linear_512_625.weight",
            "conv_2_1.weight")
ALWAYS = ("hpn_learner.encoder_layer2.0.conv1.weight", "decoder1.0.weight", "decoder2.2.weight",
          "res.0.weight")


@pytest.mark.parametrize("official", [False, True])
def test_gradient_routing(official):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = tlg_resnet50(imgsz=64, official_forward=official).train()
    q = torch.randn(1, 3, 64, 64)
    s = torch.randn(2, 3, 64, 64)
    out = m(q, s, {k: F.normalize(torch.randn(2, 512), dim=1) for k in TEXT_KEYS})
    target = torch.randint(0, 2, (2, 64, 64))
    loss = 1.4 * F.cross_entropy(out["query_logits"], target)
    loss = loss + 0.6 * F.cross_entropy(out["support_logits"], target)
    loss.backward()
    params = dict(m.named_parameters())
    for k in ALWAYS:
        assert params[k].grad is not None and params[k].grad.abs().sum() > 0, k
    for k in HA_HT_HC:
        g = params[k].grad
        if official:
            assert g is None, f"{k} must get no task gradient in official_forward mode"
        else:
            assert g is not None and g.abs().sum() > 0, f"{k} gets no gradient"
    assert all(p.grad is None for p in m.backbone.parameters())
    assert not m.backbone.training


# ------------------------------------------------------------------ checkpoints
UNUSED_R50 = {"conv1024_512.weight": (512, 1024, 1, 1), "conv1024_512.bias": (512,),
              "voc_conv_bach.weight": (8, 25, 1, 1), "voc_conv_bach.bias": (8,),
              "coco_conv_batch.weight": (8, 23, 1, 1), "coco_conv_batch.bias": (8,),
              "backbone.fc.weight": (1000, 2048), "backbone.fc.bias": (1000,)}


def _official(model: TLG, extra: dict) -> dict:
    """A synthetic DataParallel `best_model.pt` state dict in the official key layout."""
    sd = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    sd.update({"module." + k: torch.randn(shape) for k, shape in extra.items()})
    return sd


def test_official_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(3)
    src = TLG(TLGCfg(imgsz=400))
    for p in src.parameters():
        p.data.normal_()
    path = tmp_path / "best_model.pt"
    torch.save(_official(src, UNUSED_R50), str(path))
    dst = tlg_resnet50(checkpoint=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # edgefss's own format round-trips too
    save_edgefss(tmp_path / "own.pt", dst, {"model": "tlg"})
    again = tlg_resnet50(checkpoint=str(tmp_path / "own.pt"))
    assert torch.equal(again.proj.weight, src.proj.weight)


def test_official_vgg16_checkpoint_accepts_unused_reducers(tmp_path):
    src = TLG(TLGCfg(backbone="vgg16", imgsz=400))
    extra = {"conv_1024_128.weight": (128, 1024, 1, 1), "conv_1024_128.bias": (128,),
             "conv_2048_128.weight": (128, 2048, 1, 1), "conv_2048_128.bias": (128,),
             "backbone.classifier.0.weight": (4096, 25088)}
    path = tmp_path / "vgg.pt"
    torch.save(_official(src, extra), str(path))
    dst = tlg_vgg16(checkpoint=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_official_checkpoint_errors(tmp_path):
    src = TLG(TLGCfg(imgsz=400))
    sd = _official(src, UNUSED_R50)
    no_l2 = {k: v for k, v in sd.items() if ".encoder_layer2." not in k}
    cases = {
        "missing keys: hpn_learner.encoder_layer2": no_l2,
        "unexpected keys: somethingelse": {**sd, "module.somethingelse.weight": torch.zeros(3)},
        "shape mismatches: decoder1.0.weight": {**sd, "module.decoder1.0.weight": torch.zeros(128, 128, 1, 1)},
    }
    for i, (msg, bad) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.pt"
        torch.save(bad, str(path))
        with pytest.raises(CheckpointError, match=msg):
            tlg_resnet50(checkpoint=str(path))
    # geometry: official weights need imgsz 400
    path = tmp_path / "ok.pt"
    torch.save(sd, str(path))
    with pytest.raises(CheckpointError, match="imgsz=400"):
        load_tlg_checkpoint(TLG(TLGCfg(imgsz=S)), path)
    # a ResNet-50 checkpoint into the VGG16 model
    with pytest.raises(CheckpointError, match="VGG16|vgg16"):
        tlg_vgg16(checkpoint=str(path))
    with pytest.raises(CheckpointError, match="not found"):
        tlg_resnet50(checkpoint=str(tmp_path / "nope.pt"))


# ------------------------------------------------------------------ ONNX graphs
def _export(module, args, path, io):
    torch.onnx.export(module, args, str(path), input_names=io["inputs"], output_names=io["outputs"],
                      dynamic_axes=io["dynamic_axes"] or None, opset_version=17, dynamo=False)


@torch.no_grad()
def test_head_graph_blend_semantics(model):
    from edgefss.exporters.tlg_graphs import TLGHeadGraph, tlg_example_inputs, tlg_io

    ex = tlg_example_inputs(model, S, n_support=2)["head"]
    names = tlg_io(model)["head"]["inputs"]
    qf, sf = [ex[n] for n in names[:13]], [ex[n] for n in names[13:26]]
    text = {"support": ex["text_support"], "query_fg": ex["text_query_fg"], "query_bg": ex["text_query_bg"]}
    prior_q, prior_s = model.prior(qf, sf)
    ql, sl, qp = TLGHeadGraph(model)(*[ex[n] for n in names])
    torch.testing.assert_close(qp, prior_q)
    given = model.head(qf, sf, text, ex["query_pseudo"], ex["support_pseudo"])  # pseudo_given[0] = 1
    own = model.head(qf, sf, text, prior_q, prior_s)  # pseudo_given[1] = 0
    torch.testing.assert_close(ql[0], given["query_logits"][0])
    torch.testing.assert_close(sl[1], own["support_logits"][1])


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_onnx_graphs_match_pytorch(tmp_path, backbone):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgefss.exporters.tlg_graphs import TLG_IO, TLGEncoderGraph, TLGHeadGraph, tlg_example_inputs, tlg_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = (tlg_resnet50 if backbone == "resnet50" else tlg_vgg16)(imgsz=S)
        io = tlg_io(m)
        if backbone == "resnet50":
            assert io == TLG_IO
        ex = tlg_example_inputs(m, S, n_support=2)
        enc_path, head_path = tmp_path / "encoder.onnx", tmp_path / "head.onnx"
        _export(TLGEncoderGraph(m), (ex["encoder"]["image"],), enc_path, io["encoder"])
        head = TLGHeadGraph(m).eval()
        _export(head, tuple(ex["head"][n] for n in io["head"]["inputs"]), head_path, io["head"])

    ops = {n.op_type for n in onnx.load(str(head_path)).graph.node}
    assert "ReduceLogSumExp" not in ops, "Sinkhorn must export as the explicit max-shifted loop"
    assert {"Conv", "Exp", "Log", "ReduceMax"} <= ops

    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    got = enc.run(None, {"image": ex["encoder"]["image"].numpy()})
    with torch.no_grad():
        ref = m.encode(ex["encoder"]["image"])
    assert [o.shape for o in got] == [tuple(r.shape) for r in ref]
    assert max(np.abs(o - r.numpy()).max() for o, r in zip(got, ref)) <= 1e-4

    sess = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == io["head"]["inputs"]
    for n_support, seed in ((2, 0), (3, 1)):  # the support batch is dynamic
        feed = tlg_example_inputs(m, S, n_support=n_support, seed=seed)["head"]
        got = sess.run(None, {k: v.numpy() for k, v in feed.items()})
        with torch.no_grad():
            ref = head(*[feed[n] for n in io["head"]["inputs"]])
        assert [o.shape for o in got] == [(n_support, 2, S // 4, S // 4)] * 2 + [(n_support, 1, S, S)]
        for o, r in zip(got, ref):
            assert np.abs(o - r.numpy()).max() <= 1e-4


def test_backbone_prior_peaks_where_the_support_matches():
    from edgefss.models.tlg_modules import backbone_prior

    g = torch.Generator().manual_seed(0)
    q = torch.rand(2, 16, 6, 6, generator=g)
    s = torch.rand(2, 16, 5, 5, generator=g)
    q[:, :, 2, 3] = s[:, :, 4, 1] * 3.0  # same direction: cosine 1 at exactly one query position
    pq, ps = backbone_prior([q], [s], (6, 6))
    assert pq.shape == (2, 1, 6, 6) and ps.shape == (2, 1, 6, 6)
    flat = pq.flatten(1)
    assert (flat.argmax(1) == 2 * 6 + 3).all() and torch.allclose(flat.max(1).values, torch.ones(2))
    assert torch.allclose(flat.min(1).values, torch.zeros(2))
    # flat similarity (identical directions everywhere) is not stretched to [0,1]
    same = torch.ones(1, 16, 4, 4)
    pq, _ = backbone_prior([same], [same], (4, 4))
    assert pq.abs().max() < 1e-3
