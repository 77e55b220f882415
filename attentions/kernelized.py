"""Kernelized attention: the exact Gaussian-kernel attention that Skyformer approximates.

    out = dropout(kappa(Q', K')) V,   kappa(x, y)_ij = exp(-|x_i - y_j|^2 / 2),  Q' = Q d^-1/4, K' = K d^-1/4

with padded keys given weight 0. The rows are NOT normalised (unlike softmax): Skyformer's
paper shows the Gaussian kernel is, up to the query and key norms, the unnormalised softmax
kernel exp(q . k / sqrt(d)), and trains stably without the row sums.

Paper: Chen et al., "Skyformer: Remodel Self-Attention with Gaussian Kernel and Nystrom Method",
NeurIPS 2021 (their "Kernelized Attention" comparator, Table 6 of the PolaFormer paper). The port's
code (pkuzengqi/Skyformer `SoftmaxAttention_RBF`) computes the same kernel; docs/faithfulness.md.

Dropout: the Skyformer port applies its attention dropout (0.1) to this kernel matrix, as softmax
does to its weights; Table 4 / Table 6 used that, so the default keeps it (`dropout` 0.1, training
only). Set dropout=0 for the plain kernel. Both forms draw the dropped entries as softmax's CPU
path does (`attentions.softmax.dropout_drop`: one 15-bit uniform integer per entry, so the drop
probability is p rounded to a multiple of 2^-15, 0.100006 for 0.1, and kept entries are scaled by
1 / (1 - that)); drawing integers is about twice as fast on a CPU as torch's Bernoulli sampler.

The fast form (impl=fast) builds the N x N logits in ONE matrix product of augmented rows,
[q', -|q'|^2 / 2 + log s, 1] . [k', 1, -|k'|^2 / 2] = q'.k' - |q'|^2 / 2 - |k'|^2 / 2 + log s with
s the dropout scale, a padded key's row being [0, 0, -1e30], so there is no mask fill and no
broadcast subtraction over N x N; then exp and the dropout zeros in place, and a hand-written
backward that keeps only the dropped kernel matrix A (d out / d logits = A itself).

Options:
    dropout (float, 0.1): dropout on the kernel matrix during training.
    impl ("fast" | "reference", "fast"): the one-product form with its own backward, or the
        formula written out with autograd (for tests).

Cost: O(N^2 d) time, O(N^2) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from attentions.base import AttentionBase
from attentions.registry import register
from attentions.softmax import drop_threshold, dropout_drop

_PADDED_LOGIT = -1e30  # exp of it is 0 in float32 and float64; finite, so 0 * it = 0 in backward


def gaussian_logits(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-|x_i - y_j|^2 / 2 for x (..., n, d), y (..., m, d): (..., n, m)."""
    return x @ y.transpose(-2, -1) - 0.5 * x.square().sum(-1)[..., :, None] - 0.5 * y.square().sum(-1)[..., None, :]


def kernelized_reference(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """The module docstring's formula written out. q, k, v: (B, H, N, d)."""
    s = q.shape[-1] ** -0.25
    logits = gaussian_logits(q * s, k * s).masked_fill(~mask[:, None, None, :], float("-inf"))
    kernel = torch.exp(logits)
    if training and dropout > 0:
        kernel = kernel.masked_fill(dropout_drop(kernel.shape, dropout, kernel.device), 0.0)
        kernel = kernel * drop_threshold(dropout)[1]
    return kernel @ v


class _KernelTimesV(torch.autograd.Function):
    """exp(Qa Ka^T) with dropout zeros, times V; saves only that matrix A for backward."""

    @staticmethod
    def forward(ctx, qa, ka, v, p: float):
        a = torch.matmul(qa, ka.transpose(-2, -1)).exp_()
        if p > 0:
            a.masked_fill_(dropout_drop(a.shape, p, a.device), 0.0)
        ctx.save_for_backward(qa, ka, v, a)
        return a @ v

    @staticmethod
    def backward(ctx, grad):
        qa, ka, v, a = ctx.saved_tensors
        grad_v = a.transpose(-2, -1) @ grad
        grad_logits = (grad @ v.transpose(-2, -1)).mul_(a)  # d exp(L) * keep * s / dL = that matrix
        return grad_logits @ ka, grad_logits.transpose(-2, -1) @ qa, grad_v, None


def kernelized_attention(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """The same output as `kernelized_reference` (module docstring: the augmented product)."""
    s = q.shape[-1] ** -0.25
    p = dropout if training else 0.0
    log_scale = math.log(drop_threshold(p)[1]) if p > 0 else 0.0
    m = mask[:, None, :, None]
    q, k = q * s, (k * s).masked_fill(~m, 0.0)
    ones = torch.ones_like(q[..., :1])
    qa = torch.cat([q, log_scale - 0.5 * q.square().sum(-1, keepdim=True), ones], dim=-1)
    k_norm = (-0.5 * k.square().sum(-1, keepdim=True)).masked_fill(~m, _PADDED_LOGIT)
    ka = torch.cat([k, m.to(k.dtype).expand_as(k_norm), k_norm], dim=-1)
    return _KernelTimesV.apply(qa, ka, v, p)


@register("kernelized", complexity="O(N^2 d) time, O(N^2) memory")
class KernelizedAttention(AttentionBase):
    """Exact Gaussian-kernel attention (Chen et al., 2021), the quadratic sibling of Skyformer."""

    @dataclass
    class Options:
        dropout: float = 0.1
        impl: Literal["fast", "reference"] = "fast"

        def __post_init__(self):
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def core(self, q, k, v, mask):
        fn = kernelized_reference if self.options.impl == "reference" else kernelized_attention
        return fn(q, k, v, mask, self.options.dropout, self.training)
