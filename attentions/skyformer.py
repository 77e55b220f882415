"""Skyformer: Gaussian-kernel attention approximated by the Nystrom method on the stacked [Q; K].

    kappa(x, y) = exp(-|x - y|^2 / 2),  Q' = Q d^-1/4, K' = K d^-1/4   (the `kernelized` attention)
    S = m landmarks drawn uniformly among the real tokens: m/2 rows of Q', m/2 rows of K'
    C = kappa(S, S) + gamma I,   D = diag(C 1)                  (symmetric degree normalisation)
    out = kappa(Q', S) D^-1/2 pinv(D^-1/2 C D^-1/2) D^-1/2 kappa(S, K') V    (real keys only)

which approximates kappa(Q', K') V without forming it. The rows are not normalised (the kernel
is not a softmax); pinv is Nystromformer's iterative pseudo-inverse with the same 6 iterations
(`attentions.nystrom.iterative_pinv`): the normalised C has spectral radius 1 and its max
column sum bounds its squared norm, so the iteration converges from Z0 = C^T / max column sum
(of each matrix; the port's one maximum over the batch is option `pinv_init`, docs/faithfulness.md).

Paper: Chen et al., "Skyformer: Remodel Self-Attention with Gaussian Kernel and Nystrom Method",
NeurIPS 2021; this follows their LRA code (pkuzengqi/Skyformer, `kernel_RS_RBF`, accumulation 1,
128 features). Landmarks come from one uniform draw shared by the batch and scaled by each
sequence's real length (as the port does), so no landmark is ever a padded token, and padding
(content or amount) changes nothing. The draw uses the global generator: it is seeded, and a new
set is drawn at every forward, in training and in evaluation, as in the port.

Options:
    landmarks (int, 128): number of landmarks m (docs/lra-reference.md section 4).
    gamma (float, 0.1): the regulariser added to the landmark kernel's diagonal.
    pinv_iters (int, 6): iterations of the pseudo-inverse.
    pinv_init ("matrix" | "batch", "matrix"): Z0 of the pseudo-inverse divides by the max column
        sum of each matrix, or (`batch`, the port's `iterative_inv`, a plain bug kept for
        reproducing it) of all matrices of the batch, tying each sequence to its neighbours.

Cost: O(N m d + m^3) time, O(N m + m^2) memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from attentions.base import AttentionBase, key_mask, sample_real
from attentions.kernelized import gaussian_logits
from attentions.nystrom import iterative_pinv
from attentions.registry import register


def gather_rows(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, d), pos (B, r) -> (B, H, r, d)."""
    B, H, _, d = x.shape
    return x.gather(2, pos[:, None, :, None].expand(B, H, pos.shape[1], d))


def skyformer_attention(q, k, v, mask, landmarks: int, gamma: float, pinv_iters: int, pinv_init: str = "matrix"):
    """The module docstring's formula. q, k, v: (B, H, N, d)."""
    km = key_mask(mask, q.dtype)
    s = q.shape[-1] ** -0.25
    q, k, v = q * s * km, k * s * km, v * km
    pos = sample_real(mask, (landmarks,))  # (B, m)
    half = landmarks // 2
    lm = torch.cat([gather_rows(q, pos[:, :half]), gather_rows(k, pos[:, half:])], dim=2)  # (B, H, m, d)
    c = torch.exp(gaussian_logits(lm, lm))
    c = c + gamma * torch.eye(landmarks, dtype=c.dtype, device=c.device)
    d_isqrt = c.sum(-1).rsqrt()  # (B, H, m)
    z = iterative_pinv(d_isqrt[..., :, None] * c * d_isqrt[..., None, :], pinv_iters, pinv_init)
    k_feat = torch.exp(gaussian_logits(k, lm)) * km  # (B, H, N, m), zero at padded keys
    # context = (kappa(K', S) D^-1/2 Z D^-1/2)^T V, multiplied right to left (no N x m x m product)
    dcol = d_isqrt[..., :, None]
    context = dcol * (z.transpose(-2, -1) @ (dcol * (k_feat.transpose(-2, -1) @ v)))  # (B, H, m, d)
    return torch.exp(gaussian_logits(q, lm)) @ context


@register("skyformer", complexity="O(N m d + m^3) time, O(N m) memory")
class SkyformerAttention(AttentionBase):
    """Skyformer (Chen et al., 2021): Gaussian-kernel attention by Nystrom on [Q; K] landmarks."""

    linear_memory = True

    @dataclass
    class Options:
        landmarks: int = 128
        gamma: float = 0.1
        pinv_iters: int = 6
        pinv_init: Literal["matrix", "batch"] = "matrix"

        def __post_init__(self):
            if self.landmarks < 1:
                raise ValueError(f"landmarks must be >= 1, got {self.landmarks}")
            if not self.gamma >= 0:
                raise ValueError(f"gamma must be >= 0, got {self.gamma}")
            if self.pinv_iters < 0:
                raise ValueError(f"pinv_iters must be >= 0, got {self.pinv_iters}")

    def core(self, q, k, v, mask):
        o = self.options
        return skyformer_attention(q, k, v, mask, o.landmarks, o.gamma, o.pinv_iters, o.pinv_init)
