"""DiffewS teacher on the tiny diffusers configuration: KV fusion against hand-written attention,
the conv_in_ref rule, the one-step/scheduler facts, the mask rule, K-shot flattening."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from edgefss.teacher.attention import FUSE, STORE, KVFusionProcessor

S = 64


@pytest.fixture(scope="module")
def tiny():
    from edgefss.models import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("diffews", config="tiny", imgsz=S)


def _np_attention(x_q, x_s, attn, K):
    """float64 NumPy: softmax(Q [K_q; K_s]^T / sqrt(d)) [V_q; V_s], heads split, then to_out."""
    W = {n: getattr(attn, n).weight.detach().double().numpy() for n in ("to_q", "to_k", "to_v")}
    for n in ("to_q", "to_k", "to_v"):
        assert getattr(attn, n).bias is None  # SD attention projections have no bias
    Wo = attn.to_out[0].weight.detach().double().numpy()
    bo = attn.to_out[0].bias.detach().double().numpy()
    h = attn.heads
    B, N, _C = x_q.shape
    out = np.zeros((B, N, Wo.shape[0]))
    for b in range(B):
        q = x_q[b] @ W["to_q"].T
        sup = np.concatenate([x_s[b * K + k] for k in range(K)], axis=0)  # shot after shot
        k_all = np.concatenate([x_q[b] @ W["to_k"].T, sup @ W["to_k"].T], axis=0)  # own keys first
        v_all = np.concatenate([x_q[b] @ W["to_v"].T, sup @ W["to_v"].T], axis=0)
        d = q.shape[1] // h
        heads = []
        for i in range(h):
            sl = slice(i * d, (i + 1) * d)
            logits = q[:, sl] @ k_all[:, sl].T / np.sqrt(d)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            heads.append(p @ v_all[:, sl])
        out[b] = np.concatenate(heads, axis=1) @ Wo.T + bo
    return out


@pytest.mark.parametrize("B,K", [(1, 1), (2, 3)])
def test_kv_fusion_equals_hand_written_attention(tiny, B, K):
    unet = tiny.unet
    name = next(k for k in unet.attn_processors if k.endswith("attn1.processor"))
    attn = unet.get_submodule(name[: -len(".processor")])
    assert isinstance(attn.processor, KVFusionProcessor)
    g = torch.Generator().manual_seed(0)
    C, N = attn.to_q.in_features, 20
    x_s = torch.randn(B * K, N, C, generator=g)
    x_q = torch.randn(B, N, C, generator=g)
    st = tiny.fusion
    try:
        st.bank, st.mode = {}, STORE
        with torch.no_grad():
            attn(x_s)  # the support pass stores K/V
            st.mode = FUSE
            got = attn(x_q).numpy()
    finally:
        st.clear()
    ref = _np_attention(x_q.double().numpy(), x_s.double().numpy(), attn, K)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # and the fused result is not plain self-attention (the support really enters)
    with torch.no_grad():
        plain = attn(x_q).numpy()
    assert np.abs(plain - ref).max() > 1e-3


def test_fusion_sits_on_every_self_attention_only(tiny):
    from diffusers.models.attention import BasicTransformerBlock

    blocks = [m for m in tiny.unet.modules() if isinstance(m, BasicTransformerBlock)]
    assert tiny.n_fused == len(blocks) == 4  # tiny: 1 down, 1 mid, 2 up transformer blocks
    for k, p in tiny.unet.attn_processors.items():
        assert isinstance(p, KVFusionProcessor) == k.endswith("attn1.processor"), k


def test_conv_in_ref_initialisation_rule(tiny):
    unet = tiny.unet
    ref, conv = unet.conv_in_ref, unet.conv_in
    assert (ref.in_channels, ref.out_channels, ref.kernel_size, ref.padding) == (8, conv.out_channels, (3, 3), (1, 1))
    torch.testing.assert_close(ref.weight, conv.weight.repeat(1, 2, 1, 1) / 2, rtol=0, atol=0)
    torch.testing.assert_close(ref.bias, conv.bias, rtol=0, atol=0)
    # the rule's purpose: an image latent given twice passes as through conv_in
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ref(torch.cat([x, x], 1)), conv(x), rtol=1e-5, atol=1e-6)


def test_official_scheduler_one_step_is_minus_v_at_timestep_1():
    from diffusers import DDIMScheduler

    from edgefss.models.diffews import TIMESTEP

    # scheduler_1.0_1.0/scheduler_config.json of aim-uofa/DiffewS
    sch = DDIMScheduler(num_train_timesteps=1000, beta_start=1.0, beta_end=1.0, beta_schedule="scaled_linear",
                        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                        timestep_spacing="leading")
    sch.set_timesteps(1)
    assert sch.timesteps.tolist() == [TIMESTEP]
    v, x = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x0 = sch.step(v, int(sch.timesteps[0]), x).pred_original_sample
    torch.testing.assert_close(x0, -v)


def test_mask_rule_matches_official_uint8_rule(tiny):
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 3, 16, 16)).astype(np.float32) * np.array([1.0, 0.3])[:, None, None, None].astype(np.float32)
    got = tiny.mask_rule(torch.from_numpy(rgb)).numpy()
    for b in range(2):  # main_oss.py: to_tensor(uint8 image); mean(dim=1) > max * r_threshold
        u8 = (rgb[b] * 255).clip(0, 255).astype(np.uint8).astype(np.float64) / 255
        np.testing.assert_array_equal(got[b], u8.mean(axis=0) > u8.max() * 0.25)
    assert 0 < got.mean() < 1


def test_k_shots_are_flattened_per_query(tiny):
    g = torch.Generator().manual_seed(1)
    B, K = 2, 2
    q = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    s = torch.rand(B, K, 3, S, S, generator=g) * 2 - 1
    m = (torch.rand(B, K, S, S, generator=g) > 0.5).float()
    with torch.no_grad():
        a = tiny(q, s, m)["latent"]
        s2 = s.clone()
        s2[1] = torch.rand(K, 3, S, S, generator=g) * 2 - 1  # other supports for query 1 only
        b = tiny(q, s2, m)["latent"]
        c = tiny(q, s.flip(1), m.flip(1))["latent"]  # shot order inside a query
        one = tiny(q[:1], s[:1], m[:1])["latent"]
    torch.testing.assert_close(b[0], a[0], rtol=1e-5, atol=1e-5)  # query 0 sees only its own shots
    assert (b[1] - a[1]).abs().max() > 1e-4
    torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5)  # attention does not care about key order
    torch.testing.assert_close(one[0], a[0], rtol=1e-4, atol=1e-5)  # batching does not mix queries


def test_forward_shapes_and_bad_input(tiny):
    from edgefss.errors import InputError

    with torch.no_grad():
        out = tiny(torch.zeros(1, 3, S, S), torch.zeros(1, 2, 3, S, S), torch.zeros(1, 2, S, S))
    assert out["mask"].shape == (1, S, S) and out["mask"].dtype == torch.bool
    assert out["rgb"].shape == (1, 3, S, S) and out["latent"].shape == (1, 4, S // 8, S // 8)
    with pytest.raises(InputError, match="supports must be"):
        tiny(torch.zeros(1, 3, S, S), torch.zeros(1, 3, S, S), torch.zeros(1, 1, S, S))
    assert not tiny.fusion.bank  # the bank never outlives a call


def test_support_bank_is_query_independent_and_reused(tiny):
    """The labeller computes the support pass once per class: reusing the bank for several
    queries gives what a full forward gives for each."""
    g = torch.Generator().manual_seed(2)
    s = torch.rand(1, 2, 3, S, S, generator=g) * 2 - 1
    m = (torch.rand(1, 2, S, S, generator=g) > 0.5).float()
    qs = [torch.rand(1, 3, S, S, generator=g) * 2 - 1 for _ in range(2)]
    with torch.no_grad():
        bank = tiny.support_bank(tiny.support_latents(s[0], m[0]))
        for q in qs:
            a, b = tiny.predict_from_bank(q, bank), tiny(q, s, m)
            torch.testing.assert_close(a["latent"], b["latent"], rtol=0, atol=0)
            assert torch.equal(a["mask"], b["mask"])
    assert len(bank) == tiny.n_fused and not tiny.fusion.bank


def test_sd21_configuration_has_the_published_sizes():
    """The full configuration, built on the meta device (no memory): the parameter counts of the
    stabilityai/stable-diffusion-2-1 UNet (865,910,724) and VAE (83,653,863), plus conv_in_ref,
    and KV fusion on its 16 self-attentions (2x3 down, 1 mid, 3x3 up)."""
    from edgefss.models.diffews import DiffewS, DiffewSCfg

    with torch.device("meta"):
        m = DiffewS(DiffewSCfg())
    ref = m.unet.conv_in_ref
    assert (ref.in_channels, ref.out_channels) == (8, 320)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref == 8 * 320 * 9 + 320
    assert sum(p.numel() for p in m.unet.parameters()) - n_ref == 865_910_724
    assert sum(p.numel() for p in m.vae.parameters()) == 83_653_863
    assert m.n_fused == 16 and tuple(m.prompt_embeds.shape) == (1, 2, 1024)
