"""Nystromformer: softmax attention through the Nystrom approximation with segment-mean landmarks.

    Q~, K~ = means of m contiguous segments of the real tokens of Q and K   (m landmarks)
    out = softmax(Q K~^T / sqrt(d)) pinv(softmax(Q~ K~^T / sqrt(d))) softmax(Q~ K^T / sqrt(d) + M) V
          [+ conv(V)]                                  M_ij = -inf where key j is padding

Paper: Xiong et al., "Nystromformer: A Nystrom-Based Algorithm for Approximating
Self-Attention", AAAI 2021. pinv is the iterative Moore-Penrose approximation of the paper,
Z <- 1/4 Z (13 I - A Z (15 I - A Z (7 I - A Z))), from Z0 = A^T / (max column sum of A), per
matrix (the port took one max over the whole batch, which ties a sequence to its neighbours;
option `pinv_init`, docs/faithfulness.md).
Since softmax rows sum to 1, that Z0 is the paper's A^T / (|A|_1 |A|_inf) and the iteration
converges.

Landmarks are computed over the REAL tokens of each sequence only: real token r of a sequence
with n real tokens falls in segment floor(r m / n), so segments differ by at most one token when
n is not a multiple of m, and padding (content or amount) changes nothing. The port averaged
fixed N / m blocks of the zero-masked padded sequence, so landmarks near the end mixed padding
zeros in (xformers issue 360 had NaNs from the same cause). A sequence shorter than m uses its n
tokens as n landmarks (the rest are switched off), which makes the method exact softmax there.

Options:
    landmarks (int, 128): number of landmarks m (docs/lra-reference.md section 4).
    pinv_iters (int, 6): iterations of the pseudo-inverse (the paper's 6).
    pinv_init ("matrix" | "batch", "matrix"): Z0 of the pseudo-inverse divides by the max column
        sum of each matrix, or (`batch`, the port's rule, a plain bug kept for reproducing it) of
        all matrices of the batch, so that each sequence's output depends on its neighbours.
    conv_kernel (int, 0): kernel of the depthwise convolution skip on V (one kernel per head,
        shared by the head's channels, no bias, as in the original code); 0 = off. Off by default
        because the Skyformer setup that Table 4 / Table 6 used ran without it; the original
        Nystromformer LRA configs used 35.
    impl ("fast" | "reference", "fast"): `fast` scales and masks as little as the inputs need
        (see `nystrom_attention`); `reference` writes the formula out (for tests).

Cost: O(N m d + m^3) time, O(N m + m^2) memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from attentions.base import AttentionBase, key_mask, real_rank, sequence_conv
from attentions.registry import register


def iterative_pinv(a: torch.Tensor, iters: int = 6, init: str = "matrix") -> torch.Tensor:
    """Newton-Schulz-type approximation of pinv(a) for a (..., m, m) matrix whose spectral norm
    squared is at most its max column sum (true for row-stochastic and for degree-normalised
    kernel matrices), from Z0 = a^T / max column sum of each matrix (init="matrix"), or of the
    whole batch of matrices (init="batch": the ports' `torch.max` over every sequence and head,
    which makes each sequence's result depend on the others)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    col = a.sum(-2)
    z = a.transpose(-2, -1) / (col.amax() if init == "batch" else col.amax(-1)[..., None, None])
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def segment_means(x: torch.Tensor, mask: torch.Tensor, m: int):
    """Landmarks of x (B, H, N, d) over real tokens: (B, H, m, d) and the (B, m) mask of landmarks
    in use (m_b = min(m, n_b) of them)."""
    n = mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    m_b = n.clamp(max=m)
    seg = torch.div(real_rank(mask) * m_b, n, rounding_mode="floor")  # (B, N) in [0, m_b)
    pool = (seg[..., None] == torch.arange(m, device=x.device)).to(x.dtype) * mask[..., None].to(x.dtype)  # (B, N, m)
    counts = pool.sum(1)  # (B, m)
    pool = pool / counts.clamp(min=1)[:, None, :]
    return torch.einsum("bnm,bhnd->bhmd", pool, x), counts > 0


def nystrom_reference(q, k, v, mask, landmarks: int, pinv_iters: int, pinv_init: str = "matrix"):
    """The module docstring's formula without the convolution, written out. q, k, v: (B, H, N, d)."""
    s = q.shape[-1] ** -0.25
    km = key_mask(mask, q.dtype)
    q, k = q * km * s, k * km * s  # the padded rows are never read below; zeroing keeps them finite
    q_l, valid = segment_means(q, mask, landmarks)
    k_l, _ = segment_means(k, mask, landmarks)
    off = ~valid[:, None, None, :]  # landmarks not in use, as keys
    kernel_1 = torch.softmax((q @ k_l.transpose(-2, -1)).masked_fill(off, float("-inf")), dim=-1)
    kernel_2 = torch.softmax((q_l @ k_l.transpose(-2, -1)).masked_fill(off, float("-inf")), dim=-1)
    eye = torch.eye(landmarks, dtype=q.dtype, device=q.device)
    kernel_2 = torch.where(valid[:, None, :, None], kernel_2, eye)  # unused landmarks: identity block
    kernel_3 = torch.softmax((q_l @ k.transpose(-2, -1)).masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
    # right to left: (m x N)(N x d), (m x m)(m x d), (N x m)(m x d); never an N x m x m product
    return kernel_1 @ (iterative_pinv(kernel_2, pinv_iters, pinv_init) @ (kernel_3 @ v))


def landmarks_of(x: torch.Tensor, mask: torch.Tensor, m: int, equal_segments: bool):
    """segment_means, by a reshape when every sequence is N real tokens and m divides N (all
    segments N / m long: the port's pooling), else by the general pooling."""
    B, H, N, d = x.shape
    if equal_segments:
        return x.view(B, H, m, N // m, d).mean(-2), None
    return segment_means(x, mask, m)


def nystrom_attention(q, k, v, mask, landmarks: int, pinv_iters: int, pinv_init: str = "matrix"):
    """The same output as `nystrom_reference` with less work on the N-long tensors: the scale
    1 / sqrt(d) is applied once, to q only (landmarks of q carry it); keys are not masked (their
    landmarks pool real tokens only, and kernel_3 masks padded keys); the masks are skipped on the
    CPU when nothing is padded and every sequence has at least m tokens (checking is free there;
    on a GPU it would cost a synchronisation, and the fills cost little)."""
    B, H, N, d = q.shape
    m = landmarks
    n = mask.sum(-1)
    cpu = mask.device.type == "cpu"
    unpadded = cpu and bool((n == N).all())
    q = q * (key_mask(mask, q.dtype) * d ** -0.5)  # zero padded rows: finite whatever they hold
    equal = unpadded and N % m == 0
    q_l, valid = landmarks_of(q, mask, m, equal)
    k_l, _ = landmarks_of(k, mask, m, equal)
    every_landmark = equal or (cpu and bool((n >= m).all()))
    kernel_1 = q @ k_l.transpose(-2, -1)
    kernel_2 = q_l @ k_l.transpose(-2, -1)
    if not every_landmark:
        off = ~valid[:, None, None, :]  # landmarks not in use, as keys
        kernel_1, kernel_2 = kernel_1.masked_fill(off, float("-inf")), kernel_2.masked_fill(off, float("-inf"))
    kernel_1, kernel_2 = torch.softmax(kernel_1, dim=-1), torch.softmax(kernel_2, dim=-1)
    if not every_landmark:
        eye = torch.eye(m, dtype=q.dtype, device=q.device)
        kernel_2 = torch.where(valid[:, None, :, None], kernel_2, eye)  # unused landmarks: identity block
    kernel_3 = q_l @ k.transpose(-2, -1)
    if not unpadded:
        kernel_3 = kernel_3.masked_fill(~mask[:, None, None, :], float("-inf"))
    kernel_3 = torch.softmax(kernel_3, dim=-1)
    return kernel_1 @ (iterative_pinv(kernel_2, pinv_iters, pinv_init) @ (kernel_3 @ v))


@register("nystrom", complexity="O(N m d + m^3) time, O(N m) memory")
class NystromAttention(AttentionBase):
    """Nystromformer (Xiong et al., 2021): segment-mean landmarks and an iterative pseudo-inverse."""

    linear_memory = True

    @dataclass
    class Options:
        landmarks: int = 128
        pinv_iters: int = 6
        pinv_init: Literal["matrix", "batch"] = "matrix"
        conv_kernel: int = 0
        impl: Literal["fast", "reference"] = "fast"

        def __post_init__(self):
            if self.landmarks < 1:
                raise ValueError(f"landmarks must be >= 1, got {self.landmarks}")
            if self.pinv_iters < 0:
                raise ValueError(f"pinv_iters must be >= 0, got {self.pinv_iters}")
            if self.conv_kernel < 0 or (self.conv_kernel and self.conv_kernel % 2 == 0):
                raise ValueError(f"conv_kernel must be 0 (off) or a positive odd number, got {self.conv_kernel}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        kk = options.conv_kernel
        self.conv = (nn.Conv2d(heads, heads, (kk, 1), padding=(kk // 2, 0), groups=heads, bias=False)
                     if kk else None)

    def core(self, q, k, v, mask):
        fn = nystrom_reference if self.options.impl == "reference" else nystrom_attention
        o = fn(q, k, v, mask, self.options.landmarks, self.options.pinv_iters, self.options.pinv_init)
        if self.conv is not None:  # the Conv2d holds the (H, 1, K, 1) kernel; sequence_conv computes it
            w = self.conv.weight[:, 0, :, 0].T.to(v.dtype)[:, :, None, None]  # (K, H, 1, 1)
            o = o + sequence_conv(v * key_mask(mask, v.dtype), w)
        return o
