"""Triton kernels of the fused linear-form attentions (attentions/fused_linear.py holds the math, the
launch plan and the autograd wrappers). The functions below are written in Triton's language but
are plain Python functions until `jit_kernels()` (called by fused_linear on the first fused op)
imports triton and turns each into a Triton function: triton is an optional dependency, heavy to
import (seconds), and decides at its import whether kernels are compiled or run in its CPU
interpreter (TRITON_INTERPRET=1), so importing the attentions package never imports it.

One family of kernels serves every feature map. Per (batch, head) the features come in one or two
halves A, B (each BLOCK_D wide, zero beyond the real width D) and the state is

    S_A = c sum_j A(k_j)^T v_j,   S_B = c sum_j B(k_j)^T v_j     (BLOCK_D x BLOCK_V, all of v)
    z_A = c sum_j A(k_j),         z_B = c sum_j B(k_j)           (real keys j only)

with c = 1/n (MEAN) or 1. Output channel col of query i is

    num = A(q_i) M1 + B(q_i) M2,   M1 = S_A, M2 = S_B   (stream 0: every channel without SWAP)
                                   M1 = S_B, M2 = S_A   (stream 1: the channels col >= SPLIT with SWAP)
    den = A(q_i) . z_A + B(q_i) . z_B  (stream 0)  or  B(q_i) . z_A + A(q_i) . z_B  (stream 1)
    out = num / (den + eps)   (or / max(den, eps) with CLAMP, cosFormer's rule)

so pola's opposite-sign stream (queries [q-, q+] against v's last d/2 channels) is the same two
dots with the state's columns swapped. Feature maps (KIND): 0 elu + 1 (one half), 1 |x|^p split
by sign with a per-channel power p (pola; one half = ReLU(x)^p), 2 ReLU(x) times sin / cos of a
per-token angle (cosFormer).

Rules kept for the compiler on Hopper: every tl.dot operand is at least 16 x 16 and every block a
power of two (BLOCK_N, BLOCK_D, BLOCK_V >= 16, real widths masked); batch offsets are int64.
"""

from __future__ import annotations  # keeps the `tl.constexpr` annotations unevaluated until jit_kernels()

import inspect

tl = None  # triton.language, bound by jit_kernels()
INTERPRETED: bool | None = None  # whether jit_kernels() made interpreted (True) or compiled kernels


# --- small pieces --------------------------------------------------------------------------------


def _load_rows(ptr, offs_n, row_ok, offs_c, col_ok, stride_n):
    """A (BLOCK_N, BLOCK_C) tile of a (N, C) matrix with unit column stride, as float32, zero outside."""
    x = tl.load(ptr + offs_n[:, None] * stride_n + offs_c[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    return x.to(tl.float32)


def _store_rows(ptr, x, offs_n, row_ok, offs_c, col_ok, stride_n):
    tl.store(ptr + offs_n[:, None] * stride_n + offs_c[None, :], x.to(ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


def _mat_ptrs(base, j, offs_d, offs_v, BLOCK_D: tl.constexpr, BLOCK_V: tl.constexpr):
    """Pointers of state matrix j (row-major BLOCK_D x BLOCK_V) in a flat per-(batch, head) state."""
    return base + j * BLOCK_D * BLOCK_V + offs_d[:, None] * BLOCK_V + offs_v[None, :]


def _features(x, p, sin_t, cos_t, col_ok, KIND: tl.constexpr):
    """(A, B) feature halves of a (BLOCK_N, BLOCK_D) tile; for one-half maps B is A (unused)."""
    if KIND == 0:  # elu(x) + 1; zero on the padded channels, where elu(0) + 1 would be 1
        fa = tl.where(col_ok[None, :], tl.where(x > 0, x + 1.0, tl.exp(x)), 0.0)
        fb = fa
    elif KIND == 1:  # ReLU(x)^p and ReLU(-x)^p: |x|^p split by sign
        ax = tl.abs(x)
        mag = tl.where(ax > 0, tl.exp(p[None, :] * tl.log(tl.where(ax > 0, ax, 1.0))), 0.0)
        fa = tl.where(x > 0, mag, 0.0)
        fb = tl.where(x < 0, mag, 0.0)
    else:  # ReLU(x) sin(theta_i), ReLU(x) cos(theta_i)
        r = tl.maximum(x, 0.0)
        fa = r * sin_t[:, None]
        fb = r * cos_t[:, None]
    return fa, fb


def _features_bwd(x, da, db, p, sin_t, cos_t, KIND: tl.constexpr, HALVES: tl.constexpr):
    """Gradient w.r.t. x of sum(da * A + db * B), and the per-element part of the gradient
    w.r.t. the power p (zero for maps without one)."""
    if KIND == 0:
        dx = da * tl.where(x > 0, 1.0, tl.exp(x))
        dp = dx * 0.0
    elif KIND == 1:
        ax = tl.abs(x)
        safe = tl.where(ax > 0, ax, 1.0)
        mag = tl.where(ax > 0, tl.exp(p[None, :] * tl.log(safe)), 0.0)
        if HALVES == 2:
            g = tl.where(x > 0, da, tl.where(x < 0, db, 0.0))
        else:
            g = tl.where(x > 0, da, 0.0)
        # d|x|^p/dx = p |x|^p sign(x) / |x| = p |x|^p / x ;  d|x|^p/dp = |x|^p log|x|
        dx = g * p[None, :] * mag / tl.where(ax > 0, x, 1.0)
        dp = g * mag * tl.log(safe)
    else:
        dx = tl.where(x > 0, da * sin_t[:, None] + db * cos_t[:, None], 0.0)
        dp = dx * 0.0
    return dx, dp


def _feature_inputs(P, TH, h, b, s_p, s_thb, offs_n, row_ok, offs_d, col_ok, KIND: tl.constexpr):
    """What the feature map reads besides x: the power row of head h, or the angles of the rows."""
    if KIND == 1:
        p = tl.load(P + h * s_p + offs_d, mask=col_ok, other=1.0).to(tl.float32)
    else:
        p = offs_d.to(tl.float32)  # unused
    if KIND == 2:
        th = tl.load(TH + b * s_thb + offs_n, mask=row_ok, other=0.0).to(tl.float32)
        sin_t, cos_t = tl.sin(th), tl.cos(th)
    else:
        sin_t = offs_n.to(tl.float32)  # unused
        cos_t = sin_t
    return p, sin_t, cos_t


def _scale(st, CNT: tl.constexpr, MEAN: tl.constexpr):
    if MEAN:
        c = 1.0 / tl.maximum(tl.load(st + CNT), 1.0)
    else:
        c = 1.0
    return c


def _load_state(st, offs_d, offs_v, c, HALVES: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_V: tl.constexpr):
    """(S_A, S_B, z_A, z_B) of one (batch, head), times c; for one-half maps the B slots repeat A."""
    sa = tl.load(_mat_ptrs(st, 0, offs_d, offs_v, BLOCK_D, BLOCK_V)) * c
    za = tl.load(st + HALVES * BLOCK_D * BLOCK_V + offs_d) * c
    sb = sa
    zb = za
    if HALVES == 2:
        sb = tl.load(_mat_ptrs(st, 1, offs_d, offs_v, BLOCK_D, BLOCK_V)) * c
        zb = tl.load(st + HALVES * BLOCK_D * BLOCK_V + BLOCK_D + offs_d) * c
    return sa, sb, za, zb


def _store_state(st, sa, sb, za, zb, offs_d, offs_v, HALVES: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_V: tl.constexpr):
    tl.store(_mat_ptrs(st, 0, offs_d, offs_v, BLOCK_D, BLOCK_V), sa)
    tl.store(st + HALVES * BLOCK_D * BLOCK_V + offs_d, za)
    if HALVES == 2:
        tl.store(_mat_ptrs(st, 1, offs_d, offs_v, BLOCK_D, BLOCK_V), sb)
        tl.store(st + HALVES * BLOCK_D * BLOCK_V + BLOCK_D + offs_d, zb)


def _stream1(offs_v, SPLIT, STREAMS: tl.constexpr):
    """Which output channels belong to stream 1 (none with one stream)."""
    if STREAMS == 2:
        swap = offs_v >= SPLIT
    else:
        swap = offs_v < 0
    return swap


def _stream_mats(sa, sb, swap):
    """(M1, M2): the state with its columns of stream 1 (swap) exchanged between the halves."""
    return tl.where(swap[None, :], sb, sa), tl.where(swap[None, :], sa, sb)


def _outputs(fa, fb, m1, m2, za, zb, swap, eps,
             HALVES: tl.constexpr, STREAMS: tl.constexpr, CLAMP: tl.constexpr, PRECISION: tl.constexpr):
    """Per query row: num (BLOCK_N, BLOCK_V), the denominators of both streams (den0, den1, before
    eps), and the effective denominator of each output channel (den_eff, after eps / clamp)."""
    num = tl.dot(fa, m1, input_precision=PRECISION)
    den0 = tl.sum(fa * za[None, :], axis=1)
    den1 = den0
    if HALVES == 2:
        num += tl.dot(fb, m2, input_precision=PRECISION)
        den0 += tl.sum(fb * zb[None, :], axis=1)
    if STREAMS == 2:
        den1 = tl.sum(fb * za[None, :], axis=1) + tl.sum(fa * zb[None, :], axis=1)
    den = tl.where(swap[None, :], den1[:, None], den0[:, None])
    if CLAMP:
        den_eff = tl.maximum(den, eps)
    else:
        den_eff = den + eps
    return num, den0, den1, den_eff


def _backprop_out(num, den0, den1, den_eff, do, swap, eps, STREAMS: tl.constexpr, CLAMP: tl.constexpr):
    """For out = num / den_eff and the incoming do: dnum (BLOCK_N, BLOCK_V) and d den of each stream."""
    g = do / den_eff
    t = -do * num / (den_eff * den_eff)  # d/d den of each channel's out, times do
    h0 = tl.sum(tl.where(swap[None, :], 0.0, t), axis=1)
    h1 = h0 * 0.0
    if STREAMS == 2:
        h1 = tl.sum(tl.where(swap[None, :], t, 0.0), axis=1)
    if CLAMP:  # the clamp passes no gradient to den where it bites
        h0 = tl.where(den0 > eps, h0, 0.0)
    return g, h0, h1


# --- forward ---------------------------------------------------------------------------------------


def _state_kernel(
    K, V, M, P, TH, ST,
    N, H, blocks_per_split, D, DV,
    s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_mb, s_p, s_thb, s_split,
    KIND: tl.constexpr, HALVES: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Grid (B*H, splits): the un-scaled state sums and the real-key count of one (batch, head) over
    one contiguous range of key blocks (with one split the result is final)."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_V)
    col_ok = offs_d < D
    v_ok = offs_v < DV
    sa = tl.zeros((BLOCK_D, BLOCK_V), tl.float32)
    za = tl.zeros((BLOCK_D,), tl.float32)
    sb = sa
    zb = za
    count = tl.zeros((BLOCK_N,), tl.float32)
    lo = split * blocks_per_split
    hi = tl.minimum(lo + blocks_per_split, tl.cdiv(N, BLOCK_N))
    for blk in range(lo, hi):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = offs_n < N
        real = tl.load(M + b * s_mb + offs_n, mask=row_ok, other=0) != 0
        m = real.to(tl.float32)
        p, sin_t, cos_t = _feature_inputs(P, TH, h, b, s_p, s_thb, offs_n, row_ok, offs_d, col_ok, KIND)
        # padded keys and values are zeroed before anything else: their content never counts
        x = tl.where(real[:, None], _load_rows(k_base, offs_n, row_ok, offs_d, col_ok, s_kn), 0.0)
        v = tl.where(real[:, None], _load_rows(v_base, offs_n, row_ok, offs_v, v_ok, s_vn), 0.0)
        fa, fb = _features(x, p, sin_t, cos_t, col_ok, KIND)
        fa = fa * m[:, None]
        sa += tl.dot(tl.trans(fa), v, input_precision=PRECISION)
        za += tl.sum(fa, axis=0)
        if HALVES == 2:
            fb = fb * m[:, None]
            sb += tl.dot(tl.trans(fb), v, input_precision=PRECISION)
            zb += tl.sum(fb, axis=0)
        count += m
    STATE: tl.constexpr = HALVES * (BLOCK_D * BLOCK_V + BLOCK_D) + 1
    st = ST + split * s_split + bh * STATE
    _store_state(st, sa, sb, za, zb, offs_d, offs_v, HALVES, BLOCK_D, BLOCK_V)
    tl.store(st + STATE - 1, tl.sum(count, axis=0))


def _output_kernel(
    Q, P, TH, ST, O,
    N, H, eps, D, DV, SPLIT,
    s_qb, s_qh, s_qn, s_ob, s_oh, s_on, s_p, s_thb,
    KIND: tl.constexpr, HALVES: tl.constexpr, STREAMS: tl.constexpr, MEAN: tl.constexpr, CLAMP: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Grid (query blocks, B*H): the outputs of BLOCK_N queries from the final state."""
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = offs_n < N
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_V)
    col_ok = offs_d < D
    v_ok = offs_v < DV
    swap = _stream1(offs_v, SPLIT, STREAMS)
    STATE: tl.constexpr = HALVES * (BLOCK_D * BLOCK_V + BLOCK_D) + 1
    st = ST + bh * STATE
    sa, sb, za, zb = _load_state(st, offs_d, offs_v, _scale(st, STATE - 1, MEAN), HALVES, BLOCK_D, BLOCK_V)
    m1, m2 = _stream_mats(sa, sb, swap)
    p, sin_t, cos_t = _feature_inputs(P, TH, h, b, s_p, s_thb, offs_n, row_ok, offs_d, col_ok, KIND)
    x = _load_rows(Q + b * s_qb + h * s_qh, offs_n, row_ok, offs_d, col_ok, s_qn)
    fa, fb = _features(x, p, sin_t, cos_t, col_ok, KIND)
    num, den0, den1, den_eff = _outputs(fa, fb, m1, m2, za, zb, swap, eps, HALVES, STREAMS, CLAMP, PRECISION)
    _store_rows(O + b * s_ob + h * s_oh, num / den_eff, offs_n, row_ok, offs_v, v_ok, s_on)


# --- backward --------------------------------------------------------------------------------------


def _dstate_kernel(
    Q, DO, P, TH, ST, DST,
    N, H, eps, blocks_per_split, D, DV, SPLIT,
    s_qb, s_qh, s_qn, s_db, s_dh, s_dn, s_p, s_thb, s_split,
    KIND: tl.constexpr, HALVES: tl.constexpr, STREAMS: tl.constexpr, MEAN: tl.constexpr, CLAMP: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Grid (B*H, splits): the gradient of the loss w.r.t. the (scaled) state, summed over one range
    of query blocks (the outputs are recomputed, not stored)."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_V)
    col_ok = offs_d < D
    v_ok = offs_v < DV
    swap = _stream1(offs_v, SPLIT, STREAMS)
    STATE: tl.constexpr = HALVES * (BLOCK_D * BLOCK_V + BLOCK_D) + 1
    st = ST + bh * STATE
    sa, sb, za, zb = _load_state(st, offs_d, offs_v, _scale(st, STATE - 1, MEAN), HALVES, BLOCK_D, BLOCK_V)
    m1, m2 = _stream_mats(sa, sb, swap)
    q_base = Q + b * s_qb + h * s_qh
    do_base = DO + b * s_db + h * s_dh
    dm1 = tl.zeros((BLOCK_D, BLOCK_V), tl.float32)  # gradients w.r.t. M1, M2
    dm2 = dm1
    dza = tl.zeros((BLOCK_D,), tl.float32)
    dzb = dza
    lo = split * blocks_per_split
    hi = tl.minimum(lo + blocks_per_split, tl.cdiv(N, BLOCK_N))
    for blk in range(lo, hi):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = offs_n < N
        p, sin_t, cos_t = _feature_inputs(P, TH, h, b, s_p, s_thb, offs_n, row_ok, offs_d, col_ok, KIND)
        x = _load_rows(q_base, offs_n, row_ok, offs_d, col_ok, s_qn)
        fa, fb = _features(x, p, sin_t, cos_t, col_ok, KIND)
        do = _load_rows(do_base, offs_n, row_ok, offs_v, v_ok, s_dn)
        num, den0, den1, den_eff = _outputs(fa, fb, m1, m2, za, zb, swap, eps, HALVES, STREAMS, CLAMP, PRECISION)
        g, h0, h1 = _backprop_out(num, den0, den1, den_eff, do, swap, eps, STREAMS, CLAMP)
        dm1 += tl.dot(tl.trans(fa), g, input_precision=PRECISION)
        dza += tl.sum(h0[:, None] * fa, axis=0)
        if HALVES == 2:
            dm2 += tl.dot(tl.trans(fb), g, input_precision=PRECISION)
            dzb += tl.sum(h0[:, None] * fb, axis=0)
        if STREAMS == 2:  # stream 1's denominator reads the query halves swapped
            dza += tl.sum(h1[:, None] * fb, axis=0)
            dzb += tl.sum(h1[:, None] * fa, axis=0)
    dsa, dsb = _stream_mats(dm1, dm2, swap)
    dst = DST + split * s_split + bh * STATE
    _store_state(dst, dsa, dsb, dza, dzb, offs_d, offs_v, HALVES, BLOCK_D, BLOCK_V)
    tl.store(dst + STATE - 1, 0.0)


def _grad_kernel(
    Q, K, V, M, DO, P, TH, ST, DST, DQ, DK, DVAL, DP,
    N, H, eps, D, DV, SPLIT,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_mb, s_db, s_dh, s_dn,
    s_gqb, s_gqh, s_gqn, s_gkb, s_gkh, s_gkn, s_gvb, s_gvh, s_gvn, s_p, s_thb,
    KIND: tl.constexpr, HALVES: tl.constexpr, STREAMS: tl.constexpr, MEAN: tl.constexpr, CLAMP: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Grid (token blocks, B*H): dq (these tokens as queries, from the state), dk and dv (the same
    tokens as keys, from the state's gradient), and this block's part of the power's gradient,
    DP[blk, bh, :] (summed by the caller: no atomics)."""
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = offs_n < N
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_V)
    col_ok = offs_d < D
    v_ok = offs_v < DV
    swap = _stream1(offs_v, SPLIT, STREAMS)
    STATE: tl.constexpr = HALVES * (BLOCK_D * BLOCK_V + BLOCK_D) + 1
    st = ST + bh * STATE
    c = _scale(st, STATE - 1, MEAN)
    sa, sb, za, zb = _load_state(st, offs_d, offs_v, c, HALVES, BLOCK_D, BLOCK_V)
    m1, m2 = _stream_mats(sa, sb, swap)
    p, sin_t, cos_t = _feature_inputs(P, TH, h, b, s_p, s_thb, offs_n, row_ok, offs_d, col_ok, KIND)

    # these tokens as queries
    xq = _load_rows(Q + b * s_qb + h * s_qh, offs_n, row_ok, offs_d, col_ok, s_qn)
    fa, fb = _features(xq, p, sin_t, cos_t, col_ok, KIND)
    do = _load_rows(DO + b * s_db + h * s_dh, offs_n, row_ok, offs_v, v_ok, s_dn)
    num, den0, den1, den_eff = _outputs(fa, fb, m1, m2, za, zb, swap, eps, HALVES, STREAMS, CLAMP, PRECISION)
    g, h0, h1 = _backprop_out(num, den0, den1, den_eff, do, swap, eps, STREAMS, CLAMP)
    dfa = tl.dot(g, tl.trans(m1), input_precision=PRECISION) + h0[:, None] * za[None, :]
    dfb = dfa
    if HALVES == 2:
        dfb = tl.dot(g, tl.trans(m2), input_precision=PRECISION) + h0[:, None] * zb[None, :]
    if STREAMS == 2:
        dfa += h1[:, None] * zb[None, :]
        dfb += h1[:, None] * za[None, :]
    dxq, dpq = _features_bwd(xq, dfa, dfb, p, sin_t, cos_t, KIND, HALVES)
    _store_rows(DQ + b * s_gqb + h * s_gqh, dxq, offs_n, row_ok, offs_d, col_ok, s_gqn)

    # the same tokens as keys
    dsa, dsb, dza, dzb = _load_state(DST + bh * STATE, offs_d, offs_v, 1.0, HALVES, BLOCK_D, BLOCK_V)
    real = tl.load(M + b * s_mb + offs_n, mask=row_ok, other=0) != 0
    w = real.to(tl.float32) * c  # the state carries c; padded keys get nothing
    xk = tl.where(real[:, None], _load_rows(K + b * s_kb + h * s_kh, offs_n, row_ok, offs_d, col_ok, s_kn), 0.0)
    v = tl.where(real[:, None], _load_rows(V + b * s_vb + h * s_vh, offs_n, row_ok, offs_v, v_ok, s_vn), 0.0)
    ka, kb = _features(xk, p, sin_t, cos_t, col_ok, KIND)
    dka = (tl.dot(v, tl.trans(dsa), input_precision=PRECISION) + dza[None, :]) * w[:, None]
    dkb = dka
    dv = tl.dot(ka, dsa, input_precision=PRECISION)
    if HALVES == 2:
        dkb = (tl.dot(v, tl.trans(dsb), input_precision=PRECISION) + dzb[None, :]) * w[:, None]
        dv += tl.dot(kb, dsb, input_precision=PRECISION)
    _store_rows(DVAL + b * s_gvb + h * s_gvh, dv * w[:, None], offs_n, row_ok, offs_v, v_ok, s_gvn)
    dxk, dpk = _features_bwd(xk, dka, dkb, p, sin_t, cos_t, KIND, HALVES)
    _store_rows(DK + b * s_gkb + h * s_gkh, dxk, offs_n, row_ok, offs_d, col_ok, s_gkn)
    if KIND == 1:
        tl.store(DP + (blk * tl.num_programs(1) + bh) * BLOCK_D + offs_d, tl.sum(dpq + dpk, axis=0))


def jit_kernels() -> None:
    """Import triton and turn every function above into a Triton function, once per process.
    Each kernel calls the others by their global names, so they are rebound here all together."""
    global tl, INTERPRETED
    if tl is not None:
        return
    import triton  # deferred on purpose: optional dependency, seconds to import, fixes interpreted vs compiled
    import triton.language as language  # deferred on purpose: as above
    from triton.runtime.interpreter import InterpretedFunction  # deferred on purpose: as above

    namespace = globals()
    ours = [name for name, fn in namespace.items()
            if inspect.isfunction(fn) and fn.__module__ == __name__ and name != "jit_kernels"]
    tl = language
    for name in ours:
        namespace[name] = triton.jit(namespace[name])
    INTERPRETED = isinstance(namespace["_state_kernel"], InterpretedFunction)
    library = getattr(language.standard, "cdiv", None)  # one of triton's own, made at its import
    if library is not None and isinstance(library, InterpretedFunction) != INTERPRETED:
        raise RuntimeError("triton was imported before with another TRITON_INTERPRET: its own functions "
                           "and these kernels would run in different modes; set it before triton's first import")
