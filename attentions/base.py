"""The shell most attentions share: projections, head split, float32 core, output projection.

Every method in the suite gets the same projections (q, k, v: Linear(D -> D) each, fused into
one Linear(D -> 3D); out: Linear(D -> D)), so accuracy differences come from the token mixing and
not from extra parameters. A method that needs more (PolaFormer's gate, Linformer's projection)
adds them in its own file and the run records the parameter count.

The core runs with autocast switched off on float32 inputs, as in the Skyformer/Nystromformer
ports the paper setup comes from: kernel feature maps, exponentials and normalisers overflow in
float16 (xformers #96, fast-transformers #32, performer-pytorch #44), and one rule for all keeps
the comparison fair.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def float32_core(device: torch.device):
    """Context in which autocast is off, so the core's arithmetic stays in float32."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*d) -> (B, H, N, d)."""
    B, N, D = x.shape
    return x.view(B, N, heads, D // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, N, H*d)."""
    B, H, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, H * d)


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool -> (B, 1, N, 1) float, to zero keys and values at padded positions."""
    return mask[:, None, :, None].to(torch.float32)


class AttentionBase(nn.Module):
    """Standard multi-head shell. Subclasses implement `core(q, k, v, mask)`.

    forward(x, mask): x (B, N, dim), mask (B, N) bool with True on real tokens -> (B, N, dim).
    core(q, k, v, mask): q, k, v (B, H, N, d) float32, autocast off -> (B, H, N, d).

    An attention may set `self.aux_loss` to a scalar tensor during forward (for example a
    distillation loss); the training loop adds every such loss to the task loss and records it.
    """

    def __init__(self, dim: int, heads: int, max_len: int, options=None):
        super().__init__()
        self.dim, self.heads, self.head_dim, self.max_len = dim, heads, dim // heads, max_len
        self.options = options
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.aux_loss: torch.Tensor | None = None

    def project(self, x: torch.Tensor):
        """q, k, v as (B, H, N, d) in float32."""
        q, k, v = self.qkv(x).float().chunk(3, dim=-1)
        return split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        with float32_core(x.device):
            o = self.core(q, k, v, mask)
        return self.out(merge_heads(o))

    def core(self, q, k, v, mask):  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, options={self.options}"
