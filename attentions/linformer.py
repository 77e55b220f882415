"""Linformer: softmax attention over k projections of the keys and values along the sequence.

    K' = E[:, :N] K,  V' = E[:, :N] V          E: (H, k, max_len), one projection per head,
                                                shared by keys and values; K, V zero at padding
    out = softmax(Q K'^T / sqrt(d)) V'

Paper: Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020. E is drawn from
N(0, 0.02^2) as in the Skyformer/Nystromformer port. A sequence shorter than max_len uses the
first N columns of E; padded keys and values are zero, so they add nothing to K' and V' (padding
content and amount change nothing).

Trained or fixed E (option `train_e`). The paper trains E. The port that produced the published
LRA numbers created it with `nn.Parameter(...).to(device)`, which on a GPU returns a plain tensor
copy: E was never registered, so it was never trained nor saved (docs/lra-reference.md section
6), and every published Linformer row used a FIXED random projection. That accident also kept the
comparison's parameter counts comparable: a trained E adds H k max_len parameters per layer
(0.26M at N = 1024, 1M at N = 4096, against about 16.6k in the rest of an attention layer of the
paper model), which the PolaFormer paper's "comparable number of parameters" does not allow. So
the default follows the port (`train_e=False`): E is a buffer, saved in the state dict so a run
reproduces, and gets no gradient. `train_e=True` is the paper's trained E, a parameter (what the
port did on CPU only, where `.to("cpu")` returns the parameter itself). docs/faithfulness.md has
the measured effect of both.

Options:
    k (int, 128): projected length (docs/lra-reference.md section 4).
    init_std (float, 0.02): standard deviation of E's normal initialisation.
    train_e (bool, False): E is a trained parameter (the paper) instead of a fixed, saved buffer
        (the port that produced the published numbers).
    impl ("fast" | "reference", "fast"): `fast` projects keys and values with one batched
        product per head; `reference` writes the formula out (for tests).

Cost: O(N k d) time, O(N k + H k max_len) memory (E itself is max_len long).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from attentions.base import AttentionBase, key_mask
from attentions.registry import register
from lra_base.errors import ConfigError


def project_keys_values(e: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
    """E K and E V over real tokens, (B, H, k, d) each, as ONE batched product per head:
    [K | V] of every sequence side by side, (H, N, B 2d), so E (H, k, N) is used as it is. (A
    broadcast E @ K copies E once per sequence and sums its gradient back over the batch.)"""
    B, H, N, d = k.shape
    kv = torch.cat([k, v], dim=-1) * key_mask(mask, k.dtype)  # (B, H, N, 2d)
    side = kv.permute(1, 2, 0, 3).reshape(H, N, B * 2 * d)
    out = torch.bmm(e, side).view(H, -1, B, 2 * d).permute(2, 0, 1, 3)  # (B, H, k, 2d)
    return out[..., :d], out[..., d:]


def linformer_reference(q, k, v, mask, e):
    """The module docstring's formula written out (for tests)."""
    m = key_mask(mask, q.dtype)
    kp = torch.einsum("hkn,bhnd->bhkd", e, k * m)
    vp = torch.einsum("hkn,bhnd->bhkd", e, v * m)
    weights = torch.softmax(q @ kp.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ vp


@register("linformer", complexity="O(N k d) time, O(N k) memory")
class LinformerAttention(AttentionBase):
    """Linformer (Wang et al., 2020): keys and values projected to k rows by a projection E."""

    linear_memory = True

    @dataclass
    class Options:
        k: int = 128
        init_std: float = 0.02
        train_e: bool = False
        impl: Literal["fast", "reference"] = "fast"

        def __post_init__(self):
            if self.k < 1:
                raise ValueError(f"k must be >= 1, got {self.k}")
            if not self.init_std > 0:
                raise ValueError(f"init_std must be > 0, got {self.init_std}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        e = torch.empty(heads, options.k, max_len)
        nn.init.normal_(e, std=options.init_std)
        if options.train_e:
            self.E = nn.Parameter(e)
        else:
            self.register_buffer("E", e)

    def info(self) -> dict:
        return {"projection": "trained parameter" if self.options.train_e else "fixed buffer"}

    def core(self, q, k, v, mask):
        N = q.shape[-2]
        if N > self.max_len:
            raise ConfigError(
                f"linformer was built for max_len={self.max_len} but got {N} tokens; build it with "
                f"max_len >= the padded sequence length (its projection E has max_len columns)")
        e = self.E[:, :, :N].to(q.dtype)
        if self.options.impl == "reference":
            return linformer_reference(q, k, v, mask, e)
        kp, vp = project_keys_values(e, k, v, mask)
        weights = torch.softmax(q @ kp.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ vp
