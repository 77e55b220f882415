"""Softmax attention: the quadratic baseline every efficient method is measured against.

    Attn(Q, K, V) = dropout(softmax(Q K^T / sqrt(d) + M)) V,   M_ij = -inf where key j is padding

Paper: Vaswani et al., "Attention Is All You Need", NeurIPS 2017. LRA setup: attention-matrix
dropout 0.1 (the Skyformer/Nystromformer ports; only softmax and kernelized drop attention
weights). The port's code (pkuzengqi/Skyformer `SoftmaxAttention`) is this formula; it also ran
softmax, and only softmax, under gradient checkpointing (docs/lra-reference.md section 5), which
costs time and saves memory; this suite does not (docs/faithfulness.md).

The fast path (impl=fast) per device and phase:
- no attention dropout (evaluation, or dropout=0), or a GPU: torch's scaled_dot_product_attention
  (fused kernels: flash attention on CPU and GPU, dropout inside the kernel on a GPU);
- dropout in training on a CPU: torch's CPU kernels cannot fuse dropout and fall back to the plain
  math, whose Bernoulli sampling alone costs about as much as the rest of the layer, and every
  N x N step allocates a fresh tensor; here the dropout zeros are drawn as 15-bit integers
  (`dropout_drop`), the softmax and its backward run in place, and the padding mask is skipped
  when nothing is padded (`_SoftmaxDropoutAttention`).
The drop probability of both hand-written forms is p rounded to a multiple of 2^-15 (0.100006 for
0.1), kept weights scaled by 1 / (1 - that); SDPA's dropout uses exactly p.

Options:
    dropout (float, 0.1): dropout on the attention weights during training.
    impl ("fast" | "reference", "fast"): `fast` is the path above; `reference` writes the same
        computation out in plain tensor operations (same dropout draws as the CPU training path),
        so the fast path has a plain definition beside it to be tested against.

Cost: O(N^2 d) time; memory O(N^2) for `reference` and CPU training, less where a fused kernel applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from attentions.base import AttentionBase
from attentions.registry import register

_BITS = 15  # random_() on int16 draws uniformly from [0, 2^15)


def drop_threshold(p: float) -> tuple[int, float]:
    """(t, scale): an entry is dropped when its 15-bit draw is < t; kept ones are multiplied by
    scale = 1 / (1 - t / 2^15)."""
    t = round(p * (1 << _BITS))
    return t, 1.0 / (1.0 - t / (1 << _BITS))


def dropout_drop(shape, p: float, device) -> torch.Tensor:
    """Bool mask of the dropped entries, each dropped with probability t / 2^15 (drop_threshold):
    one int16 draw per entry, from the global generator (torch's Bernoulli sampler is about twice
    as slow on a CPU)."""
    return torch.empty(shape, dtype=torch.int16, device=device).random_() < drop_threshold(p)[0]


def softmax_reference(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """Plain softmax attention. q, k, v: (B, H, N, d); mask: (B, N) bool, True = real key."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if training and dropout > 0:
        weights = weights.masked_fill(dropout_drop(weights.shape, dropout, weights.device), 0.0)
        weights = weights * drop_threshold(dropout)[1]
    return weights @ v


class _SoftmaxDropoutAttention(torch.autograd.Function):
    """dropout(softmax(q k^T / sqrt(d) + M)) v. On a CPU a fresh N x N tensor costs about as much
    as a pass over it (page faults), so the N x N work runs in place where it can: the softmax
    overwrites the logits, its backward overwrites the incoming gradient, and the dropout scale
    is applied to the N x d tensors instead. Saves A = softmax, A with the dropped entries zeroed,
    and the drop mask."""

    @staticmethod
    def forward(ctx, q, k, v, mask, p: float):
        scale = 1 / math.sqrt(q.shape[-1])
        a = torch.matmul(q * scale, k.transpose(-2, -1))
        if mask is not None:
            a.masked_fill_(~mask[:, None, None, :], float("-inf"))
        torch.ops.aten._softmax.out(a, -1, False, out=a)  # in place: each row is read before written
        drop = dropout_drop(a.shape, p, a.device)
        a_kept = torch.where(drop, 0.0, a)
        keep_scale = drop_threshold(p)[1]
        ctx.save_for_backward(q, k, v, a, a_kept, drop)
        ctx.scale, ctx.keep_scale = scale, keep_scale
        return (a_kept @ v).mul_(keep_scale)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, a, a_kept, drop = ctx.saved_tensors
        grad = grad * ctx.keep_scale
        grad_v = a_kept.transpose(-2, -1) @ grad
        g = (grad @ v.transpose(-2, -1)).masked_fill_(drop, 0.0)  # d loss / d softmax
        torch.ops.aten._softmax_backward_data.out(g, a, -1, a.dtype, grad_input=g)  # in place, as above
        return (g @ k).mul_(ctx.scale), (g.transpose(-2, -1) @ q).mul_(ctx.scale), grad_v, None, None


def softmax_attention(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """The fast path of the module docstring."""
    p = dropout if training else 0.0
    if p > 0 and q.device.type == "cpu":
        return _SoftmaxDropoutAttention.apply(q, k, v, None if bool(mask.all()) else mask, p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=p)


@register("softmax", complexity="O(N^2 d) time, O(N^2) memory")
class SoftmaxAttention(AttentionBase):
    """Exact softmax attention (Vaswani et al., 2017), the quadratic baseline."""

    @dataclass
    class Options:
        dropout: float = 0.1
        impl: Literal["fast", "reference"] = "fast"

        def __post_init__(self):
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def core(self, q, k, v, mask):
        fn = softmax_reference if self.options.impl == "reference" else softmax_attention
        return fn(q, k, v, mask, self.options.dropout, self.training)
