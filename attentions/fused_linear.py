"""Fused GPU kernels (Triton) for the non-causal linear-form attentions, with plain torch references.

Per (batch, head), over the real keys j only (k and v count as zero at padded positions), with all
sums and products in float32 whatever the input dtype:

    out_i = phi(q_i) (c sum_j phi(k_j)^T v_j) / (phi(q_i) . c sum_j phi(k_j) + eps)

with c = 1/n (n real keys; mean=True, PolaFormer's convention, see base.linear_attention) or 1.
The feature map phi is computed inside the kernels (never written to memory), forward and backward:

    fused_linear_attention(q, k, v, mask, eps, mean=False)   phi = elu + 1 (Linear Transformer)
    fused_pola(q, k, v, power, mask, eps, polarity=True)     the pola core (docs/pola-1d.md, steps 1-5)
    fused_cosformer(q, k, v, mask, eps)                      ReLU features re-weighted by sin / cos

Each is a torch.autograd.Function whose forward and backward are Triton kernels, and each has a
`naive_*` function beside it: the same math in plain torch, for the tests (and as the definition).

Why this pays on a GPU: the paper model is tiny (d = 32), so a training step is hundreds of small
kernel launches; the torch form of one pola core is about 50 non-view ops forward and 100 backward
(linear: 13 and 20, cosFormer: 32 and 28), each a launch. The fused op is 2 launches forward (+1
when the key sum is split, see below) and 2 backward (+1 or 2 small sums; cosFormer adds ~10 small
ops for its angles), and never writes the features (B, H, N, 2d) to memory.

Launch plan (no atomics): forward, (1) a state kernel per (batch*head, split) sums
phi(k)^T v and phi(k) over its range of key blocks; when there are too few (batch, head) pairs to
fill the GPU the key range is split and torch adds the partial states; (2) an output kernel per
(query block, batch*head) reads the small state and writes out. Backward, (3) a kernel per
(batch*head, split) sums the state's gradient over the queries (it recomputes the outputs instead
of storing them), (4) one kernel per (token block, batch*head) writes dq (the tokens as queries),
dk, dv (the same tokens as keys) and the block's share of the power's gradient (summed by torch).

Triton is an OPTIONAL dependency, imported here only when a fused op runs (on purpose: the
attentions package imports every module, and must work where triton is not installed). On the CPU
the kernels run only under Triton's interpreter, for tests: TRITON_INTERPRET=1 must be set before
triton is first imported in the process (Triton makes its own library functions interpreted or
compiled at import; ours are made at the first fused op), and one process runs either interpreted
or compiled kernels, never both. `fused_available` says whether the kernels can run on a device; `compile_for_gpu`
compiles every kernel variant for a GPU architecture without a GPU (a check that the compiler
accepts them, e.g. for Hopper, sm_90).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from attentions import _fused_linear_kernels as kernels
from attentions.base import real_rank

# Precision of tl.dot on float32 features. "ieee" matches the torch path to float32 rounding;
# "tf32x3" (three TF32 tensor-core products, ~float32 accuracy) and "tf32" (~1e-3) may be faster on
# the GPU (not measured). The interpreter computes every choice in float32.
PRECISION = "ieee"
# Programs the state sums aim for: below it the key range is split (roughly 2 per SM on an H100/H200).
TARGET_PROGRAMS = 264
# Software pipelining depth of the loops (Triton's default on Hopper is 3; deeper pipelines made the
# compiled kernels spill registers).
NUM_STAGES = 1


def kernel_config(loop: bool, block_d: int, block_v: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps) of a kernel: `loop` for the two that sum over the sequence (state, its
    gradient), else the two that work on one token block each (outputs, dq dk dv). Chosen so that
    no variant spills registers when compiled for sm_90 (`compile_for_gpu` reports the use); not
    yet tuned on a GPU. Token blocks are powers of two >= 16 (tl.dot's minimum)."""
    small = block_d * block_v <= 1024  # head dims up to 32
    if loop:
        return 16, 4 if small else 8
    return (32, 8) if small else (16, 8)


# --- availability ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def fused_available(device: torch.device | str) -> bool:
    """Whether the fused kernels can run on tensors on `device`: triton installed and either a CUDA
    device or the interpreter switched on."""
    device = torch.device(device)
    return triton_installed() and (device.type == "cuda" or interpreting())


def why_not_fused(device: torch.device | str) -> str | None:
    """None if the fused kernels can run on `device`, else the reason in words."""
    if not triton_installed():
        return "triton is not installed (pip install triton, or the lra-suite[gpu] extra)"
    if torch.device(device).type != "cuda" and not interpreting():
        return f"the Triton kernels run on CUDA devices (or on the CPU under TRITON_INTERPRET=1), not on {device}"
    return None


def _kernels():
    """The kernel module, its functions made Triton kernels, after checking that triton runs them
    in the mode asked for now (TRITON_INTERPRET may not change once they exist)."""
    kernels.jit_kernels()
    if kernels.INTERPRETED != interpreting():
        raise RuntimeError(
            f"the Triton kernels were made with TRITON_INTERPRET={'1' if kernels.INTERPRETED else '0'} but it is now "
            f"{os.environ.get('TRITON_INTERPRET', 'unset')}: set it before the first fused op in the process")
    return kernels


# While a list, launches are recorded here instead of run (compile_for_gpu collects the variants).
_RECORD: list | None = None


def _launch(name: str, grid: tuple, *args, **consts) -> None:
    if _RECORD is not None:
        _RECORD.append((name, args, consts))
        return
    getattr(_kernels(), name)[grid](*args, **consts)


# --- the generic op -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Form:
    """What the kernels compute: feature map (kind), halves per feature, streams, 1/n, clamp."""

    kind: int  # 0 elu + 1, 1 |x|^p split by sign, 2 ReLU x sin / cos
    halves: int
    streams: int
    mean: bool
    clamp: bool


def _pow2(n: int) -> int:
    return max(16, 1 << (max(n, 1) - 1).bit_length())


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    """The kernels index rows by stride and channels by position: the last dim must be dense."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _like_heads(x: torch.Tensor, width: int, dtype) -> torch.Tensor:
    """An empty (B, H, N, width) tensor laid out as (B, N, H, width), so merge_heads is a view."""
    B, H, N, _ = x.shape
    return torch.empty(B, N, H, width, device=x.device, dtype=dtype).transpose(1, 2)


def _splits(n_blocks: int, bh: int) -> tuple[int, int]:
    """(splits, blocks per split) of the key range, so that bh * splits reaches TARGET_PROGRAMS."""
    want = max(1, min(n_blocks, -(-TARGET_PROGRAMS // bh)))
    per = -(-n_blocks // want)
    return -(-n_blocks // per), per


def _launch_ctx(x: torch.Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _sizes(q, v, form: _Form):
    B, H, N, D = q.shape
    DV = v.shape[-1]
    block_d, block_v = _pow2(D), _pow2(DV)
    state = form.halves * (block_d * block_v + block_d) + 1
    return B, H, N, D, DV, block_d, block_v, state


def _consts(form: _Form, block_d: int, block_v: int, loop: bool, state_kernel: bool = False) -> dict:
    block_n, num_warps = kernel_config(loop, block_d, block_v)
    consts = dict(KIND=form.kind, HALVES=form.halves, PRECISION=PRECISION, BLOCK_N=block_n, BLOCK_D=block_d,
                  BLOCK_V=block_v, num_warps=num_warps, num_stages=NUM_STAGES)
    if not state_kernel:
        consts.update(STREAMS=form.streams, MEAN=form.mean, CLAMP=form.clamp)
    return consts


def _blocks(n: int, loop: bool, block_d: int, block_v: int) -> int:
    return -(-n // kernel_config(loop, block_d, block_v)[0])


def _forward(q, k, v, mask, power, theta, form: _Form, eps: float):
    B, H, N, D, DV, block_d, block_v, state = _sizes(q, v, form)
    splits, per = _splits(_blocks(N, True, block_d, block_v), B * H)
    part = torch.empty(splits, B * H, state, device=q.device, dtype=torch.float32)
    _launch("_state_kernel", (B * H, splits),
            k, v, mask, power, theta, part, N, H, per, D, DV,
            k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            mask.stride(0), power.stride(0), theta.stride(0), part.stride(0),
            **_consts(form, block_d, block_v, loop=True, state_kernel=True))
    st = part[0] if splits == 1 else part.sum(0)
    out = _like_heads(q, DV, v.dtype)
    _launch("_output_kernel", (_blocks(N, False, block_d, block_v), B * H),
            q, power, theta, st, out, N, H, eps, D, DV, DV // 2,
            q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
            power.stride(0), theta.stride(0), **_consts(form, block_d, block_v, loop=False))
    return out, st


def _backward(q, k, v, mask, power, theta, st, do, form: _Form, eps: float):
    B, H, N, D, DV, block_d, block_v, state = _sizes(q, v, form)
    splits, per = _splits(_blocks(N, True, block_d, block_v), B * H)
    part = torch.empty(splits, B * H, state, device=q.device, dtype=torch.float32)
    _launch("_dstate_kernel", (B * H, splits),
            q, do, power, theta, st, part, N, H, eps, per, D, DV, DV // 2,
            q.stride(0), q.stride(1), q.stride(2), do.stride(0), do.stride(1), do.stride(2),
            power.stride(0), theta.stride(0), part.stride(0), **_consts(form, block_d, block_v, loop=True))
    dst = part[0] if splits == 1 else part.sum(0)
    dq, dk, dv = _like_heads(q, D, q.dtype), _like_heads(k, D, k.dtype), _like_heads(v, DV, v.dtype)
    n_blocks = _blocks(N, False, block_d, block_v)
    dp = torch.empty(n_blocks, B, H, block_d, device=q.device, dtype=torch.float32) if form.kind == 1 else st
    _launch("_grad_kernel", (n_blocks, B * H),
            q, k, v, mask, do, power, theta, st, dst, dq, dk, dv, dp, N, H, eps, D, DV, DV // 2,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), mask.stride(0), do.stride(0), do.stride(1), do.stride(2),
            dq.stride(0), dq.stride(1), dq.stride(2), dk.stride(0), dk.stride(1), dk.stride(2),
            dv.stride(0), dv.stride(1), dv.stride(2), power.stride(0), theta.stride(0),
            **_consts(form, block_d, block_v, loop=False))
    dpower = dp.sum((0, 1))[:, :D] if form.kind == 1 else None
    return dq, dk, dv, dpower


class _FusedLinearForm(torch.autograd.Function):
    """(q, k, v, mask, power, theta) -> out; power (H, d) is the pola exponent, theta (B, N) the
    cosFormer angles, None where the feature map has none (q stands in: the kernels never read it)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, power, theta, form: _Form, eps: float):
        q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
        mask = mask.contiguous()
        power = q if power is None else power.contiguous()
        theta = q if theta is None else theta.contiguous()
        with _launch_ctx(q):
            out, st = _forward(q, k, v, mask, power, theta, form, eps)
        ctx.save_for_backward(q, k, v, mask, power, theta, st)
        ctx.form, ctx.eps = form, eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, mask, power, theta, st = ctx.saved_tensors
        with _launch_ctx(q):
            dq, dk, dv, dpower = _backward(q, k, v, mask, power, theta, st, _unit_last(do), ctx.form, ctx.eps)
        if dpower is not None:
            dpower = dpower.to(power.dtype)
        return dq, dk, dv, None, dpower, None, None, None


def _check(q, k, v, mask):
    if q.dim() != 4 or q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(f"q, k must be (B, H, N, d) and v (B, H, N, dv); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if mask.shape != (q.shape[0], q.shape[2]) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be (B, N) bool, got {tuple(mask.shape)} {mask.dtype}")
    reason = why_not_fused(q.device) if _RECORD is None else None
    if reason:
        raise RuntimeError(f"fused linear attention cannot run: {reason}")


# --- Linear Transformer (elu + 1) ---------------------------------------------------------------------


def fused_linear_attention(q, k, v, mask, eps: float, mean: bool = False):
    """Normalised linear attention with phi = elu + 1 fused in (the `linear` attention's core).
    q, k: (B, H, N, d), v: (B, H, N, dv), mask: (B, N) bool -> (B, H, N, dv) in v's dtype."""
    _check(q, k, v, mask)
    return _FusedLinearForm.apply(q, k, v, mask, None, None, _Form(0, 1, 1, mean, False), float(eps))


def naive_linear_attention(q, k, v, mask, eps: float, mean: bool = False):
    """Plain-torch reference of `fused_linear_attention` (float32 arithmetic, float64 kept)."""
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    m = mask[:, None, :, None].to(dt)
    fq, fk = F.elu(q.to(dt)) + 1, (F.elu(k.to(dt)) + 1) * m
    vv = v.to(dt) * m
    kv, ksum = fk.transpose(-2, -1) @ vv, fk.sum(-2)
    if mean:
        n = mask.sum(-1).clamp(min=1).to(dt)[:, None, None]
        kv, ksum = kv / n[..., None], ksum / n
    return ((fq @ kv) / ((fq * ksum[:, :, None, :]).sum(-1, keepdim=True) + eps)).to(v.dtype)


# --- PolaFormer ------------------------------------------------------------------------------------------


def fused_pola(q, k, v, power, mask, eps: float, polarity: bool = True):
    """The linear-form core of pola (docs/pola-1d.md, steps 1-5), fused: the same function as
    PolaAttention.core with impl=fast, given the already-scaled inputs.

    q, k: (B, H, N, d), ALREADY divided by softplus(s) (k need not be masked: padded keys are
    zeroed inside); v: (B, H, N, d); power: p = 1 + alpha sigmoid(w), (H, d), gradients flow to it;
    mask: (B, N) bool; eps: added to each normaliser (relative to a mean: both sums are over n).
    polarity=True: phi_k = [k+, k-], same-sign queries [q+, q-] attend with v's first d/2
    channels, opposite-sign [q-, q+] with the last d/2, each normalised separately; returns
    [os, oo] (B, H, N, d). polarity=False: phi = ReLU(x)^p on all of v.

    Wiring in PolaAttention.core (the layer's scale and exponent stay torch ops):
        sp = F.softplus(self.scale).view(1, H, 1, d)
        o = fused_pola(q / sp, k / sp, v, self.exponent(), mask, self.options.eps, self.options.polarity)
    """
    _check(q, k, v, mask)
    if power.shape != (q.shape[1], q.shape[3]):
        raise ValueError(f"power must be (H, d) = {(q.shape[1], q.shape[3])}, got {tuple(power.shape)}")
    if polarity and v.shape[-1] % 2:
        raise ValueError(f"polarity splits v in two halves: its width must be even, got {v.shape[-1]}")
    form = _Form(1, 2, 2, True, False) if polarity else _Form(1, 1, 1, True, False)
    return _FusedLinearForm.apply(q, k, v, mask, power, None, form, float(eps))


def naive_pola(q, k, v, power, mask, eps: float, polarity: bool = True):
    """Plain-torch reference of `fused_pola`, docs/pola-1d.md steps 1-5 written out."""
    dt, out_dtype = (torch.float64 if q.dtype == torch.float64 else torch.float32), v.dtype
    q, k, v, p = q.to(dt), k.to(dt), v.to(dt), power.to(dt)[None, :, None, :]
    m = mask[:, None, :, None].to(dt)
    k, v = k * m, v * m  # 1. padded keys and values add nothing
    qp, qn, kp, kn = F.relu(q) ** p, F.relu(-q) ** p, F.relu(k) ** p, F.relu(-k) ** p  # 2.
    n = mask.sum(-1).clamp(min=1).to(dt)[:, None, None, None]

    def attend(fq, fk, vv):  # 5. normalised, both sums divided by n
        kv, ksum = fk.transpose(-2, -1) @ vv / n, fk.sum(-2, keepdim=True) / n
        return (fq @ kv) / ((fq * ksum).sum(-1, keepdim=True) + eps)

    if not polarity:
        return attend(qp, kp, v).to(out_dtype)
    phi_k = torch.cat([kp, kn], -1)  # 3.
    qs, qo = torch.cat([qp, qn], -1), torch.cat([qn, qp], -1)
    vs, vo = v.chunk(2, dim=-1)  # 4.
    return torch.cat([attend(qs, phi_k, vs), attend(qo, phi_k, vo)], -1).to(out_dtype)


# --- cosFormer ---------------------------------------------------------------------------------------------


def cos_angles(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) float32: pi/2 * rank / n, rank = index among the real tokens, n = real length."""
    n = mask.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)
    return math.pi / 2 * real_rank(mask).to(torch.float32) / n


def fused_cosformer(q, k, v, mask, eps: float):
    """cosFormer's linear form with its features fused in (the `cosformer` attention's core):
    A_ij = ReLU(q_i) . ReLU(k_j) cos(theta_i - theta_j), out_i = sum_j A_ij v_j / max(sum_j A_ij, eps).
    The angles (B, N) are computed with torch (a few small ops); the rest runs in the kernels."""
    _check(q, k, v, mask)
    return _FusedLinearForm.apply(q, k, v, mask, None, cos_angles(mask), _Form(2, 2, 1, False, True), float(eps))


def naive_cosformer(q, k, v, mask, eps: float):
    """Plain-torch reference of `fused_cosformer`, through cos(a - b) = sin a sin b + cos a cos b."""
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    th = cos_angles(mask).to(dt)[:, None, :, None]
    m = mask[:, None, :, None].to(dt)
    rq, rk = F.relu(q.to(dt)), F.relu(k.to(dt)) * m
    fq = torch.cat([rq * th.sin(), rq * th.cos()], -1)
    fk = torch.cat([rk * th.sin(), rk * th.cos()], -1)
    den = (fq * fk.sum(-2, keepdim=True)).sum(-1, keepdim=True)
    return ((fq @ (fk.transpose(-2, -1) @ (v.to(dt) * m))) / den.clamp(min=eps)).to(v.dtype)


# --- compiling without a GPU ------------------------------------------------------------------------------

_TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64",
                 torch.bool: "i1"}


def kernel_variants(head_dims=(16, 32, 64), dtypes=(torch.float32, torch.bfloat16)) -> list[tuple]:
    """Every (kernel name, launch args, constexprs) the fused ops launch, forward and backward, for
    each op, head dim and input dtype: the ops run on small CPU tensors with launches recorded
    instead of run."""
    global _RECORD
    _RECORD = []
    try:
        for d in head_dims:
            for dt in dtypes:
                q, k, v = (torch.zeros(1, 2, 8, d, dtype=dt, requires_grad=True) for _ in range(3))
                mask = torch.ones(1, 8, dtype=torch.bool)
                power = torch.ones(2, d, requires_grad=True)
                outs = [fused_linear_attention(q, k, v, mask, 1e-6), fused_linear_attention(q, k, v, mask, 1e-6, True),
                        fused_pola(q, k, v, power, mask, 1e-6), fused_pola(q, k, v, power, mask, 1e-6, False),
                        fused_cosformer(q, k, v, mask, 1e-6)]
                for o in outs:
                    o.float().sum().backward()
        return _RECORD
    finally:
        _RECORD = None


def compile_for_gpu(arch: int = 90, head_dims=(16, 32, 64), dtypes=(torch.float32, torch.bfloat16)) -> list[dict]:
    """Compile every kernel variant to a cubin for CUDA compute capability `arch` (90 = Hopper)
    without a GPU: proof that Triton's compiler accepts the kernels there. Raises on the first one
    it rejects; returns one dict (kernel, constexprs, registers, spills) per variant. Run it in a
    process where triton is NOT in interpreter mode."""
    import triton  # deferred on purpose: optional dependency, seconds to import
    from triton.backends.compiler import GPUTarget  # deferred on purpose: as above
    from triton.compiler import ASTSource  # deferred on purpose: as above

    if interpreting():
        raise RuntimeError("compile_for_gpu needs TRITON_INTERPRET unset (the interpreter replaces the compiler)")
    kern = _kernels()
    ast_args = inspect.signature(ASTSource).parameters
    done, report = set(), []
    for name, args, consts in kernel_variants(head_dims, dtypes):
        fn = getattr(kern, name)
        consts = dict(consts)
        num_warps, num_stages = consts.pop("num_warps"), consts.pop("num_stages")
        sig = {}
        for arg_name, value in zip(fn.arg_names, args):
            if isinstance(value, torch.Tensor):
                sig[arg_name] = "*" + _TRITON_TYPES[value.dtype]
            else:
                sig[arg_name] = "fp32" if isinstance(value, float) else "i32"
        sig.update({c: "constexpr" for c in consts})
        key = (name, tuple(sig.items()), tuple(consts.items()), num_warps, num_stages)
        if key in done:
            continue
        done.add(key)
        src = (ASTSource(fn=fn, signature=sig, constexprs=consts) if "constexprs" in ast_args
               else ASTSource(fn=fn, signature=sig, constants=consts))  # triton 3.2's name
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": num_warps, "num_stages": num_stages})
        report.append({"kernel": name, **consts, "num_warps": num_warps, "num_stages": num_stages,
                       "dtype": next(t for t in sig.values() if t.startswith("*"))[1:],
                       "shared_bytes": compiled.metadata.shared, **_resource_usage(compiled.asm["cubin"])})
    return report


def _resource_usage(cubin: bytes) -> dict:
    """Registers per thread and stack bytes (spills) of a cubin, from the cuobjdump Triton ships."""
    import triton  # deferred on purpose: optional dependency, seconds to import

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    fields = dict(w.split(":", 1) for line in out.splitlines() if "REG:" in line for w in line.split() if ":" in w)
    return {"registers": int(fields["REG"]), "stack_bytes": int(fields["STACK"])} if "REG" in fields else {}


# --- choosing the path (the layers' `impl` option) ------------------------------------------------------


def auto_fused(device: torch.device | str, dtype: torch.dtype) -> bool:
    """What impl="auto" picks: the kernels for CUDA tensors when triton is installed, except float64
    (the exactness tests' dtype, which the float32 kernels would round)."""
    return torch.device(device).type == "cuda" and dtype != torch.float64 and triton_installed()


def use_fused(impl: str, x: torch.Tensor) -> bool:
    """Whether a layer with option `impl` runs the kernels on inputs like x; impl="fused" raises a
    RuntimeError saying why where they cannot run."""
    if impl == "fused":
        reason = why_not_fused(x.device)
        if reason:
            raise RuntimeError(f"impl=fused cannot run: {reason}; impl=auto or fast runs the torch path")
        return True
    return impl == "auto" and auto_fused(x.device, x.dtype)


def kernel_info(impl: str, layer: torch.nn.Module) -> dict:
    """The layer's kernel path for its `info()`, decided from its parameters' device and dtype:
    {"kernel": "triton"} or {"kernel": "torch"}."""
    p = next(layer.parameters())
    fused = impl == "fused" or (impl == "auto" and auto_fused(p.device, p.dtype))
    return {"kernel": "triton" if fused else "torch"}
