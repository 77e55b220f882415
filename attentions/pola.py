"""PolaFormer: polarity-aware linear attention, in its 1-D form for sequences (pola-1d.md).

Per head, with q, k, v in R^{N x d} and real keys j only (k, v are zero at padding):

    q <- q / softplus(s),  k <- k / softplus(s)                    s in R^D, init 0 (no 1/sqrt(d))
    p = 1 + alpha * sigmoid(w)                                      w in R^{H x d}, init 0
    q+ = ReLU(q)^p, q- = ReLU(-q)^p, k+ = ReLU(k)^p, k- = ReLU(-k)^p   (element-wise, per channel)
    phi_k = [k+, k-],  qs = [q+, q-] (same sign),  qo = [q-, q+] (opposite sign)
    v = [vs, vo]                                                    (first / last d/2 channels)
    os_i = qs_i (1/n sum_j phi_k_j^T vs_j) / (qs_i . 1/n sum_j phi_k_j + eps)
    oo_i = qo_i (1/n sum_j phi_k_j^T vo_j) / (qo_i . 1/n sum_j phi_k_j + eps)   (n real tokens)
    o = [os, oo] (heads merged) + dwc(v);   o <- o * g;   y = out(o)

g = Linear(D -> D)(x) is the polarity gate (per head its first d/2 channels scale the same-sign
stream, its last d/2 the opposite-sign stream), dwc a depthwise Conv1d over the sequence on the
masked v (D channels, odd kernel, "same" padding, bias). The two streams are normalised
separately; the opposite stream is not subtracted. The quadratic reference form (impl=reference)
writes the same output with A^s_ij = qs_i . phi_k_j and A^o_ij = qo_i . phi_k_j, each row divided
by its sum + n eps; `attention_maps` returns those row-normalised maps (for entropy and plots).

Paper: Meng et al., "PolaFormer: Polarity-aware Linear Attention for Vision Transformers",
ICLR 2025 (LRA: Table 4, Table 6). The authors' code holds only the 2-D vision module; this is
the project's 1-D definition, /work/shared/pola-1d.md, and nothing else. alpha is the paper's
scaling factor (3, 5, 7 in Table 4: presets pola-a3, pola-a5, pola-a7).

Options (ablation switches of the paper's Table 3 and Appendix A.4):
    alpha (float, 3.0): power range, p in (1, 1 + alpha), starting at 1 + alpha / 2.
    dwc_kernel (int, 5): kernel size of the depthwise convolution (odd).
    polarity (bool, True): False keeps only the positive stream, phi(x) = ReLU(x)^p on all of v.
    gate (bool, True): False drops the g multiplication (and the g projection).
    dwc (bool, True): False drops the convolution term.
    gate_init ("kaiming" | "zeros" | "normal" | "uniform" | "ones", "kaiming"): initialisation of
        the g projection's weight: nn.Linear's default (kaiming uniform), or torch.nn.init's
        zeros_, normal_ (mean 0, std 1), uniform_ (0, 1), ones_; the bias keeps nn.Linear's default.
    learnable_power (bool, True): False fixes p at 1 + alpha / 2 (w is a buffer of zeros).
    eps (float, 1e-6): added to each normaliser (relative to a mean, see the sums above).
    impl ("fast" | "reference", "fast"): the linear form, or the quadratic reference form.

Numerics: features and normalisers run in float32 with autocast off (p up to 8 overflows
float16 at |x| > 4); so do the convolution and the gate product.

Cost: O(N d^2) time per head, O(N d + d^2) memory; no N x N matrix in the linear form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attentions.base import (
    AttentionBase,
    core_dtype,
    float32_core,
    key_mask,
    linear_attention,
    merge_heads,
    quadratic_linear_attention,
    sequence_conv,
)
from attentions.registry import register
from lra_base.errors import ConfigError

GATE_INITS = {
    "kaiming": None,  # nn.Linear's own initialisation
    "zeros": nn.init.zeros_,
    "normal": nn.init.normal_,
    "uniform": nn.init.uniform_,
    "ones": nn.init.ones_,
}


def pola_features(q, k, scale, power):
    """(qs, qo, phi_k) of the module docstring (and q+, k+ for the no-polarity ablation).
    q, k: (B, H, N, d); scale: softplus(s) as (H, d); power: p as (H, d)."""
    sp = scale[None, :, None, :]
    p = power[None, :, None, :]
    q, k = q / sp, k / sp
    # ReLU(x)^p and ReLU(-x)^p are |x|^p split by sign: one power per tensor instead of two
    qa, ka = q.abs() ** p, k.abs() ** p
    zero = qa.new_zeros(())
    return torch.where(q > 0, qa, zero), torch.where(q < 0, qa, zero), torch.where(k > 0, ka, zero), torch.where(k < 0, ka, zero)


@register("pola", complexity="O(N d^2) time, O(N d) memory",
          presets={"pola-a3": {"alpha": 3.0}, "pola-a5": {"alpha": 5.0}, "pola-a7": {"alpha": 7.0}})
class PolaAttention(AttentionBase):
    """PolaFormer (Meng et al., 2025): polarity-aware linear attention with a learnable power, 1-D form."""

    linear_memory = True

    @dataclass
    class Options:
        alpha: float = 3.0
        dwc_kernel: int = 5
        polarity: bool = True
        gate: bool = True
        dwc: bool = True
        gate_init: Literal["kaiming", "zeros", "normal", "uniform", "ones"] = "kaiming"
        learnable_power: bool = True
        eps: float = 1e-6
        impl: Literal["fast", "reference"] = "fast"

        def __post_init__(self):
            if not self.alpha > 0:
                raise ValueError(f"alpha must be > 0, got {self.alpha}")
            if self.dwc_kernel < 1 or self.dwc_kernel % 2 == 0:
                raise ValueError(f"dwc_kernel must be a positive odd number, got {self.dwc_kernel}")
            if not self.eps > 0:
                raise ValueError(f"eps must be > 0, got {self.eps}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        if options.polarity and self.head_dim % 2:
            raise ConfigError(f"pola with polarity splits each head in two halves: the head dim "
                              f"({self.head_dim} = {dim} / {heads}) must be even (or set polarity=False)")
        self.scale = nn.Parameter(torch.zeros(dim))
        power = torch.zeros(heads, self.head_dim)
        if options.learnable_power:
            self.power = nn.Parameter(power)
        else:
            self.register_buffer("power", power)
        self.gate = nn.Linear(dim, dim) if options.gate else None
        if self.gate is not None and GATE_INITS[options.gate_init] is not None:
            GATE_INITS[options.gate_init](self.gate.weight)
        kk = options.dwc_kernel
        self.dwc = nn.Conv1d(dim, dim, kk, padding=kk // 2, groups=dim) if options.dwc else None

    def exponent(self) -> torch.Tensor:
        """p = 1 + alpha * sigmoid(w), (H, d)."""
        return 1 + self.options.alpha * torch.sigmoid(self.power)

    def _streams(self, q, k, mask):
        """The (query features, key features) pairs of each stream, and how v splits between them."""
        dt = q.dtype
        scale = F.softplus(self.scale.to(dt)).view(self.heads, self.head_dim)
        q_pos, q_neg, k_pos, k_neg = pola_features(q, k * key_mask(mask, dt), scale, self.exponent().to(dt))
        if not self.options.polarity:
            return [(q_pos, k_pos)]
        phi_k = torch.cat([k_pos, k_neg], dim=-1)
        return [(torch.cat([q_pos, q_neg], dim=-1), phi_k), (torch.cat([q_neg, q_pos], dim=-1), phi_k)]

    def core(self, q, k, v, mask):
        """The attention term o = [os, oo] per head, (B, H, N, d), before dwc and gate."""
        streams = self._streams(q, k, mask)
        vs = v.chunk(len(streams), dim=-1)
        eps = self.options.eps
        if self.options.impl == "reference":
            outs = [quadratic_linear_attention(fq, fk, vv, mask, eps, mean=True)[0] for (fq, fk), vv in zip(streams, vs)]
        else:
            outs = [linear_attention(fq, fk, vv, mask, eps, mean=True) for (fq, fk), vv in zip(streams, vs)]
        return torch.cat(outs, dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        g = self.gate(x) if self.gate is not None else None
        with float32_core(x.device):
            o = merge_heads(self.core(q, k, v, mask))
            if self.dwc is not None:  # the Conv1d holds the weights; sequence_conv computes it
                vm = merge_heads(v * key_mask(mask, v.dtype))  # (B, N, D)
                o = o + sequence_conv(vm, self.dwc.weight[:, 0, :].T.to(vm.dtype), self.dwc.bias.to(vm.dtype))
            if g is not None:
                o = o * g.to(core_dtype(x.dtype))
        return self.out(o)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The row-normalised N x N attention maps of each stream, {"same-sign": A^s,
        "opposite-sign": A^o} (or {"attention": A} without polarity), each (B, H, N, N): A^s mixes
        the first half of v's head channels, A^o the second (AttentionBase.attention_maps).
        Without dwc and gate. Quadratic memory."""
        q, k, v = self.project(x)
        names = ["same-sign", "opposite-sign"] if self.options.polarity else ["attention"]
        with float32_core(x.device):
            return {name: quadratic_linear_attention(fq, fk, v, mask, self.options.eps, mean=True)[1]
                    for name, (fq, fk) in zip(names, self._streams(q, k, mask))}
