"""Grad-CAM's gradient as a forward computation (no autograd): exportable to ONNX, runnable on device.

The official generator (`pytorch_grad_cam/base_cam.py:75-89`) back-propagates
L = softmax_k(100 * <y/|y|, u_k>)[c] from CLIP's output to the output A of `visual.layer4[-1]`
(A: (C, H, W), N = HW positions a_1..a_N). Between the two there is only the attention pool
(`model_clip.py:61-95`) and the normalised cosine, so the gradient has a closed form.

Forward (one image, heads h = 1..nh of width d = C / nh, T = N + 1 tokens, j = 0 the mean token):
    t_0 = mean_i a_i + p_0,  t_j = a_j + p_j                          tokens (T, C)
    q = Wq t_0 + bq,  k_j = Wk t_j + bk,  v_j = Wv t_j + bv            (per head: q_h, k_hj, v_hj in R^d)
    z_hj = <q_h, k_hj> / sqrt(d),  alpha_h = softmax_j(z_h)           attention of the mean token
    o_h = sum_j alpha_hj v_hj,  y = Wc o + bc,  f = y / |y|             pooled embedding (D)
    s_k = 100 <f, u_k>,  P = softmax(s),  L = P_c                     u_k: unit text features (K, D)
Backward, written forward:
    g_s = P_c (e_c - P)                                                 dL/ds      (K)
    g_f = 100 U^T g_s                                                   dL/df      (D)
    g_y = (g_f - f <f, g_f>) / |y|                                      dL/dy      (D)
    g_o = Wc^T g_y                                                      dL/do      (C = nh * d)
    g_alpha_hj = <g_o_h, v_hj>;  g_z_hj = alpha_hj (g_alpha_hj - sum_j' alpha_hj' g_alpha_hj')
    g_q_h = sum_j g_z_hj k_hj / sqrt(d);  g_k_hj = g_z_hj q_h / sqrt(d);  g_v_hj = alpha_hj g_o_h
    g_t_j = Wk^T g_k_j + Wv^T g_v_j + [j = 0] Wq^T g_q                 dL/dt_j    (C)
    dL/da_i = g_t_i + g_t_0 / N                 (i = 1..N; the mean token feeds every a_i)
Grad-CAM only needs the spatial mean of dL/da (`grad_cam.py:23`):
    w = (1/N) sum_i dL/da_i = (1/N) sum_{j=0..N} g_t_j = (Wv^T g_o + Wq^T g_q) / N,
because sum_j g_v_hj = g_o_h (the attention sums to 1) and sum_j g_k_hj = 0 (a softmax gradient sums
to 0). `gradcam_weights` computes this reduced form; `layer4_gradient` the full dL/dA (tests prove
both equal torch.autograd). CAM = ReLU(sum_c w_c A_c) (`base_cam.py:56-62,133`).
"""

from __future__ import annotations

import torch

from edgefss.cam.recipe import LOGIT_SCALE


def _pool_forward(pool, x4: torch.Tensor):
    """Attention-pool intermediates of x4 (B,C,H,W): q (B,h,d), k/v (B,h,T,d), alpha (B,h,T), y (B,D)."""
    b, c = x4.shape[:2]
    nh = pool.heads
    d = c // nh
    t = pool.tokens(x4)  # (B,T,C)
    q = pool.q_proj(t[:, 0]).reshape(b, nh, d)
    k = pool.k_proj(t).reshape(b, -1, nh, d).transpose(1, 2)
    v = pool.v_proj(t).reshape(b, -1, nh, d).transpose(1, 2)
    alpha = ((k @ q.unsqueeze(-1)).squeeze(-1) * d**-0.5).softmax(dim=-1)  # (B,h,T)
    o = (alpha.unsqueeze(-2) @ v).squeeze(-2).reshape(b, c)
    y = pool.c_proj(o)
    return q, k, v, alpha, y


def _upstream(pool, x4, text: torch.Tensor, targets: torch.Tensor):
    """Shared part: softmax over the classes down to the attention logits.

    Returns:
        q (B,h,d), k (B,h,T,d), alpha (B,h,T), g_o (B,M,h,d), g_z (B,M,h,T), probs (B,K).
    """
    b, c = x4.shape[:2]
    nh = pool.heads
    d = c // nh
    q, k, v, alpha, y = _pool_forward(pool, x4)
    norm = y.norm(dim=-1, keepdim=True)  # (B,1)
    f = y / norm
    probs = (LOGIT_SCALE * f @ text.t()).softmax(dim=-1)  # (B,K)
    # one-hot by comparison with an arange: exports with a dynamic class count K
    onehot = (torch.arange(text.shape[0], device=targets.device) == targets.unsqueeze(-1)).to(probs.dtype)
    pc = torch.gather(probs, 1, targets).unsqueeze(-1)  # (B,M,1)
    g_s = pc * (onehot - probs.unsqueeze(1))  # (B,M,K)
    g_f = LOGIT_SCALE * g_s @ text  # (B,M,D)
    f1 = f.unsqueeze(1)
    g_y = (g_f - f1 * (g_f * f1).sum(-1, keepdim=True)) / norm.unsqueeze(1)
    g_o = (g_y @ pool.c_proj.weight).reshape(b, -1, nh, d)  # (B,M,h,d)
    g_a = torch.einsum("bmhd,bhtd->bmht", g_o, v)
    a1 = alpha.unsqueeze(1)
    g_z = a1 * (g_a - (a1 * g_a).sum(-1, keepdim=True))  # (B,M,h,T)
    return q, k, alpha, g_o, g_z, probs


def gradcam_weights(pool, x4: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights: the spatial mean of d softmax[target] / d x4, without autograd.

    Args:
        pool: the tower's AttentionPool2d (edgefss.models.clip_image).
        x4: (B, C, H, W) float32 layer-4 output.
        text: (K, D) float32 unit-norm text features of the softmax classes.
        targets: (B, M) int64 class indices (M CAMs per image).
    Returns:
        (B, M, C) float32.
    """
    b, c, hh, ww = x4.shape
    d = c // pool.heads
    q, k, alpha, g_o, g_z, _ = _upstream(pool, x4, text, targets)
    g_q = torch.einsum("bmht,bhtd->bmhd", g_z, k) * d**-0.5
    g = g_o.reshape(b, -1, c) @ pool.v_proj.weight + g_q.reshape(b, -1, c) @ pool.q_proj.weight
    return g / (hh * ww)


def layer4_gradient(pool, x4: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The full d softmax[target] / d x4 in closed form: (B, M, C, H, W) float32 (module docstring)."""
    b, c, hh, ww = x4.shape
    d = c // pool.heads
    q, k, alpha, g_o, g_z, _ = _upstream(pool, x4, text, targets)
    g_q = torch.einsum("bmht,bhtd->bmhd", g_z, k) * d**-0.5
    g_k = g_z.unsqueeze(-1) * q[:, None, :, None, :] * d**-0.5  # (B,M,h,T,d)
    g_v = alpha[:, None, :, :, None] * g_o.unsqueeze(-2)  # (B,M,h,T,d)
    m = g_k.shape[1]

    def heads_to_c(g):  # (B,M,h,T,d) -> (B,M,T,C)
        return g.permute(0, 1, 3, 2, 4).reshape(b, m, -1, c)

    g_t = heads_to_c(g_k) @ pool.k_proj.weight + heads_to_c(g_v) @ pool.v_proj.weight  # (B,M,T,C)
    g_t0 = g_t[:, :, 0] + g_q.reshape(b, m, c) @ pool.q_proj.weight
    g_a = g_t[:, :, 1:] + g_t0.unsqueeze(2) / (hh * ww)  # (B,M,N,C)
    return g_a.transpose(-1, -2).reshape(b, m, c, hh, ww)


def gradcam(pool, x4: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Raw Grad-CAM maps ReLU(sum_c w_c x4_c): (B, M, H, W) float32 (before the min-max/resize
    post-processing of edgefss.cam.recipe.postprocess)."""
    w = gradcam_weights(pool, x4, text, targets)
    return torch.relu(torch.einsum("bmc,bchw->bmhw", w, x4))
