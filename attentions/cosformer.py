"""cosFormer: ReLU features with a cos-based re-weighting that favours nearby tokens, in linear form.

    w_ij = cos(pi/2 (i - j) / M)                           (i, j positions among the n real tokens)
    A_ij = ReLU(q_i) . ReLU(k_j) w_ij
    out_i = sum_j A_ij v_j / max(sum_j A_ij, eps)

Because cos(a - b) = sin a sin b + cos a cos b, A factorises through 2d features
phi(x_i) = [ReLU(x_i) sin(pi i / 2M), ReLU(x_i) cos(pi i / 2M)], and the output is a normalised
linear attention of phi(q), phi(k): O(N d^2), no N x N matrix (impl=fast). impl=reference
writes A out (the reference form, for tests).

Paper: Qin et al., "cosFormer: Rethinking Softmax in Attention", ICLR 2022 (a Table 4
comparator of the PolaFormer paper). M is the sequence length; here it is each sequence's REAL
length n, so |i - j| < M keeps every weight positive and padding (content or amount) changes
nothing. The denominator is clamped at eps (1e-6), as in the authors' code. On CUDA the linear
form runs as fused Triton kernels with the re-weighted features inside (attentions/fused_linear.py;
the angles come from a few torch ops); `info()` says which path the layer runs, {"kernel":
"triton"} or {"kernel": "torch"}.

Options:
    impl ("auto" | "fused" | "fast" | "reference", "auto"): auto = the fused Triton kernels when
        the tensors are on CUDA and triton is installed (float64 excepted), else the torch linear
        form; fused = the kernels, or an error where they cannot run (on the CPU they run only under
        TRITON_INTERPRET=1, for tests); fast = the torch linear form; reference = the quadratic form.
    eps (float, 1e-6): lower clamp of the denominator.

Cost: O(N d^2) time, O(N d + d^2) memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attentions.base import AttentionBase, LinearFormOptions, key_mask, real_rank
from attentions.fused_linear import fused_cosformer, kernel_info, use_fused
from attentions.registry import register


def cos_angles(mask: torch.Tensor, dtype) -> torch.Tensor:
    """pi/2 * i / M per position: (B, 1, N, 1), i = rank among real tokens, M = real length."""
    n = mask.sum(-1, keepdim=True).clamp(min=1).to(dtype)
    return (math.pi / 2 * real_rank(mask).to(dtype) / n)[:, None, :, None]


def cosformer_attention(q, k, v, mask, eps: float):
    """Linear form. q, k, v: (B, H, N, d)."""
    theta = cos_angles(mask, q.dtype)
    m = key_mask(mask, q.dtype)
    q, k = F.relu(q), F.relu(k) * m
    phi_q = torch.cat([q * torch.sin(theta), q * torch.cos(theta)], dim=-1)
    phi_k = torch.cat([k * torch.sin(theta), k * torch.cos(theta)], dim=-1)
    kv = phi_k.transpose(-2, -1) @ (v * m)
    den = (phi_q * phi_k.sum(-2, keepdim=True)).sum(-1, keepdim=True)
    return (phi_q @ kv) / den.clamp(min=eps)


def cosformer_reference(q, k, v, mask, eps: float):
    """Quadratic form: the N x N re-weighted matrix written out."""
    theta = cos_angles(mask, q.dtype)[:, :, :, 0]  # (B, 1, N)
    w = torch.cos(theta[..., :, None] - theta[..., None, :])
    a = (F.relu(q) @ F.relu(k).transpose(-2, -1)) * w
    a = a.masked_fill(~mask[:, None, None, :], 0.0)
    return (a @ v) / a.sum(-1, keepdim=True).clamp(min=eps)


@register("cosformer", complexity="O(N d^2) time, O(N d) memory")
class CosformerAttention(AttentionBase):
    """cosFormer (Qin et al., 2022): ReLU features with cos re-weighting, linear form."""

    linear_memory = True

    Options = LinearFormOptions

    def core(self, q, k, v, mask):
        if use_fused(self.options.impl, q):
            return fused_cosformer(q, k, v, mask, self.options.eps)
        fn = cosformer_reference if self.options.impl == "reference" else cosformer_attention
        return fn(q, k, v, mask, self.options.eps)

    def info(self) -> dict:
        return kernel_info(self.options.impl, self)
