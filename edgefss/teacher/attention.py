"""KV-fusion self-attention (DiffewS), as a diffusers attention processor.

Official behaviour (aim-uofa/DiffewS `diffews/models/attention_processor.py`, `MyAttention` and its
processors; installed by `unet_2d_condition.py:apply_unet_refonly_block` on `attn1`, the
self-attention, of every `BasicTransformerBlock`):

1. the support ("reference") pass runs the UNet on the support latents with an EMPTY bank: each
   self-attention is plain self-attention and stores its keys and values in the bank;
2. the query ("target") pass concatenates, in every self-attention, the query's own keys/values
   FIRST and the bank's after them, along the token axis: K = [K_q ; K_s], V = [V_q ; V_s];
3. K shots: the support batch is B*K (shot k of query b at row b*K + k); the xFormers processor
   the evaluation uses reshapes the bank (B*K, N, C) -> (B, K*N, C), so query b attends to the
   tokens of its K supports, shot after shot (`k_bank.view(batch_size, -1, C)`).

Cross-attention (`attn2`, the prompt) is untouched. The scale is the stock head_dim ** -0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STORE, FUSE, OFF = "store", "fuse", "off"


class FusionState:
    """What every KV-fusion processor of one UNet shares: the mode and the bank.

    mode: STORE (support pass: record K/V), FUSE (query pass: append the bank), OFF (plain).
    bank: {layer name: (K, V)}, each (B*K, N, C) float.
    """

    def __init__(self):
        self.mode = OFF
        self.bank: dict = {}

    def clear(self) -> None:
        self.mode, self.bank = OFF, {}


class KVFusionProcessor:
    """Self-attention whose keys/values are extended with the support's (module docstring)."""

    def __init__(self, state: FusionState, name: str):
        self.state, self.name = state, name

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        """hidden_states (B, N, C) float -> (B, N, C): the block's self-attention output."""
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("KV fusion applies to the self-attention (attn1) of a transformer block only")
        B, N, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        mode = self.state.mode
        if mode == STORE:
            self.state.bank[self.name] = (k, v)
        elif mode == FUSE:
            kb, vb = self.state.bank[self.name]
            # (B*K, N, C) -> (B, K*N, C): shots b*K .. b*K+K-1 belong to query b, in shot order
            k = torch.cat([k, kb.reshape(B, -1, kb.shape[-1])], dim=1)
            v = torch.cat([v, vb.reshape(B, -1, vb.shape[-1])], dim=1)
        h = attn.heads
        d = q.shape[-1] // h
        q, k, v = (t.reshape(B, -1, h, d).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False, scale=attn.scale)
        out = out.transpose(1, 2).reshape(B, N, h * d).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def self_attention_names(unet) -> list[str]:
    """Processor keys of the self-attentions DiffewS fuses: `attn1` of every transformer block."""
    return [k for k in unet.attn_processors if k.endswith("attn1.processor")]


def install(unet, state: FusionState) -> int:
    """Put a KVFusionProcessor on every self-attention of `unet` (others keep theirs).

    Returns:
        the number of fused layers (16 in SD2.1: 2x3 down, 1 mid, 3x3 up).
    """
    procs = dict(unet.attn_processors)
    names = self_attention_names(unet)
    for k in names:
        procs[k] = KVFusionProcessor(state, k)
    unet.set_attn_processor(procs)
    return len(names)
