"""Linformer: softmax attention over k learned projections of the keys and values along the sequence.

    K' = E[:, :N] K,  V' = E[:, :N] V          E: (H, k, max_len), one projection per head,
                                                shared by keys and values; K, V zero at padding
    out = softmax(Q K'^T / sqrt(d)) V'

Paper: Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020. E is a trained
parameter (normal init, std 0.02, as in the Skyformer/Nystromformer port), saved in the state
dict. The port created it with `nn.Parameter(...).to(device)`, which returns a plain tensor on
GPU: E was never trained nor saved (lra-reference.md section 6); here it is registered properly.
A sequence shorter than max_len uses the first N columns of E; padded keys and values are zero,
so they add nothing to K' and V' (padding content and amount change nothing).

Options:
    k (int, 128): projected length (lra-reference section 4).
    init_std (float, 0.02): standard deviation of E's normal initialisation.

Cost: O(N k d) time, O(N k + H k max_len) memory (E itself is max_len long).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from attentions.base import AttentionBase, key_mask
from attentions.registry import register
from lra_base.errors import ConfigError


@register("linformer", complexity="O(N k d) time, O(N k) memory")
class LinformerAttention(AttentionBase):
    """Linformer (Wang et al., 2020): keys and values projected to k rows by a learned E."""

    linear_memory = True

    @dataclass
    class Options:
        k: int = 128
        init_std: float = 0.02

        def __post_init__(self):
            if self.k < 1:
                raise ValueError(f"k must be >= 1, got {self.k}")
            if not self.init_std > 0:
                raise ValueError(f"init_std must be > 0, got {self.init_std}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        self.E = nn.Parameter(torch.empty(heads, options.k, max_len))
        nn.init.normal_(self.E, std=options.init_std)

    def core(self, q, k, v, mask):
        N = q.shape[-2]
        if N > self.max_len:
            raise ConfigError(
                f"linformer was built for max_len={self.max_len} but got {N} tokens; build it with "
                f"max_len >= the padded sequence length (its projection E has max_len columns)")
        m = key_mask(mask, q.dtype)
        e = self.E[:, :, :N].to(q.dtype)  # (H, k, N)
        kp = torch.einsum("hkn,bhnd->bhkd", e, k * m)
        vp = torch.einsum("hkn,bhnd->bhkd", e, v * m)
        weights = torch.softmax(q @ kp.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ vp
