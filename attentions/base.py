"""The shell most attentions share: projections, head split, float32 core, output projection.

Every method in the suite gets the same projections (q, k, v: Linear(D -> D) each, fused into
one Linear(D -> 3D); out: Linear(D -> D)), so accuracy differences come from the token mixing and
not from extra parameters. A method that needs more (PolaFormer's gate, Linformer's projection)
adds them in its own file and the run records the parameter count.

The core runs with autocast switched off on float32 inputs, as in the Skyformer/Nystromformer
ports the paper setup comes from: kernel feature maps, exponentials and normalisers overflow in
float16 (xformers #96, fast-transformers #32, performer-pytorch #44), and one rule for all keeps
the comparison fair.

Helpers shared by several methods live here too, so each method file holds only its own idea:
the rank of each real token (`real_rank`), the positions of the real tokens (`real_positions`),
uniform sampling among real tokens that does not depend on how far a batch is padded
(`sample_real`), normalised linear attention with its quadratic reference
(`linear_attention`, `quadratic_linear_attention`), and a depthwise convolution along the
sequence (`sequence_conv`).

Attention maps (`AttentionBase.attention_maps`): every core in the suite is linear in v and mixes
all channels of a head with one N x N matrix A (out = A v), so running the core on the columns of
the identity as v writes A out exactly, whatever the method computes inside; no
method needs code of its own for its map unless its output is not of that form (PolaFormer's two
streams override it; a method that cannot give one sets `maps_from_core = False` and the method
raises `NoAttentionMap`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lra_base.errors import LRAError


class NoAttentionMap(LRAError):
    """This attention cannot write its output as N x N maps applied to v (see attention_maps)."""


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


def key_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, N) bool -> (B, 1, N, 1) float, to zero keys and values at padded positions."""
    return mask[:, None, :, None].to(dtype)


def core_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a core computes in: float32, or float64 when the input is (for exactness tests)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def real_rank(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool -> (B, N) long: the index of each real token among the real tokens of its
    sequence (0, 1, ...); padded positions get the rank of the last real token before them.
    With the usual prefix masks this is just the position; it also keeps position-dependent
    methods right for masks with holes."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool -> (B, N) long: the positions of the real tokens first (in order), then the
    padded ones. Entry r < n_b is the position of the r-th real token of sequence b."""
    return torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)


def sample_real(mask: torch.Tensor, shape: tuple[int, ...], keep: int | None = None) -> torch.Tensor:
    """Positions of real tokens drawn uniformly (with replacement), one draw per entry of `shape`
    for every sequence: (B, *shape) long (with the first dimension cut to `keep` if given).

    One set of uniform numbers of `shape` is drawn (from the global generator) and scaled by each
    sequence's real length, as in the Skyformer port. Nothing drawn depends on the padded length
    N, so padding a batch further (or changing padded content) changes no sample."""
    u = torch.rand(shape, device=mask.device, dtype=torch.float64)[:keep]
    n = mask.sum(-1).clamp(min=1)  # (B,)
    lead = n.view(-1, *([1] * u.dim()))
    rank = torch.minimum((u[None] * lead).long(), lead - 1)
    pos = real_positions(mask)
    return pos.gather(1, rank.reshape(rank.shape[0], -1)).view(rank.shape)


def sequence_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise "same" convolution along the sequence dim (-2) of x (..., N, C), as Conv1d computes
    it (cross-correlation, zero padding K // 2): out_i = sum_t weight[t] * x_{i + t - K//2} (+ bias).
    weight: (K, ...) with weight[t] broadcasting against x (e.g. (K, C) per channel, (K, H, 1, 1)
    per head). Written as K shifted products because torch's CPU depthwise Conv1d backward is
    ~100x slower than this for LRA shapes."""
    K, N = weight.shape[0], x.shape[-2]
    xp = F.pad(x, (0, 0, K // 2, K // 2))
    out = sum(weight[t] * xp[..., t:t + N, :] for t in range(K))
    return out if bias is None else out + bias


def linear_attention(phi_q, phi_k, v, mask, eps: float, mean: bool = False):
    """Normalised linear attention, O(N f d) time and O(N (f + d) + f d) memory:

        out_i = phi_q_i (sum_j phi_k_j^T v_j) / (phi_q_i . sum_j phi_k_j + eps)

    phi_q, phi_k: (B, H, N, f) non-negative features; v: (B, H, N, d); sums over real keys only
    (phi_k and v are zeroed at padding here). With mean=True both sums are divided by the number
    of real keys n first, so eps is relative to a mean (PolaFormer's convention)."""
    m = key_mask(mask, phi_k.dtype)
    phi_k = phi_k * m
    kv = phi_k.transpose(-2, -1) @ (v * m)  # (B, H, f, d)
    ksum = phi_k.sum(-2)  # (B, H, f)
    if mean:
        n = mask.sum(-1).clamp(min=1).to(phi_k.dtype)[:, None, None]
        kv, ksum = kv / n[..., None], ksum / n
    den = phi_q @ ksum[..., :, None]  # (B, H, N, 1)
    return (phi_q @ kv) / (den + eps)


def quadratic_linear_attention(phi_q, phi_k, v, mask, eps: float, mean: bool = False):
    """The same output as `linear_attention`, written with the N x N matrix A_ij = phi_q_i . phi_k_j,
    for tests and attention maps. Returns (out, A row-normalised)."""
    a = phi_q @ phi_k.transpose(-2, -1)
    a = a.masked_fill(~mask[:, None, None, :], 0.0)
    den = a.sum(-1, keepdim=True)
    if mean:  # dividing both sums by n is the same as eps -> n * eps
        eps = eps * mask.sum(-1).clamp(min=1).to(a.dtype)[:, None, None, None]
    a_n = a / (den + eps)
    return a_n @ v, a_n


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """The module in evaluation mode (dropout off) inside the block, its own mode restored after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


@dataclass
class LinearFormOptions:
    """Options of a feature-map attention with a linear form and a quadratic reference form
    (`linear`, `cosformer`): which form runs, and the eps guarding its denominator.

    impl: "auto" runs the fused Triton kernels (attentions/fused_linear.py) on CUDA tensors when
    triton is installed and the plain torch linear form otherwise; "fused" forces the kernels (an
    error where they cannot run); "fast" forces the torch linear form; "reference" the quadratic form."""

    impl: Literal["auto", "fused", "fast", "reference"] = "auto"
    eps: float = 1e-6

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


class AttentionBase(nn.Module):
    """Standard multi-head shell. Subclasses implement `core(q, k, v, mask)`.

    forward(x, mask): x (B, N, dim), mask (B, N) bool with True on real tokens -> (B, N, dim).
    core(q, k, v, mask): q, k, v (B, H, N, d) float32, autocast off -> (B, H, N, d).

    An attention may set `self.aux_loss` to a scalar tensor during forward (for example a
    distillation loss); the training loop adds every such loss to the task loss and records it.

    `linear_memory = True` declares that forward and backward never hold an N x N tensor (no
    quadratic memory in the sequence length); the conformance suite checks the claim.

    `grid` is the task's layout: (height, width) when the N = height x width tokens are the pixels
    of an image in row-major order (Image, Pathfinder, Path-X), None for plain sequences. Every
    attention receives it the same way; one that has no use for it ignores it. `info()` says how
    the layer runs (a path chosen from the layout or the device, say); it goes into the run's record.

    `attention_maps(x, mask)` gives the N x N maps the layer applies to v (see its docstring);
    `maps_from_core = False` declares that the core is not of the form out = A v, so there is no map.
    """

    linear_memory: bool = False
    maps_from_core: bool = True

    def __init__(self, dim: int, heads: int, max_len: int, options=None, grid: tuple[int, int] | None = None):
        super().__init__()
        self.dim, self.heads, self.head_dim, self.max_len = dim, heads, dim // heads, max_len
        self.options = options
        self.grid = grid
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.aux_loss: torch.Tensor | None = None

    def project(self, x: torch.Tensor):
        """q, k, v as (B, H, N, d) in float32 (float64 if x is float64)."""
        q, k, v = self.qkv(x).to(core_dtype(x.dtype)).chunk(3, dim=-1)
        return split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        with float32_core(x.device):
            o = self.core(q, k, v, mask)
        return self.out(merge_heads(o))

    def core(self, q, k, v, mask):  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The token mixing of the core as N x N maps: {name: A}, each A (B, H, N, N), such that,
        with v's head channels cut into len(maps) equal consecutive groups (one group when there
        is one map), core(q, k, v, mask)[..., group s] = A_s @ v[..., group s], exactly. Taken in
        evaluation mode (dropout off); terms outside the core (PolaFormer's convolution and gate)
        are not in it. Columns of padded keys are zero; rows of padded queries are whatever the
        core computes there. Most maps are non-negative with rows summing to 1 over the real keys;
        an unnormalised kernel (kernelized, skyformer) has other row sums and a pseudo-inverse
        (nystrom, skyformer) can give negative entries: the map is what the layer applies, as is.
        A method that draws at random in its forward gives the map of one draw (the one a forward
        at the same generator state makes). Quadratic memory: analyse short inputs.

        The default runs the core on the columns of the identity as v: exact for every core
        linear in v with one map per head. Raises NoAttentionMap when `maps_from_core` is False."""
        if not self.maps_from_core:
            raise NoAttentionMap(f"{type(self).__name__} does not write its output as N x N maps applied to v")
        q, k, _ = self.project(x)
        with evaluating(self), float32_core(x.device):
            return {"attention": self.map_of_core(q, k, mask)}

    def map_of_core(self, q, k, mask) -> torch.Tensor:
        """A of out = A v, (B, H, N, N): the core run on d columns of the identity at a time (v keeps
        the shape the core expects), each run from the same generator state, so a method that draws
        at random draws the same for every block of columns."""
        B, H, N, d = q.shape
        eye = torch.eye(N, dtype=q.dtype, device=q.device)
        state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(q.device) if q.device.type == "cuda" else None
        blocks = []
        for start in range(0, N, d):
            cols = eye[:, start:start + d]
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, q.device)
            torch.set_rng_state(state)
            v = F.pad(cols, (0, d - cols.shape[1])).expand(B, H, N, d)
            blocks.append(self.core(q, k, v, mask)[..., :cols.shape[1]])
        return torch.cat(blocks, dim=-1)

    def info(self) -> dict:
        """How this layer runs, for the run's record (empty when there is nothing to say)."""
        return {}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, options={self.options}"
