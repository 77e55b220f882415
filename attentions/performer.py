"""Performer (FAVOR+): softmax attention estimated with positive orthogonal random features.

    softmax kernel:  exp(q . k / sqrt(d)) = E_w[ phi(q') phi(k') ],   q' = q d^-1/4, k' = k d^-1/4
    phi(x) = m^-1/2 [ exp(w_r . x - |x|^2 / 2 - c) + eps ]_{r=1..m}        (m features, W = [w_r])
    out_i  = phi(q'_i) (sum_j phi(k'_j)^T v_j) / (phi(q'_i) . sum_j phi(k'_j))   (real keys j only)

Paper: Choromanski et al., "Rethinking Attention with Performers", ICLR 2021. W stacks orthogonal
d x d blocks (QR of a Gaussian matrix) whose rows are rescaled to chi-distributed norms (the
norms of Gaussian vectors), so every row is marginally N(0, I) and the estimate stays unbiased
with lower variance. eps (1e-4, as in the JAX and PyTorch reference code) keeps features positive
so the denominator never vanishes for far-apart inputs.

The stabiliser c. Without eps it would cancel between numerator and denominator; with the eps
floor it does not: it sets how large the exponential part is next to eps, so it changes the
output (docs/faithfulness.md measures by how much). The reference that produced the published
PyTorch numbers is the Skyformer port's vendored copy of performer-pytorch (`softmax_kernel`,
itself transcribed from the JAX FAVOR+ code of google-research `performer/fast_attention`):
c = the maximum of w . x' (not of w . x' - |x'|^2 / 2), over the features of each row for a
query, over every feature and key of a (sequence, head) for keys in the JAX code. performer-pytorch
took one key maximum over the whole (batch, heads, keys, features) tensor instead, so a sequence's
output depends on the other sequences of its batch (and so on the batch size at evaluation) and
a head's on the other heads: a plain bug, which the default does not copy (`stabiliser=wx-batch`
reproduces it).

Other differences from the port (docs/lra-reference.md section 6, docs/faithfulness.md): the port
scaled q and k by d^-1/4 twice and so estimated exp(q . k / d); here it is exp(q . k / sqrt(d)),
the softmax attention of the other methods. The port never redrew W; `redraw` makes it an option.
Padded keys get zero features (the port gave them eps features that entered the denominator, so
the amount of padding changed the output).

Options:
    features (int, 128): number of random features m (docs/lra-reference.md section 4: m = 128).
    redraw (bool, False): draw a new W at every training forward (never in eval). W is a buffer,
        drawn from the global generator at construction (seeded, saved in the state dict).
    kernel_eps (float, 1e-4): the positive floor eps added to every feature.
    stabiliser ("wx" | "wx-batch" | "logit", "wx"): the c subtracted before the exponential.
        `wx`: the reference rule, the maximum of w . x' over the features of each query row, and
        over all features and real keys of each (sequence, head) for keys. `wx-batch`: the same
        with one key maximum over the real keys of every sequence and head of the batch, as
        performer-pytorch (a coupling bug, for reproducing the port). `logit`: the maximum of
        w . x' - |x'|^2 / 2 instead (this project's earlier rule; less accurate at m = 128).
    impl ("fast" | "reference", "fast"): `fast` folds the stabiliser, the key mask and the
        normaliser into per-row terms and one augmented value matrix; `reference` writes the
        feature map out plainly and forms the N x N matrix (for tests).

Cost: O(N m d) time, O(N m + m d) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from attentions.base import AttentionBase, quadratic_linear_attention
from attentions.registry import register

Stabiliser = Literal["wx", "wx-batch", "logit"]


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(m, d) random matrix: stacked orthogonal d x d blocks, rows rescaled to chi(d) norms."""
    g = torch.randn(math.ceil(m / d), d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)  # one QR per block, batched
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar-uniform blocks
    w = q.transpose(-2, -1).reshape(-1, d)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).float()


def _key_max(rows: torch.Tensor, mask: torch.Tensor, batch: bool) -> torch.Tensor:
    """Maximum of rows (B, H, N, 1) over the real keys of each (sequence, head), or of the whole
    batch: (B, H, 1, 1) or (1, 1, 1, 1). 0 where there is no real key."""
    rows = rows.masked_fill(~mask[:, None, :, None], float("-inf"))
    c = rows.amax((0, 1, 2), keepdim=True) if batch else rows.amax(-2, keepdim=True)
    return torch.nan_to_num(c, neginf=0.0)


def favor_features_reference(x, w, mask, is_query: bool, stabiliser: str, eps: float):
    """phi(x) of the module docstring written out; x already scaled by d^-1/4. Padded keys get
    eps / sqrt(m) here; the reference attention leaves them out through its mask."""
    proj = x @ w.T.to(x.dtype)  # (B, H, N, m)
    logits = proj - 0.5 * x.square().sum(-1, keepdim=True)
    source = logits if stabiliser == "logit" else proj
    if is_query:
        c = source.amax(-1, keepdim=True)
    else:
        off = ~mask[:, None, :, None]
        source = source.masked_fill(off, float("-inf"))
        c = source.amax((0, 1, 2, 3) if stabiliser == "wx-batch" else (-2, -1), keepdim=True)
        c = torch.nan_to_num(c, neginf=0.0)  # a sequence with no real token
        logits = logits.masked_fill(off, float("-inf"))  # before exp: exp of a padded logit may overflow
    return (torch.exp(logits - c) + eps) / math.sqrt(w.shape[0])


def favor_features(x, w_scaled, scale: float, mask, is_query: bool, stabiliser: str, eps: float):
    """The same features as `favor_features_reference` for the UNSCALED x, computed as
    exp(x W_s^T - a) + eps / sqrt(m), W_s = scale W^T, with everything else in the per-row term
    a (B, H, N, 1) = |x'|^2 / 2 + c - log m^-1/2. Padded keys get a = +inf, so exp(-inf) = 0
    there without a mask over the (B, H, N, m) features (their eps floor is removed later by the
    zero rows of the augmented values)."""
    proj = x @ w_scaled  # (B, H, N, m)
    half_sq = (0.5 * scale * scale) * x.square().sum(-1, keepdim=True)  # |x'|^2 / 2
    row_max = proj.amax(-1, keepdim=True)
    if is_query:  # c = max_r w.x' ('wx') or max_r w.x' - |x'|^2/2 ('logit')
        a = row_max if stabiliser == "logit" else half_sq + row_max
    else:
        source = row_max - half_sq if stabiliser == "logit" else row_max
        a = half_sq + _key_max(source, mask, stabiliser == "wx-batch")
        a = a.masked_fill(~mask[:, None, :, None], float("inf"))
    m = w_scaled.shape[-1]
    return torch.exp(proj - (a + 0.5 * math.log(m))) + eps / math.sqrt(m)


def favor_attention(phi_q, phi_k, v, mask):
    """Normalised linear attention over real keys with one value matrix [v, 1] zeroed at padding:
    phi_k^T [v, 1] holds sum_j phi_k_j^T v_j and sum_j phi_k_j, and phi_q times it holds the
    numerator and the denominator, so there is no separate key mask, key sum or denominator
    product."""
    m = mask[:, None, :, None].to(v.dtype)
    v_aug = torch.cat([v * m, m.expand(*v.shape[:-1], 1)], dim=-1)  # (B, H, N, d + 1)
    out = phi_q @ (phi_k.transpose(-2, -1) @ v_aug)
    return out[..., :-1] / out[..., -1:]


@register("performer", complexity="O(N m d) time, O(N m) memory")
class PerformerAttention(AttentionBase):
    """Performer FAVOR+ (Choromanski et al., 2021): orthogonal positive random features for softmax."""

    linear_memory = True

    @dataclass
    class Options:
        features: int = 128
        redraw: bool = False
        kernel_eps: float = 1e-4
        stabiliser: Stabiliser = "wx"
        impl: Literal["fast", "reference"] = "fast"

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
        o = self.options
        if o.redraw and self.training:
            self.redraw_features()
        s = self.head_dim ** -0.25
        if o.impl == "reference":
            phi_q = favor_features_reference(q * s, self.projection, mask, True, o.stabiliser, o.kernel_eps)
            phi_k = favor_features_reference(k * s, self.projection, mask, False, o.stabiliser, o.kernel_eps)
            return quadratic_linear_attention(phi_q, phi_k, v, mask, eps=0.0)[0]
        w_s = (self.projection.T * s).to(q.dtype)  # (d, m)
        phi_q = favor_features(q, w_s, s, mask, True, o.stabiliser, o.kernel_eps)
        phi_k = favor_features(k, w_s, s, mask, False, o.stabiliser, o.kernel_eps)
        return favor_attention(phi_q, phi_k, v, mask)
