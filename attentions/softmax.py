"""Softmax attention: the quadratic baseline every efficient method is measured against.

    Attn(Q, K, V) = dropout(softmax(Q K^T / sqrt(d) + M)) V,   M_ij = -inf where key j is padding

Paper: Vaswani et al., "Attention Is All You Need", NeurIPS 2017. LRA setup: attention-matrix
dropout 0.1 (the Skyformer/Nystromformer ports; no other method in the suite drops attention
weights).

Options:
    dropout (float, 0.1): dropout on the attention weights during training.
    impl ("fast" | "reference", "fast"): `fast` calls torch's scaled_dot_product_attention
        (fused kernels, no N x N matrix kept for backward where a fused kernel applies);
        `reference` writes the same computation out in plain tensor operations, so the fast
        path has a plain definition beside it to be tested against.

Cost: O(N^2 d) time; memory O(N^2) for `reference`, less for `fast` where a fused kernel applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from attentions.base import AttentionBase
from attentions.registry import register


def softmax_reference(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """Plain softmax attention. q, k, v: (B, H, N, d); mask: (B, N) bool, True = real key."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = F.dropout(weights, p=dropout, training=training)
    return weights @ v


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
        p = self.options.dropout if self.training else 0.0
        if self.options.impl == "reference":
            return softmax_reference(q, k, v, mask, p, self.training)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=p)
