"""Kernelized attention: the exact Gaussian-kernel attention that Skyformer approximates.

    out = dropout(kappa(Q', K')) V,   kappa(x, y)_ij = exp(-|x_i - y_j|^2 / 2),  Q' = Q d^-1/4, K' = K d^-1/4

with padded keys given weight 0. The rows are NOT normalised (unlike softmax): Skyformer's
paper shows the Gaussian kernel is, up to the query and key norms, the unnormalised softmax
kernel exp(q . k / sqrt(d)), and trains stably without the row sums.

Paper: Chen et al., "Skyformer: Remodel Self-Attention with Gaussian Kernel and Nystrom Method",
NeurIPS 2021 (their "Kernelized Attention" comparator, Table 6 of the PolaFormer paper).

Dropout: the Skyformer port applies its attention dropout (0.1) to this kernel matrix, as softmax
does to its weights; Table 4 / Table 6 used that, so the default keeps it (`dropout` 0.1, training
only). Set dropout=0 for the plain kernel.

Options:
    dropout (float, 0.1): dropout on the kernel matrix during training.

Cost: O(N^2 d) time, O(N^2) memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attentions.base import AttentionBase
from attentions.registry import register


def gaussian_logits(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-|x_i - y_j|^2 / 2 for x (..., n, d), y (..., m, d): (..., n, m)."""
    return x @ y.transpose(-2, -1) - 0.5 * x.square().sum(-1)[..., :, None] - 0.5 * y.square().sum(-1)[..., None, :]


def kernelized_attention(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """Exact Gaussian-kernel attention (module docstring). q, k, v: (B, H, N, d)."""
    s = q.shape[-1] ** -0.25
    logits = gaussian_logits(q * s, k * s).masked_fill(~mask[:, None, None, :], float("-inf"))
    return F.dropout(torch.exp(logits), p=dropout, training=training) @ v


@register("kernelized", complexity="O(N^2 d) time, O(N^2) memory")
class KernelizedAttention(AttentionBase):
    """Exact Gaussian-kernel attention (Chen et al., 2021), the quadratic sibling of Skyformer."""

    @dataclass
    class Options:
        dropout: float = 0.1

        def __post_init__(self):
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def core(self, q, k, v, mask):
        return kernelized_attention(q, k, v, mask, self.options.dropout, self.training)
