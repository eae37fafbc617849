"""IMR-HSNet model: config, official checkpoint layout (synthetic files), stages, the released
masking's swap/aliasing against a literal in-place transcription. Small sizes (64 px)."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from edgefss.errors import CheckpointError, InputError
from edgefss.models import build_model
from edgefss.models.hsnet import multilayer_correlation

S = 64
h = S // 8


def _model(backbone="resnet50", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("imr_hsnet", backbone=backbone, imgsz=S, **kw)


def _inputs(B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 3, S, S, generator=g), torch.randn(B, 3, S, S, generator=g),
            torch.rand(1, 1, h, h, generator=g), torch.rand(B, 1, h, h, generator=g))


def test_random_init_warns_and_config_is_checked():
    with pytest.warns(UserWarning, match="RANDOMLY initialised"):
        build_model("imr_hsnet", imgsz=S)
    with pytest.raises(InputError, match="backbone"):
        build_model("imr_hsnet", backbone="resnet101")
    with pytest.raises(InputError, match="stages"):
        _model(stages=0)
    with pytest.raises(InputError, match="unknown config option"):
        _model(stage=2)


def test_gru_cells_are_shared_and_grouped():
    """One set of update convs (grouped, 8 groups) serves both branches; no per-branch copies."""
    m = _model()
    names = {k.split(".")[0] for k in m.state_dict()}
    assert {f"conv{g}{i}" for g in "zrh" for i in range(3)} <= names
    assert not any("query" in n or "support" in n for n in names)
    assert m.convz1.groups == 8 and tuple(m.convz1.weight.shape) == (64, 32, 3, 3)
    assert tuple(m.convz0.weight.shape) == (512, 769, 1, 1) and tuple(m.state.shape) == (1, 128, h, h)


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_official_checkpoint_layout_loads_and_a_wrong_file_is_named(tmp_path, backbone):
    src = _model(backbone, seed=3)
    sd = {"module." + k: v.clone() for k, v in src.state_dict().items()}
    head = "fc" if backbone == "resnet50" else "classifier.6"
    sd[f"module.backbone.{head}.weight"] = torch.zeros(1000, 8)  # the official file carries the classifier
    p = tmp_path / "best_model.pt"
    torch.save(sd, p)
    m = build_model("imr_hsnet", checkpoint=str(p), backbone=backbone, imgsz=S)
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    bad = dict(sd)
    del bad["module.convh2.bias"]
    bad["module.convq9.weight"] = torch.zeros(1)
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match=r"missing keys: convh2\.bias.*unexpected keys: convq9\.weight"):
        build_model("imr_hsnet", checkpoint=str(p), backbone=backbone, imgsz=S)


def test_official_state_shape_needs_imgsz_400(tmp_path):
    sd = {"module." + k: v for k, v in _model().state_dict().items()}
    sd["module.state"] = torch.zeros(1, 128, 50, 50)
    p = tmp_path / "best_model.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="imgsz=400"):
        build_model("imr_hsnet", checkpoint=str(p), imgsz=S)


def test_two_stages_are_the_prefix_of_three():
    q, s, qc, sc = _inputs()
    m3, m2 = _model(stages=3), _model(stages=2)
    with torch.no_grad():
        qf, sf = m3.encode(q), m3.encode(s)
        t3 = m3.trace(qf, sf, qc, sc)
        out2 = m2.head(qf, sf, qc, sc)
    assert torch.equal(out2["query_logits"], t3["query_logits_1"])
    assert not torch.allclose(t3["query_logits_1"], t3["query_logits_2"])


def _released_transcription(m, qf, sf, query_cam, support_cam, stage):
    """hsnet_imr.py:110-215 transcribed literally (in-place `mask_feature`, cams (B,h,h))."""
    import torch.nn.functional as F

    def mask_feature(features, mask):
        for idx, feature in enumerate(features):
            mk = F.interpolate(mask.unsqueeze(1).float(), feature.size()[2:], mode="bilinear", align_corners=True)
            features[idx] = features[idx] * mk
        return features

    query_feats, support_feats = list(qf), list(sf)
    q_mid, s_mid = m.mid_features(query_feats), m.mid_features(support_feats)
    query_feats_masked = mask_feature(query_feats, support_cam.clone())
    support_feats_masked = mask_feature(support_feats, query_cam.clone())
    corr_query = multilayer_correlation(query_feats, support_feats_masked, m.ids)
    corr_support = multilayer_correlation(support_feats, query_feats_masked, m.ids)
    query_cam, support_cam = query_cam.unsqueeze(1), support_cam.unsqueeze(1)
    sq = ss_ = m.state.expand(qf[0].shape[0], -1, -1, -1)
    for k in range(stage):
        aq = m.hpn_learner.forward_conv4d(corr_query)
        sq = m.gru(query_cam, aq, q_mid, sq)
        a_s = m.hpn_learner.forward_conv4d(corr_support)
        ss_ = m.gru(support_cam, a_s, s_mid, ss_)
        ls, lq = m.decode(ss_ + a_s, support_cam), m.decode(sq + aq, query_cam)
        if k != stage - 1:
            support_cam, query_cam = ls.softmax(dim=1)[:, 1], lq.softmax(dim=1)[:, 1]
            query_feats_masked = mask_feature(query_feats, query_cam)
            support_feats_masked = mask_feature(support_feats, support_cam)
            corr_query = multilayer_correlation(query_feats, support_feats_masked, m.ids)
            corr_support = multilayer_correlation(support_feats, query_feats_masked, m.ids)
            query_cam = F.interpolate(query_cam.unsqueeze(1), (h, h), mode="bilinear", align_corners=True)
            support_cam = F.interpolate(support_cam.unsqueeze(1), (h, h), mode="bilinear", align_corners=True)
    return lq, ls


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_swapped_in_place_masking_equals_a_literal_transcription(backbone):
    """The functional swapped/cumulative masking (and corr_support as the transposed corr_query)
    equals the released code's in-place list mutation, run literally, for 3 stages."""
    m = _model(backbone, stages=3)
    q, s, qc, sc = _inputs(B=2, seed=1)
    with torch.no_grad():
        qf, sf = m.encode(q.expand(2, -1, -1, -1)), m.encode(s)
        ours = m.head(qf, sf, qc.expand(2, -1, -1, -1), sc)
        lq, ls = _released_transcription(m, qf, sf, qc.expand(2, -1, -1, -1)[:, 0], sc[:, 0], 3)
    assert torch.allclose(ours["query_logits"], lq, atol=1e-5, rtol=0)
    assert torch.allclose(ours["support_logits"], ls, atol=1e-5, rtol=0)


def test_query_prediction_uses_the_support_cam_through_the_swap():
    """The swap makes the query branch's 4D input depend on the support CAM (it masks the query
    features) and vice versa: changing only the support CAM changes the query logits at stage 1.
    (Cosine correlation ignores a positive per-position scale, so a CAM acts through its zeros.)"""
    m = _model(stages=1)
    q, s, qc, _ = _inputs(B=1, seed=2)
    half = torch.ones(1, 1, h, h)
    half[..., : h // 2] = 0
    with torch.no_grad():
        qf, sf = m.encode(q), m.encode(s)
        a = m.head(qf, sf, qc, torch.ones_like(half))["query_logits"]
        b = m.head(qf, sf, qc, half)["query_logits"]
    assert (a - b).abs().max() > 1e-3


def test_head_inputs_are_checked():
    m = _model()
    q, s, _, sc = _inputs()
    with torch.no_grad():
        qf, sf = m.encode(q), m.encode(s)
    with pytest.raises(InputError, match=r"query_cam must be a \(B or 1,1,8,8\)"):
        m.head(qf, sf, torch.rand(1, 1, S, S), sc)
