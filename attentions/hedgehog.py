"""Hedgehog: linear attention with a learnable, spiky feature map trained to mimic softmax.

    phi_h(x) = [softmax(x W_h + b_h), softmax(-(x W_h + b_h))]     (2f features, per head h)
    out_i = phi_q(q_i) (sum_j phi_k(k_j)^T v_j) / (phi_q(q_i) . sum_j phi_k(k_j) + eps)   (real keys)

Paper: Zhang et al., "The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax
Mimicry", ICLR 2024. Queries and keys have their own maps (W_q, W_k: (H, d, f), biases (H, f)).

Sources (docs/faithfulness.md). The FORM is the one of the authors' code as released with LoLCATs
(HazyResearch/lolcats `src/model/feature_map.py`): two SEPARATE softmaxes, over the f features of
x W and of -x W (`SoftmaxDim`), with untied per-head weights (H, d, f) (`FeatureMapMLP`,
"untied_head_einsum"). The fla library's HedgehogFeatureMap (fla-org/flash-linear-attention
`fla/modules/feature_map.py`) is a different form, ONE softmax over the 2d features
[2 (x W + b), -2 (x W + b)] with one Linear(d, d) shared by the heads (fla issue #195 notes the
discrepancy); only the INITIALISATION here follows fla: W = identity, b = 0, so training starts
from [softmax(x), softmax(-x)]. LoLCATs's configs instead start from a Kaiming-uniform W
(`zero_init: false`) without bias, and clamp the features at 1e-12 (not done here: a softmax is
positive). Feature counts: the LoLCATs configs use feature_dim 64 PER HALF (128 features per
head, at a head dim of 128); here f defaults to the head dim (32 in the paper model, 64 features
per head), which keeps the identity initialisation exact; feature_dim=64 gives their count.

Softmax mimicry (option `distill`): during a training forward the layer sets `self.aux_loss` to
distill_weight x the cross-entropy between the softmax attention weights softmax(q k^T / sqrt(d))
(over real keys; the teacher, detached) and Hedgehog's own normalised weights
A_ij = phi_q(q_i) . phi_k(k_j) / sum_j' phi_q(q_i) . phi_k(k_j'); the training loop adds it to the
task loss and records its mean (`aux_loss_mean`). It is quadratic in N, so it is computed for
`distill_queries` query rows drawn uniformly among the real tokens of each sequence (an unbiased
estimate of the mean over all rows; 0 = every row, exactly). The paper distils into a frozen
pretrained softmax model; whether its LRA runs did so or trained end to end is not settled by
public code, so both are here: end to end (distill=False) by default, and the options recorded
with each result say which ran.

Options:
    feature_dim (int | None, None): f, the width of each softmax half, 2f features in all (None =
        head dim, so the identity init is exact; the LoLCATs configs use f = 64 per half).
    impl ("fast" | "reference", "fast"): `reference` computes the same output with the N x N
        matrix A (the reference form, for tests and attention maps).
    eps (float, 1e-6): added to the denominator.
    distill (bool, False): add the softmax-mimicry loss during training.
    distill_weight (float, 1.0): weight of that loss.
    distill_queries (int, 256): query rows per sequence the loss is computed on (0 = all).

Cost: O(N f d) time, O(N f + f d) memory (the distillation loss adds O(r N) for r query rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import nn

from attentions.base import AttentionBase, key_mask, linear_attention, quadratic_linear_attention, sample_real
from attentions.registry import register


class HedgehogFeatureMap(nn.Module):
    """Per-head phi(x) = [softmax(x W + b), softmax(-(x W + b))], W identity-initialised."""

    def __init__(self, heads: int, head_dim: int, feature_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(head_dim, feature_dim).repeat(heads, 1, 1))  # (H, d, f)
        self.bias = nn.Parameter(torch.zeros(heads, 1, feature_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.einsum("bhnd,hdf->bhnf", x, self.weight.to(x.dtype)) + self.bias.to(x.dtype)
        return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)


def mimicry_loss(phi_q, phi_k, q, k, mask, eps: float, rows: int) -> torch.Tensor:
    """Cross-entropy of Hedgehog's attention weights against the softmax weights (the teacher),
    averaged over `rows` sampled real query rows per sequence (all rows if rows == 0)."""
    if rows:
        pos = sample_real(mask, (rows,))  # (B, r)
        B, H, _, _ = q.shape
        pick = lambda x: x.gather(2, pos[:, None, :, None].expand(B, H, rows, x.shape[-1]))
        phi_q, q = pick(phi_q), pick(q)
        # each sampled row stands for n_b / r rows of its sequence: the estimate is unbiased for
        # the mean over every real query row of the batch
        row_weight = mask.sum(-1, keepdim=True).to(q.dtype).expand(pos.shape)
    else:
        row_weight = mask.to(q.dtype)
    off = ~mask[:, None, None, :]
    with torch.no_grad():
        teacher = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(off, float("-inf")), -1)
    a = (phi_q @ (phi_k * key_mask(mask, phi_k.dtype)).transpose(-2, -1))
    a = a / (a.sum(-1, keepdim=True) + eps)
    ce = -(teacher * torch.log(a.clamp(min=1e-12))).sum(-1)  # (B, H, r)
    w = row_weight[:, None, :].expand_as(ce)
    return (ce * w).sum() / w.sum().clamp(min=1)


@register("hedgehog", complexity="O(N f d) time, O(N f) memory")
class HedgehogAttention(AttentionBase):
    """Hedgehog (Zhang et al., 2024): learnable [softmax(xW), softmax(-xW)] features, linear attention."""

    linear_memory = True

    @dataclass
    class Options:
        feature_dim: Optional[int] = None
        impl: Literal["fast", "reference"] = "fast"
        eps: float = 1e-6
        distill: bool = False
        distill_weight: float = 1.0
        distill_queries: int = 256

        def __post_init__(self):
            if self.feature_dim is not None and self.feature_dim < 1:
                raise ValueError(f"feature_dim must be >= 1 (or None for the head dim), got {self.feature_dim}")
            if not self.eps > 0:
                raise ValueError(f"eps must be > 0, got {self.eps}")
            if not self.distill_weight >= 0:
                raise ValueError(f"distill_weight must be >= 0, got {self.distill_weight}")
            if self.distill_queries < 0:
                raise ValueError(f"distill_queries must be >= 0 (0 = all rows), got {self.distill_queries}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        f = options.feature_dim or self.head_dim
        self.feature_q = HedgehogFeatureMap(heads, self.head_dim, f)
        self.feature_k = HedgehogFeatureMap(heads, self.head_dim, f)

    def core(self, q, k, v, mask):
        o = self.options
        phi_q, phi_k = self.feature_q(q), self.feature_k(k)
        self.aux_loss = None
        if o.distill and self.training and torch.is_grad_enabled():
            self.aux_loss = o.distill_weight * mimicry_loss(phi_q, phi_k, q, k, mask, o.eps, o.distill_queries)
        if o.impl == "reference":
            return quadratic_linear_attention(phi_q, phi_k, v, mask, o.eps)[0]
        return linear_attention(phi_q, phi_k, v, mask, o.eps)
