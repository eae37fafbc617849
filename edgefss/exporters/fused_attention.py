"""Fused attention in exported graphs: which op each backend gets, and how it is emitted.

The CST encoder (DINO ViT-S/8) has 12 self-attentions over 1+(S/8)^2 tokens (2501 at 400x400).
Exported as MatMul/Softmax, every one materialises a (1,6,2501,2501) float map (150 MB) that
ONNX Runtime writes and reads back (MatMul, scale, Softmax, MatMul). ONNX Runtime's CPU
`com.microsoft.MultiHeadAttention` kernel runs MLAS FlashAttention instead (tiles sized to L2,
no full map), and OpenVINO reads the same op as `ScaledDotProductAttention`. The legacy exporter
(opset 17, the one used for all graphs) emits it through a `torch.autograd.Function.symbolic`,
so the rest of the graph is unchanged; the output takes q's (1,N,D) float32 type.

TensorRT's ONNX parser has no such op (and fuses the MatMul/Softmax pattern itself), so
tensorrt builds keep the plain pattern.
"""

from __future__ import annotations

from edgefss.errors import InputError, require
from edgefss.exporters.swap import swapped

MS_MHA = "com.microsoft.MultiHeadAttention"
PLAIN = "MatMul/Softmax"
# Per backend: the attention form its encoder graph is exported with (measured side by side in
# docs/design.md "Export graphs"). OpenVINO runs both forms at the same speed; it gets the fused
# one so both CPU backends share one ONNX graph (an onnxruntime bundle also loads in OpenVINO).
BACKEND_ATTENTION = {"onnxruntime": MS_MHA, "openvino": MS_MHA, "tensorrt": PLAIN}
CUSTOM_OPSETS = {MS_MHA: {"com.microsoft": 1}, PLAIN: {}}


def attention_for(backend: str) -> str:
    """The attention form ('com.microsoft.MultiHeadAttention' | 'MatMul/Softmax') for a backend."""
    if backend not in BACKEND_ATTENTION:
        raise InputError(f"backend {backend!r}; expected one of {sorted(BACKEND_ATTENTION)}")
    return BACKEND_ATTENTION[backend]


def _ms_mha():
    torch = require("torch", "ONNX export")
    from edgefss.models.dino_vit import sdpa_heads

    class MultiHeadAttention(torch.autograd.Function):
        """(B,N,D) q, k, v float32 -> (B,N,D): eager is `sdpa_heads`; export is one contrib node."""

        @staticmethod
        def forward(ctx, q, k, v, heads):
            return sdpa_heads(q, k, v, heads)

        @staticmethod
        def symbolic(g, q, k, v, heads):
            # scale attribute omitted: the op's default 1/sqrt(D/heads) is DINO's qk_scale
            out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=int(heads))
            out.setType(q.type())
            return out

    def attend(q, k, v, heads):
        return MultiHeadAttention.apply(q, k, v, heads)

    return attend


def attention_export(module, form: str):
    """Within the block, every swappable attention core (`.attend`) in `module` exports as `form`.

    Args:
        module: torch.nn.Module (e.g. a graph wrapper holding a CST model).
        form: MS_MHA or PLAIN (PLAIN changes nothing).
    Yields:
        the number of attention cores swapped (0 when the module has none or form is PLAIN).
    """
    if form not in CUSTOM_OPSETS:
        raise InputError(f"attention form {form!r}; expected one of {sorted(CUSTOM_OPSETS)}")
    from edgefss.models.dino_vit import Attention

    targets = [m for m in module.modules() if isinstance(m, Attention)] if form == MS_MHA else []
    return swapped(targets, "attend", _ms_mha() if targets else None)


def count_fused(model) -> int:
    """Number of fused attention nodes (`com.microsoft.MultiHeadAttention`) in an onnx.ModelProto."""
    return sum((n.domain, n.op_type) == ("com.microsoft", "MultiHeadAttention") for n in model.graph.node)
