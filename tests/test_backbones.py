"""ResNet-50 / VGG16 feature extractors and the HSNet 4D learner used by TLG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgefss.errors import CheckpointError
from edgefss.models.hsnet import CenterPivotConv4d, HPNLearner, multilayer_correlation, stack_ids
from edgefss.models.resnet import ResNet50
from edgefss.models.tlg import TLG, TLGCfg, load_torchvision_backbone
from edgefss.models.vgg import VGG16

S = 208  # h = 26 (even) at S/8 for both backbones


def _n(module):
    return sum(p.numel() for p in module.parameters())


def _torchvision_resnet50_keys() -> set:
    """torchvision resnet50 state_dict keys (without fc), written out from its structure."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight"} | {f"bn1.{b}" for b in bn}
    for li, n in enumerate((3, 4, 6, 3), start=1):
        for bi in range(n):
            p = f"layer{li}.{bi}."
            for j in (1, 2, 3):
                keys.add(p + f"conv{j}.weight")
                keys |= {p + f"bn{j}.{b}" for b in bn}
            if bi == 0:
                keys.add(p + "downsample.0.weight")
                keys |= {p + f"downsample.1.{b}" for b in bn}
    return keys


def test_resnet50_matches_torchvision_layout():
    m = ResNet50()
    assert set(m.state_dict()) == _torchvision_resnet50_keys()
    # torchvision resnet50: 25,557,032 params incl. fc (2048*1000 + 1000)
    assert _n(m) == 25_557_032 - 2_049_000
    assert tuple(m.state_dict()["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(m.state_dict()["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)


def test_vgg16_matches_torchvision_layout():
    m = VGG16()
    conv_ids = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert set(m.state_dict()) == {f"features.{i}.{w}" for i in conv_ids for w in ("weight", "bias")}
    # torchvision vgg16: 138,357,544 params, classifier 123,642,856
    assert _n(m) == 138_357_544 - 123_642_856


@torch.no_grad()
def test_resnet50_features_are_pre_relu_bottleneck_outputs():
    torch.manual_seed(0)
    m = ResNet50().eval()
    x = torch.randn(1, 3, S, S)
    f = m.extract_features(x)
    assert [tuple(t.shape[1:]) for t in f] == [(512, 26, 26)] * 4 + [(1024, 13, 13)] * 6 + [(2048, 7, 7)] * 3
    assert all((t < 0).any() for t in f), "features must be taken before the block's ReLU"
    # the next block consumes ReLU(previous): reproduces idx 4 from idx 3
    torch.testing.assert_close(m.layer3[0].forward_pre_relu(torch.relu(f[3])), f[4])
    # and a plain torchvision-style forward through layer2 reproduces idx 3 after ReLU
    y = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
    torch.testing.assert_close(y, torch.relu(f[3]))


@torch.no_grad()
def test_resnet50_feature_sizes_at_400():
    m = ResNet50().eval()
    f = m.extract_features(torch.zeros(1, 3, 400, 400))
    assert [t.shape[-1] for t in (f[0], f[4], f[10])] == [50, 25, 13]


@torch.no_grad()
def test_vgg16_features_match_hsnet_feat_ids():
    torch.manual_seed(0)
    m = VGG16().eval()
    x = torch.randn(1, 3, S, S)
    f = m.extract_features(x)
    for k, fid in enumerate((17, 19, 21, 24, 26, 28, 30)):
        torch.testing.assert_close(f[k], m.features[: fid + 1](x))
    assert [t.shape[-1] for t in f] == [26, 26, 26, 13, 13, 13, 6]


def _save(sd, path):
    torch.save(sd, str(path))
    return path


@pytest.mark.parametrize(
    "backbone,head_key,head_shape",
    [("resnet50", "fc", (1000, 2048)), ("vgg16", "classifier.6", (1000, 4096))],
)
def test_torchvision_checkpoint_roundtrip(tmp_path, backbone, head_key, head_shape):
    torch.manual_seed(1)
    src = TLG(TLGCfg(backbone=backbone, imgsz=S)).backbone
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd[f"{head_key}.weight"] = torch.randn(head_shape)  # classifier: ignored
    sd[f"{head_key}.bias"] = torch.randn(head_shape[0])
    path = _save(sd, tmp_path / "tv.pth")
    torch.manual_seed(2)
    dst = TLG(TLGCfg(backbone=backbone, imgsz=S))
    load_torchvision_backbone(dst, path)
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(dst.backbone.state_dict()[k], v), k


def test_torchvision_checkpoint_errors(tmp_path):
    model = TLG(TLGCfg(imgsz=S))
    sd = dict(model.backbone.state_dict())
    missing = {k: v for k, v in sd.items() if not k.startswith("layer4.2.")}
    with pytest.raises(CheckpointError, match="missing keys: layer4.2"):
        load_torchvision_backbone(model, _save(missing, tmp_path / "a.pth"))
    bad = dict(sd, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(CheckpointError, match="conv1.weight"):
        load_torchvision_backbone(model, _save(bad, tmp_path / "b.pth"))
    vgg = {f"features.{i}.weight": torch.zeros(1) for i in range(3)}  # VGG file into a ResNet
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_torchvision_backbone(model, _save(vgg, tmp_path / "c.pth"))
    (tmp_path / "d.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        load_torchvision_backbone(model, tmp_path / "d.pth")


def _hsnet_conv4d_reference(conv: CenterPivotConv4d, x: torch.Tensor) -> torch.Tensor:
    """HSNet's formulation: index_select pruning of the support dims, then both 2D convs."""
    B, C, ha, wa, hb, wb = x.shape
    s = conv.stride
    idxh, idxw = torch.arange(0, hb, s), torch.arange(0, wb, s)
    idx = (idxw.repeat(len(idxh), 1) + idxh.repeat(len(idxw), 1).t() * wb).reshape(-1)
    pruned = x.reshape(B, C, ha, wa, -1).index_select(4, idx).reshape(B, C, ha, wa, len(idxh), len(idxw))
    rows = [[conv.conv1(pruned[..., i, j]) for j in range(len(idxw))] for i in range(len(idxh))]
    out1 = torch.stack([torch.stack(r, -1) for r in rows], -2)
    out2 = torch.stack(
        [torch.stack([conv.conv2(x[:, :, i, j]) for j in range(wa)], 2) for i in range(ha)], 2
    )
    return out1 + out2


@pytest.mark.parametrize("k,stride,hb", [(3, 2, 7), (5, 4, 13), (3, 1, 4)])
@torch.no_grad()
def test_center_pivot_conv4d_matches_hsnet(k, stride, hb):
    torch.manual_seed(0)
    conv = CenterPivotConv4d(3, 5, k, stride)
    x = torch.randn(2, 3, 6, 5, hb, hb - 1)
    torch.testing.assert_close(conv(x), _hsnet_conv4d_reference(conv, x), rtol=1e-5, atol=1e-5)


def test_stack_ids_and_learner_params():
    assert stack_ids((3, 4, 6, 3)) == (3, 9, 13)
    assert stack_ids((2, 2, 3, 3, 3, 1)) == (1, 4, 7)
    assert _n(HPNLearner([3, 6, 4])) == 2_314_336  # spec §1.6
    assert _n(HPNLearner([1, 3, 3])) == 2_314_336 - 3_776  # 2 convs x 16 out x (2*9 + 3*25 + 1*25)
    assert "encoder_layer4.0.conv1.weight" in HPNLearner([3, 6, 4]).state_dict()


@torch.no_grad()
def test_multilayer_correlation_is_clamped_unmasked_cosine():
    torch.manual_seed(0)
    q = [torch.randn(2, 8, 4, 4) for _ in range(13)]
    s = [torch.randn(2, 8, 3, 3) for _ in range(13)]
    c4, c3, c2 = multilayer_correlation(q, s, (3, 9, 13))
    assert c4.shape == (2, 3, 4, 4, 3, 3) and c3.shape[1] == 6 and c2.shape[1] == 4
    qn = q[0].flatten(2) / q[0].flatten(2).norm(dim=1, keepdim=True)
    sn = s[0].flatten(2) / s[0].flatten(2).norm(dim=1, keepdim=True)
    ref = (qn.transpose(1, 2) @ sn).clamp(min=0).reshape(2, 4, 4, 3, 3)
    torch.testing.assert_close(c2[:, 0], ref, atol=1e-4, rtol=1e-4)


def test_hpn_learner_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    learner = HPNLearner([3, 6, 4]).eval()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.learner = learner

        def forward(self, a, b, c):
            return self.learner.forward_conv4d([a, b, c])

    xs = (torch.rand(1, 3, 7, 7, 7, 7), torch.rand(1, 6, 13, 13, 13, 13), torch.rand(1, 4, 26, 26, 26, 26))
    path = tmp_path / "hpn.onnx"
    torch.onnx.export(Wrap(), xs, str(path), input_names=["c4", "c3", "c2"], output_names=["out"],
                      opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: x.numpy() for n, x in zip(["c4", "c3", "c2"], xs)})[0]
    with torch.no_grad():
        ref = Wrap()(*xs).numpy()
    assert got.shape == (1, 128, 26, 26)
    assert np.abs(got - ref).max() <= 1e-4
