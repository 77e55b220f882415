"""Performer (FAVOR+): softmax attention estimated with positive orthogonal random features.

    softmax kernel:  exp(q . k / sqrt(d)) = E_w[ phi(q') phi(k') ],   q' = q d^-1/4, k' = k d^-1/4
    phi(x) = m^-1/2 [ exp(w_r . x - |x|^2 / 2 - c) + eps ]_{r=1..m}        (m features, W = [w_r])
    out_i  = phi(q'_i) (sum_j phi(k'_j)^T v_j) / (phi(q'_i) . sum_j phi(k'_j))   (real keys j only)

Paper: Choromanski et al., "Rethinking Attention with Performers", ICLR 2021. W stacks orthogonal
d x d blocks (QR of a Gaussian matrix) whose rows are rescaled to chi-distributed norms (the
norms of Gaussian vectors), so every row is marginally N(0, I) and the estimate stays unbiased
with lower variance. c is a stabiliser that cancels between numerator and denominator: the max
over features per query row, and the max over the real keys of a (sequence, head) for keys (the
port's max over the whole batch, padding included, made a sequence's output depend on its
neighbours). eps (1e-4, as in the JAX and PyTorch reference code) keeps features positive so the
denominator never vanishes for far-apart inputs.

Differences from the Skyformer/Nystromformer port (lra-reference.md section 6): the port scaled q
and k by d^-1/4 twice and so estimated exp(q . k / d); here it is exp(q . k / sqrt(d)), the softmax
attention of the other methods. The port never redrew W; `redraw` makes it an option. Padded keys
get zero features (the port gave them eps features that entered the denominator).

Options:
    features (int, 128): number of random features m (lra-reference section 4: m = 128).
    redraw (bool, False): draw a new W at every training forward (never in eval). W is a buffer,
        drawn from the global generator at construction (seeded, saved in the state dict).
    kernel_eps (float, 1e-4): the positive floor eps added to every feature.

Cost: O(N m d) time, O(N m + m d) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attentions.base import AttentionBase, linear_attention
from attentions.registry import register


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(m, d) random matrix: stacked orthogonal d x d blocks, rows rescaled to chi(d) norms."""
    g = torch.randn(math.ceil(m / d), d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)  # one QR per block, batched
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar-uniform blocks
    w = q.transpose(-2, -1).reshape(-1, d)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).float()


def favor_features(x, w, mask, is_query: bool, eps: float):
    """phi(x) of the module docstring; x already scaled by d^-1/4. mask=None: queries."""
    proj = x @ w.T.to(x.dtype)  # (B, H, N, m)
    logits = proj - 0.5 * x.square().sum(-1, keepdim=True)
    if is_query:
        c = logits.amax(-1, keepdim=True)
    else:  # one constant per (sequence, head), over real keys only
        # padded keys are masked BEFORE the exponential: exp of their logits could overflow, and
        # inf * 0 is NaN
        logits = logits.masked_fill(~mask[:, None, :, None], float("-inf"))
        c = logits.amax((-2, -1), keepdim=True)
        c = torch.nan_to_num(c, neginf=0.0)  # a sequence with no real token
    return (torch.exp(logits - c) + eps) / math.sqrt(w.shape[0])


@register("performer", complexity="O(N m d) time, O(N m) memory")
class PerformerAttention(AttentionBase):
    """Performer FAVOR+ (Choromanski et al., 2021): orthogonal positive random features for softmax."""

    linear_memory = True

    @dataclass
    class Options:
        features: int = 128
        redraw: bool = False
        kernel_eps: float = 1e-4

        def __post_init__(self):
            if self.features < 1:
                raise ValueError(f"features must be >= 1, got {self.features}")
            if not self.kernel_eps > 0:
                raise ValueError(f"kernel_eps must be > 0, got {self.kernel_eps}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        self.register_buffer("projection", orthogonal_gaussian(options.features, self.head_dim))

    @torch.no_grad()
    def redraw_features(self) -> None:
        w = orthogonal_gaussian(self.options.features, self.head_dim)
        self.projection.copy_(w.to(self.projection.device))

    def core(self, q, k, v, mask):
        if self.options.redraw and self.training:
            self.redraw_features()
        s = self.head_dim ** -0.25
        phi_q = favor_features(q * s, self.projection, None, True, self.options.kernel_eps)
        phi_k = favor_features(k * s, self.projection, mask, False, self.options.kernel_eps)
        return linear_attention(phi_q, phi_k, v, mask, eps=0.0)
