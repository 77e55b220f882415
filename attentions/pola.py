"""PolaFormer: polarity-aware linear attention, the project's 1-D form (docs/pola-1d.md).

Per head, with q, k, v in R^{N x d} and real keys j only (k is zeroed at padding):

    k <- k + P[:N]                       (key positional term, option key_pos; P in R^{max_len x D}, init 0)
    q <- q / softplus(s),  k <- k / softplus(s)                    s in R^D, init 0 (no 1/sqrt(d))
    p = 1 + alpha * sigmoid(w)                                      w in R^{H x d}, init 0
    q+ = ReLU(q)^p, q- = ReLU(-q)^p, k+ = ReLU(k)^p, k- = ReLU(-k)^p   (element-wise, per channel)
    phi_k = [k+, k-],  qs = [q+, q-] (same sign),  qo = [q-, q+] (opposite sign)
    v = [vs, vo]                                                    (first / last d/2 channels)
    os_i = qs_i (1/n sum_j phi_k_j^T vs_j) / (qs_i . 1/n sum_j phi_k_j + eps)
    oo_i = qo_i (1/n sum_j phi_k_j^T vo_j) / (qo_i . 1/n sum_j phi_k_j + eps)   (n real tokens)
    o = [os, oo] (heads merged) + dwc(v);   o <- o * g;   y = out(o)

g = Linear(D -> D)(x) is the polarity gate (per head its first d/2 channels scale the same-sign
stream, its last d/2 the opposite-sign stream); the two streams are normalised separately and the
opposite stream is not subtracted. dwc is a depthwise convolution of v (padded positions zeroed
first), with bias and "same" zero padding:
  - on sequences (grid None): 1-D along the sequence, D channels, dwc_kernel taps;
  - on image tasks (grid (h, w), N = h * w tokens in row-major order: Image, Pathfinder, Path-X):
    2-D, dwc_kernel x dwc_kernel over the h x w grid, as the official vision module does it:
    head_dim channels, one kernel shared by all heads (Conv2d(d, d, K, groups=d) on (B*H, d, h, w)).
    dwc_2d=False forces the 1-D form there (ablation).
The quadratic reference form (impl=reference) writes the same output with A^s_ij = qs_i . phi_k_j
and A^o_ij = qo_i . phi_k_j, each row divided by its sum + n eps; `attention_maps` returns those
row-normalised maps (for entropy and plots).

Paper: Meng et al., "PolaFormer: Polarity-aware Linear Attention for Vision Transformers",
ICLR 2025 (LRA: Table 4, Table 6). The authors' code holds only the 2-D vision module
(ZacharyMeng/PolaFormer, models/pola_pvt.py, PolaLinearAttention); the 1-D form is the project's
own definition, docs/pola-1d.md, which also says how the official module's key positional term
and 2-D convolution are adapted. alpha is the paper's scaling factor (3, 5, 7 in Table 4:
presets pola-a3, pola-a5, pola-a7).

Options (ablation switches of the paper's Table 3 and Appendix A.4, and the official module's extras):
    alpha (float, 3.0): power range, p in (1, 1 + alpha), starting at 1 + alpha / 2.
    dwc_kernel (int, 5): kernel size of the depthwise convolution (odd; K x K in its 2-D form).
    polarity (bool, True): False keeps only the positive stream, phi(x) = ReLU(x)^p on all of v.
    gate (bool, True): False drops the g multiplication (and the g projection).
    dwc (bool, True): False drops the convolution term.
    dwc_2d (bool, True): on image tasks (grid set) the convolution is the official 2-D K x K one
        over the grid; False forces the 1-D K-tap form along the row-major sequence there (on
        sequence tasks the 1-D form runs either way).
    key_pos (bool, False): the official module's learnable, zero-initialised positional term P
        (max_len x D, per position and channel) added to k before the scale and the feature map
        (padded keys are zeroed after the addition). Off by default: it costs max_len x D
        parameters per layer, 2048 x 64 = 131,072 per layer at ListOps' length, where the whole
        2-layer pola-a3 model has 218k without it (87k besides the encoder's own 2048 x 64
        position table): on, it is 480k. And the encoder already adds learned absolute positions
        to every token.
    gate_init ("kaiming" | "zeros" | "normal" | "uniform" | "ones", "kaiming"): initialisation of
        the g projection's weight: nn.Linear's default (kaiming uniform), or torch.nn.init's
        zeros_, normal_ (mean 0, std 1), uniform_ (0, 1), ones_; the bias keeps nn.Linear's default.
    learnable_power (bool, True): False fixes p at 1 + alpha / 2 (w is a buffer of zeros).
    eps (float, 1e-6): added to each normaliser (relative to a mean, see the sums above).
    impl ("auto" | "fused" | "fast" | "reference", "auto"): auto = the fused Triton kernels of the
        linear-form core (attentions/fused_linear.py, `fused_pola`) on a CUDA device with triton,
        else fast; fused = the kernels or an error saying why not; fast = the torch path below;
        reference = the plain quadratic form (every step written as the equations above, torch
        autograd throughout). The projection, convolution and gate are torch ops on every path.

The fast path computes the same function with fewer passes over (N, d) tensors (on CPU the layer
is bound by memory traffic and element-wise work, not by its matmuls); docs/pola-1d.md says how
and how it is tested:
  - 1/softplus(s) is folded into the q and k rows of the projection weight, so one Linear(D -> 3D)
    gives the scaled q, k and v (the parameters stay the separate qkv and scale of the module);
  - `pola_block` takes that projection and g to the gated output, core + convolution + gate, as one
    autograd Function with a hand-written backward that writes dq, dk and dv straight into the
    projection's gradient;
  - its core is the linear form of `pola_linear(q, k, v, power, mask, eps, polarity)` (which a
    fused kernel replaces on CUDA): with a = |x|^p and b = sign(x)|x|^p, ReLU(+-x)^p = (a +- b) / 2,
    so the same-sign similarity is (a_q.a_k + b_q.b_k) / 2, the opposite-sign one
    (a_q.a_k - b_q.b_k) / 2, and both streams come from a_q Ma + b_q Mb with small matrices mixed
    from v^T a_k, v^T b_k and the key sums; no masked copies, no concatenated features;
  - the depthwise convolution is one Conv2d on the channels-last view of v (B, N, D); its backward
    is written by hand (torch's CPU depthwise backward is many times slower at these shapes).

Numerics: features and normalisers run in float32 with autocast off (p up to 8 overflows
float16 at |x| > 4); so do the convolution and the gate product.

Cost: O(N d^2) time per head, O(N d + d^2) memory; no N x N matrix in the linear form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from attentions.base import (
    AttentionBase,
    core_dtype,
    float32_core,
    key_mask,
    merge_heads,
    quadratic_linear_attention,
    sequence_conv,
    split_heads,
)
from attentions.fused_linear import fused_pola, kernel_info, use_fused
from attentions.registry import register
from lra_base.errors import ConfigError

GATE_INITS = {
    "kaiming": None,  # nn.Linear's own initialisation
    "zeros": nn.init.zeros_,
    "normal": nn.init.normal_,
    "uniform": nn.init.uniform_,
    "ones": nn.init.ones_,
}


# --- the fast path ----------------------------------------------------------------------------------


def _power_features(x: torch.Tensor, pp: torch.Tensor):
    """a = |x|^p and b = sign(x)|x|^p (ReLU(+-x)^p = (a +- b) / 2), contiguous (B, H, N, d) whatever
    x's layout, and for the backward |x| and log|x|, floored at the smallest normal number and its
    log. At x = 0, a = b = 0 exactly (exp(p log 0) = 0), and so are their gradients (see the backward)."""
    tiny = torch.finfo(x.dtype).tiny
    ax = torch.abs(x, out=x.new_empty(x.shape))
    log_abs = ax.log()
    a = torch.mul(log_abs, pp).exp_()
    b = torch.copysign(a, x)
    return a, b, ax.clamp_min_(tiny), log_abs.clamp_min_(math.log(tiny))


def _power_features_backward(a, b, ax, log_abs, pda, pdb, need_p: bool):
    """(dx, p dp) of _power_features from p da and p db (the caller folds p into its small
    matrices); dx is written over pda, p dp is summed over batch and positions (H, d) (None unless
    need_p).

    da/dx = p b / |x|, db/dx = p a / |x| (b = sign(x) a);  d(a, b)/dp = (a, b) log|x|.
    At x = 0 both vanish: a = b = 0 there, and |x| and log|x| are floored (0 / tiny, 0 log tiny)."""
    pdp = (pda * a).addcmul_(pdb, b).mul_(log_abs).sum((0, 2)) if need_p else None
    return pda.mul_(b).addcmul_(pdb, a).div_(ax), pdp


def _mixing(ka, kb, sa, sb, polarity: bool):
    """The small matrices Ma, Mb (B, H, d, d_v + S) with numerators | denominators = a_q Ma + b_q Mb.

    ka = v^T a_k, kb = v^T b_k (B, H, d_v, d), sa, sb = sum_j a_k, b_k (B, H, 1, d), all already / 2n.
      polarity (S = 2): same sign  <q+,k+> + <q-,k-> = (a_q.a_k + b_q.b_k) / 2,
                        opposite   <q-,k+> + <q+,k-> = (a_q.a_k - b_q.b_k) / 2, so
                        Ma = [ka_s^T, ka_o^T, sa^T, sa^T],  Mb = [kb_s^T, -kb_o^T, sb^T, -sb^T];
      no polarity (S = 1): <q+,k+> = (a_q + b_q).(a_k + b_k) / 4, so Ma = Mb = [(ka + kb)^T, (sa + sb)^T] / 2."""
    if not polarity:
        m = torch.cat([ka + kb, sa + sb], dim=-2).transpose(-2, -1) / 2
        return m, m
    dv = ka.shape[-2]
    sign = torch.ones(dv, 1, dtype=kb.dtype, device=kb.device)
    sign[dv // 2:] = -1
    ma = torch.cat([ka, sa, sa], dim=-2).transpose(-2, -1)
    mb = torch.cat([kb * sign, sb, -sb], dim=-2).transpose(-2, -1)
    return ma, mb


def _mixing_backward(dma, dmb, dv: int, polarity: bool):
    """[dka; dsa] and [dkb; dsb] (B, H, d_v + 1, d) of _mixing."""
    if not polarity:
        dm = (dma + dmb).transpose(-2, -1) / 2
        return dm, dm
    ga, gb = dma.transpose(-2, -1), dmb.transpose(-2, -1)  # (B, H, d_v + 2, d)
    sign = torch.ones(dv, 1, dtype=gb.dtype, device=gb.device)
    sign[dv // 2:] = -1
    return (torch.cat([ga[..., :dv, :], ga[..., dv:dv + 1, :] + ga[..., dv + 1:, :]], dim=-2),
            torch.cat([gb[..., :dv, :] * sign, gb[..., dv:dv + 1, :] - gb[..., dv + 1:, :]], dim=-2))


def _bmm(a, b, acc=None):
    """a @ b over the leading (B, H) dims; with acc (an earlier result), acc += a @ b in place."""
    lead, rows, cols = a.shape[:-2], a.shape[-2], b.shape[-1]
    a3, b3 = a.reshape(-1, rows, a.shape[-1]), b.reshape(-1, b.shape[-2], cols)
    if acc is None:
        return torch.bmm(a3, b3).view(*lead, rows, cols)
    acc.view(-1, rows, cols).baddbmm_(a3, b3)
    return acc


def _core_forward(q, k, v, power, mask, eps: float, polarity: bool):
    """The linear-form core (`pola_linear`): its output, laid out as (B, N, H, d) in memory, and what
    `_core_backward` needs. v is written once more, contiguous and masked, with the mask as an extra
    column: vx^T a_k then holds v^T a_k and the sum of a_k over the real keys at once, and padded keys
    drop out of both without zeroing k (their gradients come out zero through vx as well)."""
    B, H, N, d = q.shape
    dv = v.shape[-1]
    m = key_mask(mask, q.dtype)
    n2 = 2 * mask.sum(-1).clamp(min=1).to(q.dtype)[:, None, None, None]  # the mean's n, the halves' 2
    pp = power[:, None, :]
    vx = q.new_empty(B, H, N, dv + 1)
    torch.mul(v, m, out=vx[..., :dv])
    vx[..., dv:] = m
    aq, bq, xq, lq = _power_features(q, pp)
    ak, bk, xk, lk = _power_features(k, pp)
    ka, kb = _bmm(vx.transpose(-2, -1), ak).div_(n2), _bmm(vx.transpose(-2, -1), bk).div_(n2)  # (B, H, d_v + 1, d)
    ma, mb = _mixing(ka[..., :dv, :], kb[..., :dv, :], ka[..., dv:, :], kb[..., dv:, :], polarity)
    r = _bmm(bq, mb, acc=_bmm(aq, ma))
    S = 2 if polarity else 1
    den = r[..., dv:, None] + eps  # (B, H, N, S, 1)
    out = r.new_empty(B, N, H, dv).transpose(1, 2)  # merged-heads memory: merge_heads is a view
    torch.div(r[..., :dv].unflatten(-1, (S, dv // S)), den, out=out.unflatten(-1, (S, dv // S)))
    return out, (power, vx, n2, aq, bq, xq, lq, ak, bk, xk, lk, ma, mb, den, out)


def _core_backward(saved, go, polarity: bool, need_p: bool):
    """Backward of `_core_forward`: (dq, dk, dv, dp), each (B, H, N, d) contiguous. dv is right at
    real positions only: the caller zeroes the padded ones (with whatever it adds to them)."""
    power, vx, n2, aq, bq, xq, lq, ak, bk, xk, lk, ma, mb, den, out = saved
    B, H, N, dv = out.shape
    S = den.shape[-2]
    # normalisation: d num = go / den, d den = -sum(go out) / den per stream
    dr = go.new_empty(B, H, N, dv + S)
    dnum = dr[..., :dv].unflatten(-1, (S, dv // S))
    torch.div(go.unflatten(-1, (S, dv // S)), den, out=dnum)
    dr[..., dv:] = -(dnum * out.unflatten(-1, (S, dv // S))).sum(-1)
    p = power[:, None, :]  # folded into the small matrices: the feature gradients come out times p
    # r = a_q Ma + b_q Mb
    pdaq, pdbq = _bmm(dr, ma.transpose(-2, -1) * p), _bmm(dr, mb.transpose(-2, -1) * p)
    dka, dkb = (t / n2 for t in _mixing_backward(_bmm(aq.transpose(-2, -1), dr), _bmm(bq.transpose(-2, -1), dr),
                                                 dv, polarity))
    # [ka; sa] = vx^T a_k (and the same for b)
    dvv = _bmm(bk, dkb[..., :dv, :].transpose(-2, -1), acc=_bmm(ak, dka[..., :dv, :].transpose(-2, -1)))
    pdak, pdbk = _bmm(vx, dka * p), _bmm(vx, dkb * p)
    dq, pdpq = _power_features_backward(aq, bq, xq, lq, pdaq, pdbq, need_p)
    dk, pdpk = _power_features_backward(ak, bk, xk, lk, pdak, pdbk, need_p)
    return dq, dk, dvv, (pdpq + pdpk) / power if need_p else None


class _PolaLinear(torch.autograd.Function):
    """The linear-form core as one autograd Function (see `pola_linear`)."""

    @staticmethod
    def forward(ctx, q, k, v, power, mask, eps, polarity):
        out, saved = _core_forward(q, k, v, power, mask, eps, polarity)
        ctx.save_for_backward(mask, *saved)
        ctx.polarity = polarity
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        mask, *saved = ctx.saved_tensors
        with float32_core(go.device):  # as the forward ran, whatever autocast surrounds the backward
            dq, dk, dv, dp = _core_backward(saved, go, ctx.polarity, ctx.needs_input_grad[3])
        return dq, dk, dv.mul_(key_mask(mask, dv.dtype)), dp, None, None, None


def pola_linear(q, k, v, power, mask, eps: float, polarity: bool = True) -> torch.Tensor:
    """The linear-form core: [os, oo] per head (B, H, N, d) (or the single positive stream).

    q, k: (B, H, N, d), already divided by softplus(s) (and k offset by the positional term);
    v: (B, H, N, d); power: p (H, d); mask: (B, N) bool. Padded keys and values add nothing, and
    their gradients are zero. The result's memory is laid out as (B, N, H, d): merge_heads of it is
    a view.

    With a = |x|^p and b = sign(x)|x|^p per channel, ReLU(+-x)^p = (a +- b) / 2, so both streams'
    numerators and denominators come from a_q Ma + b_q Mb with small (d, d + 2) matrices mixed from
    v^T a_k, v^T b_k and the key sums (`_mixing`)."""
    return _PolaLinear.apply(q, k, v, power, mask, eps, polarity)


def _conv(x, w, b):
    return F.conv2d(x, w, b, padding=(w.shape[-2] // 2, w.shape[-1] // 2), groups=x.shape[1])


def _conv_backward(x, w, gy, needs=(True, True, True)):
    """(dx, dw, db) of `_conv`. dx is the forward convolution with the flipped kernel; on CPU dw is
    `_depthwise_weight_grad` (torch's CPU depthwise backward is many times slower at these shapes)."""
    pad, C = (w.shape[-2] // 2, w.shape[-1] // 2), x.shape[1]
    dx = dw = db = None
    if needs[0]:
        dx = F.conv2d(gy, w.flip((-2, -1)), padding=pad, groups=C)
    if needs[1] and x.device.type == "cpu":
        dw = _depthwise_weight_grad(x, gy, *pad)
    elif needs[1]:
        dw = torch.nn.grad.conv2d_weight(x, w.shape, gy, padding=pad, groups=C)
    if needs[2]:
        db = gy.sum((0, 2, 3))
    return dx, dw, db


class _DepthwiseConvCPU(torch.autograd.Function):
    """Depthwise "same" Conv2d of a channels-last x with `_conv_backward` as its backward."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return _conv(x, w, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        with float32_core(gy.device):
            return _conv_backward(*ctx.saved_tensors, gy, ctx.needs_input_grad)


def _depthwise_weight_grad(x, gy, ph: int, pw: int) -> torch.Tensor:
    """dw[c, 0, i, j] = sum_{b, y, x} gy[b, c, y, x] xpad[b, c, y + i, x + j]: (C, 1, 2ph + 1, 2pw + 1),
    for channels-last x and gy (their memory is (B, h, w, C): the (B, N, D) of the layer)."""
    B, C, h, wd = x.shape
    if ph == 0:
        return _tap_sums(x.permute(0, 2, 3, 1).reshape(B, wd, C), gy.permute(0, 2, 3, 1).reshape(B, wd, C),
                         pw).view(C, 1, 1, -1)
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (B, h + 2ph, wd + 2pw, C)
    # 2-D: the K x K taps as one depthwise convolution. The B padded images are stacked into one
    # tall image (B (h + 2ph) rows, still channels-last) and correlated with the stacked gradients
    # (each followed by 2ph zero rows, the last ones cut) as the kernel: each output (i, j) then
    # sums over all images, and a window reaches from one image into the next only where the
    # gradient kernel is zero. Only the gradient is transposed (the kernel must be channel-major).
    hp = h + 2 * ph
    tall = xp.reshape(1, B * hp, wd + 2 * pw, C).permute(0, 3, 1, 2)
    gp = F.pad(gy.permute(0, 2, 3, 1), (0, 0, 0, 0, 0, 2 * ph)).reshape(B * hp, wd, C)[: B * hp - 2 * ph]
    kernel = gp.permute(2, 0, 1).unsqueeze(1).contiguous()  # (C, 1, B hp - 2ph, wd)
    return F.conv2d(tall, kernel, groups=C).transpose(0, 1)


def _tap_sums(x: torch.Tensor, g: torch.Tensor, p: int) -> torch.Tensor:
    """dw[c, t] = sum_{b, n} g[b, n, c] x[b, n + t - p, c] (x zero outside its sequence), (C, 2p + 1):
    the weight gradient of a 1-D depthwise convolution, x and g (B, N, C) (channels-last views).

    Each tap reads x and g once, with no product written out: over the B N flattened tokens the
    products of channel c with itself are the diagonal of a (G x G) block of g^T x_shifted for each
    group of G = 16 channels (one batched matmul on strided views, no copy); the few products that
    the flattening pairs across two sequences are then taken off."""
    B, N, C = x.shape
    if N <= p:  # a shift past a whole sequence: the plain product and sum per tap
        xp = F.pad(x, (0, 0, p, p))
        return torch.stack([(g * xp[:, t:t + N]).sum((0, 1)) for t in range(2 * p + 1)], dim=-1)
    group = 16 if C % 16 == 0 else C
    xf, gf = x.reshape(B * N, C), g.reshape(B * N, C)
    dw = x.new_empty(C, 2 * p + 1)
    for t in range(2 * p + 1):
        s = t - p
        lo, hi = max(0, -s), B * N - max(0, s)
        blocks = torch.bmm(gf[lo:hi].view(-1, C // group, group).permute(1, 2, 0),
                           xf[lo + s:hi + s].view(-1, C // group, group).transpose(0, 1))
        dw[:, t] = blocks.diagonal(dim1=1, dim2=2).reshape(C)
        if s > 0:  # the last s tokens of a sequence met the first s of the next
            dw[:, t] -= (g[:-1, N - s:] * x[1:, :s]).sum((0, 1))
        elif s < 0:
            dw[:, t] -= (g[1:, :-s] * x[:-1, N + s:]).sum((0, 1))
    return dw


def depthwise_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Depthwise "same" convolution of x (B, C, h, w) (channels-last views welcome) with w (C, 1, kh, kw)
    (odd sizes) and bias b (C,)."""
    if x.device.type == "cpu":
        return _DepthwiseConvCPU.apply(x, w, b)
    return _conv(x, w, b)


@dataclass(frozen=True)
class _Block:
    """What `pola_block` needs besides tensors: heads, eps, polarity, and the convolution's (h, w)
    view of the N tokens ((1, N) on sequences)."""
    heads: int
    eps: float
    polarity: bool
    grid: tuple[int, int]


def _channels_last(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, D) -> the (B, D, h, w) view the convolution takes (channels-last memory: no copy)."""
    return x.view(x.shape[0], *grid, x.shape[-1]).permute(0, 3, 1, 2)


def _tokens(y: torch.Tensor) -> torch.Tensor:
    """The inverse of `_channels_last`."""
    return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, y.shape[1])


def _split_projection(qkv: torch.Tensor, key_offset: torch.Tensor | None, mask: torch.Tensor):
    """q, k (+ key_offset) and the masked v, each (B, N, D), from the projection [q, k, v] (B, N, 3D)."""
    # unbind, not slices: under torch autograd the backward stacks the three gradients in one pass
    # (a slice's backward fills a zero tensor of the whole projection for each)
    q, k, v = qkv.unflatten(-1, (3, -1)).unbind(-2)
    if key_offset is not None:
        k = k + key_offset
    return q, k, v * mask[..., None].to(v.dtype)


class _PolaBlock(torch.autograd.Function):
    """From the projections [q, k, v] and g to the gated output, core + convolution + gate in one
    Function (see `pola_block`): the backward writes dq, dk and dv straight into one gradient of the
    projection (no per-slice gradients stacked afterwards, no gradient sums of v)."""

    @staticmethod
    def forward(ctx, qkv, g, power, mask, conv_w, conv_b, key_offset, block: _Block):
        B, N, _ = qkv.shape
        q, k, vm = _split_projection(qkv, key_offset, mask)
        heads = lambda t: split_heads(t, block.heads)
        out, saved = _core_forward(heads(q), heads(k), heads(vm), power, mask, block.eps, block.polarity)
        o = out.transpose(1, 2).view(B, N, -1)  # (B, N, H, d) memory: a view
        if conv_w is not None:
            o = _tokens(_conv(_channels_last(vm, block.grid), conv_w, conv_b)).add_(o)
        ctx.save_for_backward(g, mask, vm, conv_w, None if g is None else o, *saved)
        ctx.block = block
        return o if g is None else o * g

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        with float32_core(go.device):
            return _PolaBlock._backward(ctx, go)

    @staticmethod
    def _backward(ctx, go):
        g, mask, vm, conv_w, o, *saved = ctx.saved_tensors
        block, (B, N, D) = ctx.block, vm.shape
        dg = None if g is None else go * o
        do = go.contiguous() if g is None else go * g  # the views below need (B, N, D) memory
        heads = lambda t: split_heads(t, block.heads)
        dq, dk, dv, dp = _core_backward(saved, heads(do), block.polarity, ctx.needs_input_grad[2])
        dqkv = go.new_empty(B, N, 3, D)
        heads(dqkv[:, :, 0]).copy_(dq)
        heads(dqkv[:, :, 1]).copy_(dk)
        dv = dv.transpose(1, 2)  # (B, N, H, d)
        dw = db = None
        if conv_w is not None:
            dx, dw, db = _conv_backward(_channels_last(vm, block.grid), conv_w, _channels_last(do, block.grid),
                                        (True, *ctx.needs_input_grad[4:6]))
            dv = _tokens(dx).view_as(dv).add_(dv)
        torch.mul(dv, mask[:, :, None, None].to(dv.dtype), out=dqkv[:, :, 2].view_as(dv))
        d_offset = dqkv[:, :, 1].sum(0) if ctx.needs_input_grad[6] else None
        return dqkv.view(B, N, 3 * D), dg, dp, None, dw, db, d_offset, None


def pola_block(qkv, g, power, mask, conv_w, conv_b, key_offset, block: _Block) -> torch.Tensor:
    """The layer between its projections: qkv = [q, k, v] (B, N, 3D) (q and k already divided by
    softplus(s)) and the gate g (B, N, D) (or None) -> ([os, oo] + dwc(v)) * g (B, N, D).

    power: p (H, d); mask: (B, N) bool; conv_w, conv_b: the convolution as a depthwise Conv2d kernel
    (D, 1, kh, kw) and bias (D,), or None (no convolution); key_offset: (N, D) added to k (the
    positional term) or None. One autograd Function: the core is `_core_forward` /
    `_core_backward` (as in `pola_linear`), the convolution `_conv` / `_conv_backward`."""
    return _PolaBlock.apply(qkv, g, power, mask, conv_w, conv_b, key_offset, block)


# --- the reference form -------------------------------------------------------------------------


def reference_features(q, k, power):
    """(q+, q-, k+, k-) of the module docstring, written plainly. q, k: (B, H, N, d); power (H, d)."""
    p = power[None, :, None, :]
    return torch.relu(q) ** p, torch.relu(-q) ** p, torch.relu(k) ** p, torch.relu(-k) ** p


# --- the layer ------------------------------------------------------------------------------------


@register("pola", complexity="O(N d^2) time, O(N d) memory",
          presets={"pola-a3": {"alpha": 3.0}, "pola-a5": {"alpha": 5.0}, "pola-a7": {"alpha": 7.0}})
class PolaAttention(AttentionBase):
    """PolaFormer (Meng et al., 2025): polarity-aware linear attention with a learnable power, 1-D form
    (2-D convolution on image tasks)."""

    linear_memory = True

    @dataclass
    class Options:
        alpha: float = 3.0
        dwc_kernel: int = 5
        polarity: bool = True
        gate: bool = True
        dwc: bool = True
        dwc_2d: bool = True
        key_pos: bool = False
        gate_init: Literal["kaiming", "zeros", "normal", "uniform", "ones"] = "kaiming"
        learnable_power: bool = True
        eps: float = 1e-6
        impl: Literal["auto", "fused", "fast", "reference"] = "auto"

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
        self.key_position = nn.Parameter(torch.zeros(max_len, dim)) if options.key_pos else None
        self.gate = nn.Linear(dim, dim) if options.gate else None
        if self.gate is not None and GATE_INITS[options.gate_init] is not None:
            GATE_INITS[options.gate_init](self.gate.weight)
        kk = options.dwc_kernel
        self.dwc = None
        if options.dwc and self.conv_2d:  # the official layout: head_dim channels, shared by the heads
            self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kk, padding=kk // 2, groups=self.head_dim)
        elif options.dwc:
            self.dwc = nn.Conv1d(dim, dim, kk, padding=kk // 2, groups=dim)

    @property
    def conv_2d(self) -> bool:
        return self.options.dwc_2d and self.grid is not None

    def info(self) -> dict:
        o = self.options
        if not o.dwc:
            dwc = "off"
        elif self.conv_2d:
            dwc = f"2d {o.dwc_kernel}x{o.dwc_kernel} over the {self.grid[0]}x{self.grid[1]} grid"
        else:
            dwc = f"1d, kernel {o.dwc_kernel}"
        return {"dwc": dwc, "key_pos": o.key_pos, **kernel_info(o.impl, self)}

    def exponent(self) -> torch.Tensor:
        """p = 1 + alpha * sigmoid(w), (H, d)."""
        return 1 + self.options.alpha * torch.sigmoid(self.power)

    def _check_grid(self, n: int) -> None:
        if self.conv_2d and self.dwc is not None and n != self.grid[0] * self.grid[1]:
            raise ValueError(f"pola: the 2-D convolution needs the {self.grid[0]}x{self.grid[1]} grid's "
                             f"{self.grid[0] * self.grid[1]} tokens, got a sequence of {n} (build the layer "
                             f"with grid=None, or dwc_2d=False, for other lengths)")

    def _dwc_kernel(self, dtype):
        """The convolution as a depthwise Conv2d kernel over (D channels, rows, columns): (D, 1, kh, kw),
        and its bias (D,). The 2-D kernel is shared by the heads, so it repeats per head."""
        w, b = self.dwc.weight.to(dtype), self.dwc.bias.to(dtype)
        if self.conv_2d:
            return w.repeat(self.heads, 1, 1, 1), b.repeat(self.heads)
        return w[:, :, None, :], b

    def _conv_grid(self, n: int) -> tuple[int, int]:
        """The (h, w) view of the n tokens the convolution runs over: the image, or (1, n)."""
        return self.grid if self.conv_2d else (1, n)

    def _conv_fast(self, vm: torch.Tensor) -> torch.Tensor:
        """dwc of the masked v (B, N, D) -> (B, N, D), on its channels-last view (no copy)."""
        return _tokens(depthwise_conv(_channels_last(vm, self._conv_grid(vm.shape[1])), *self._dwc_kernel(vm.dtype)))

    def _scaled_projection(self, x: torch.Tensor) -> torch.Tensor:
        """[q / softplus(s), k / softplus(s), v] (B, N, 3D) from one matmul: the scale is folded into
        the weight rows of q and k (no pass over (B, N, D) for it)."""
        inv = 1 / F.softplus(self.scale)
        rows = torch.cat([inv, inv, torch.ones_like(inv)])
        return F.linear(x, self.qkv.weight * rows[:, None], self.qkv.bias * rows)

    def _forward_fast(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        qkv, g = self._scaled_projection(x), self.gate(x) if self.gate is not None else None
        with float32_core(x.device):
            qkv, g = qkv.to(core_dtype(x.dtype)), g if g is None else g.to(core_dtype(x.dtype))
            o = self._mix_fused(qkv, g, mask) if use_fused(self.options.impl, qkv) else self._mix(qkv, g, mask)
        return self.out(o)

    def _key_offset(self, n: int, dtype) -> torch.Tensor | None:
        """The positional term as the scaled k receives it, P[:n] / softplus(s) (n, D), or None."""
        if self.key_position is None:
            return None
        return self.key_position[:n].to(dtype) / F.softplus(self.scale.to(dtype))

    def _mix(self, qkv: torch.Tensor, g: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """The torch path from the projections to the gated output: `pola_block`, one Function."""
        N, dtype = qkv.shape[1], qkv.dtype
        conv_w, conv_b = self._dwc_kernel(dtype) if self.dwc is not None else (None, None)
        block = _Block(self.heads, self.options.eps, self.options.polarity, self._conv_grid(N))
        return pola_block(qkv, g, self.exponent().to(dtype), mask, conv_w, conv_b, self._key_offset(N, dtype), block)

    def _mix_fused(self, qkv: torch.Tensor, g: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """The same with the fused kernels as the core and torch autograd around them (on a GPU the
        per-slice gradients cost little)."""
        q, k, vm = _split_projection(qkv, self._key_offset(qkv.shape[1], qkv.dtype), mask)
        o = merge_heads(self.linear_core(split_heads(q, self.heads), split_heads(k, self.heads),
                                         split_heads(vm, self.heads), mask))
        if self.dwc is not None:
            o = o + self._conv_fast(vm)
        return o if g is None else o * g

    def linear_core(self, q, k, vm, mask):
        """The linear-form core on scaled q, k and masked v, each (B, H, N, d): the fused kernels
        when `impl` selects them, else `pola_linear` (the same function: tests/test_fused_kernels.py).
        pola_linear lays its result out as (B, N, H, d), so merging the heads is a view."""
        args = (self.exponent().to(q.dtype), mask, self.options.eps, self.options.polarity)
        if use_fused(self.options.impl, q):
            return fused_pola(q, k, vm, *args)
        return pola_linear(q, k, vm, *args)

    # reference form: every step as written in the module docstring

    def _scaled_qk(self, x):
        q, k, v = self.project(x)
        return (*self._scale(q, k), v)

    def _scale(self, q, k):
        """q / softplus(s) and (k + P) / softplus(s) on (B, H, N, d)."""
        if self.key_position is not None:
            k = k + split_heads(self.key_position[None, : k.shape[2]].to(k.dtype), self.heads)
        scale = F.softplus(self.scale.to(q.dtype)).view(self.heads, 1, self.head_dim)
        return q / scale, k / scale

    def core(self, q, k, v, mask):
        """The token mixing alone, on projected q, k, v (B, H, N, d): the linear-form core without
        the convolution and the gate, which is what `attention_maps` describes."""
        return self.linear_core(*self._scale(q, k), v * key_mask(mask, v.dtype), mask)

    def _streams(self, q, k, mask):
        """The (query features, key features) pairs of each stream, and how v splits between them."""
        q_pos, q_neg, k_pos, k_neg = reference_features(q, k * key_mask(mask, k.dtype), self.exponent().to(q.dtype))
        if not self.options.polarity:
            return [(q_pos, k_pos)]
        phi_k = torch.cat([k_pos, k_neg], dim=-1)
        return [(torch.cat([q_pos, q_neg], dim=-1), phi_k), (torch.cat([q_neg, q_pos], dim=-1), phi_k)]

    def _conv_reference(self, vm: torch.Tensor) -> torch.Tensor:
        """dwc of the masked v (B, N, D): Conv2d on the (B * H, d, h, w) grid, or the 1-D shifted sums."""
        if not self.conv_2d:
            return sequence_conv(vm, self.dwc.weight[:, 0, :].T.to(vm.dtype), self.dwc.bias.to(vm.dtype))
        B, N, D = vm.shape
        grid = split_heads(vm, self.heads).reshape(B * self.heads, *self.grid, self.head_dim).permute(0, 3, 1, 2)
        y = F.conv2d(grid, self.dwc.weight.to(vm.dtype), self.dwc.bias.to(vm.dtype),
                     padding=self.options.dwc_kernel // 2, groups=self.head_dim)
        return merge_heads(y.reshape(B, self.heads, self.head_dim, N).transpose(-2, -1))

    def _forward_reference(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._scaled_qk(x)
        g = self.gate(x) if self.gate is not None else None
        with float32_core(x.device):
            streams = self._streams(q, k, mask)
            vs = v.chunk(len(streams), dim=-1)
            o = torch.cat([quadratic_linear_attention(fq, fk, vv, mask, self.options.eps, mean=True)[0]
                           for (fq, fk), vv in zip(streams, vs)], dim=-1)
            o = merge_heads(o)
            if self.dwc is not None:
                o = o + self._conv_reference(merge_heads(v * key_mask(mask, v.dtype)))
            if g is not None:
                o = o * g.to(core_dtype(x.dtype))
        return self.out(o)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_grid(x.shape[1])
        if self.options.impl == "reference":
            return self._forward_reference(x, mask)
        return self._forward_fast(x, mask)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The row-normalised N x N attention maps of each stream, {"same-sign": A^s,
        "opposite-sign": A^o} (or {"attention": A} without polarity), each (B, H, N, N): A^s mixes
        the first half of v's head channels, A^o the second (AttentionBase.attention_maps).
        Without dwc and gate. Quadratic memory."""
        q, k, v = self._scaled_qk(x)
        names = ["same-sign", "opposite-sign"] if self.options.polarity else ["attention"]
        with float32_core(x.device):
            return {name: quadratic_linear_attention(fq, fk, v, mask, self.options.eps, mean=True)[1]
                    for name, (fq, fk) in zip(names, self._streams(q, k, mask))}
