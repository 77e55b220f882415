"""The fused Triton kernels (attentions/fused_linear.py) against their plain torch references:
outputs and gradients (dq, dk, dv, and dp for pola's power) at awkward sizes, float32 and bf16.

Without a GPU the kernels run in Triton's interpreter. Triton decides interpreted-or-compiled when
it is first imported, so this module switches the interpreter on before anything imports triton
(on a CPU-only machine nothing else can use compiled kernels, so the whole process may interpret);
with a GPU the same tests run the compiled kernels on CUDA. References are computed in float64
from the same input values, and compared fla-style: the max abs difference below a floor (for
the O(eps) gradients of a one-token sequence, pure rounding) or else the RMS error relative to
the RMS of the reference below a tolerance.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
# the interpreter runs loops with run-time bounds from triton 3.7 on; compiled kernels need 3.2
pytest.importorskip("triton", minversion="3.2" if ON_GPU else "3.7")

import attentions  # noqa: E402
from attentions import fused_linear as fl  # noqa: E402
import attn_check  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
try:
    fl._kernels()
except RuntimeError as exc:  # triton imported earlier in this process in the other mode
    pytest.skip(f"fused kernels cannot run here: {exc}", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
TOL = {torch.float32: (1e-5, 2e-6), torch.bfloat16: (1.5e-2, 1e-3)}  # (rms ratio, abs floor)

# name -> (fused, naive, keyword options, takes the power)
OPS = {
    "linear": (fl.fused_linear_attention, fl.naive_linear_attention, {}, False),
    "linear-mean": (fl.fused_linear_attention, fl.naive_linear_attention, {"mean": True}, False),
    "pola": (fl.fused_pola, fl.naive_pola, {}, True),
    "pola-no-polarity": (fl.fused_pola, fl.naive_pola, {"polarity": False}, True),
    "cosformer": (fl.fused_cosformer, fl.naive_cosformer, {}, False),
}

# (N, real lengths of the two sequences, head dim): odd N, below / above / across the token
# blocks (16 for the sums over N, 32 for the per-block kernels), heavy padding, one real token.
CASES = [
    (1, (1, 1), 16),
    (15, (15, 4), 32),
    (17, (17, 1), 16),
    (33, (20, 33), 32),
    (100, (100, 3), 16),
    (130, (129, 64), 32),
]


@pytest.fixture(autouse=True)
def unsplit_sums_in_the_interpreter(monkeypatch):
    """The interpreter runs programs one after another: splitting the sums over N only adds
    programs there. test_split_key_range_adds_up covers the split path."""
    if not ON_GPU:
        monkeypatch.setattr(fl, "TARGET_PROGRAMS", 1)


def assert_close(name, ref, tri, tol, atol):
    """fla's rule: pass when the max abs difference is below atol, else need the RMS error over
    the RMS of the reference below tol."""
    ref, tri = ref.detach().double().cpu(), tri.detach().double().cpu()
    diff = (ref - tri).abs().max().item()
    ratio = ((ref - tri).square().mean().sqrt() / ref.square().mean().sqrt().clamp_min(1e-30)).item()
    assert diff <= atol or ratio <= tol, f"{name}: max abs diff {diff:.3e}, rms ratio {ratio:.3e} > {tol:.0e}"


def inputs(N, lengths, d, dtype, seed=0, B=2, H=2):
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(B, H, N, d, generator=g).to(dtype) for _ in range(4))
    mask = torch.arange(N)[None] < torch.tensor(lengths)[:, None]
    power = 1 + 3 * torch.sigmoid(torch.randn(H, d, generator=g))
    return [t.to(DEVICE) for t in (q, k, v, do, mask, power)]


def run(op, q, k, v, do, mask, power, convert):
    """Output and gradients (q, k, v[, power]) of one op on converted copies of the inputs."""
    fn, kw, with_power = op
    leaves = [convert(t).requires_grad_() for t in ([q, k, v] + ([power] if with_power else []))]
    out = fn(*leaves[:3], *leaves[3:], mask, 1e-6, **kw)
    (out.double() * do.double()).sum().backward()
    return [out] + [t.grad for t in leaves]


def compare(name, N, lengths, d, dtype, seed=0):
    fused, naive, kw, with_power = OPS[name]
    q, k, v, do, mask, power = inputs(N, lengths, d, dtype, seed)
    ref = run((naive, kw, with_power), q, k, v, do, mask, power, lambda t: t.detach().double())
    tri = run((fused, kw, with_power), q, k, v, do, mask, power, lambda t: t.detach().clone())
    assert tri[0].dtype == dtype and tri[0].shape == v.shape
    tol, atol = TOL[dtype]
    for label, a, b in zip(["out", "dq", "dk", "dv", "dpower"], ref, tri):
        assert_close(f"{name} N={N} lengths={lengths} d={d} {dtype} {label}", a, b, tol, atol)
    return tri


# The flag variants (mean, no polarity) share every kernel with their base op: two sizes each.
FLOAT32 = [(name, *case) for name in ("linear", "pola", "cosformer") for case in CASES] + [
    (name, *case) for name in ("linear-mean", "pola-no-polarity") for case in (CASES[2], CASES[5])]


def case_id(case):
    name, N, lengths, d = case
    return f"{name}-N{N}-real{lengths[0]},{lengths[1]}-d{d}"


@pytest.mark.parametrize("name,N,lengths,d", FLOAT32, ids=map(case_id, FLOAT32))
def test_fused_matches_naive_float32(name, N, lengths, d):
    compare(name, N, lengths, d, torch.float32)


BF16 = [(name, *case) for name in OPS for case in (CASES[2], CASES[5])]


@pytest.mark.parametrize("name,N,lengths,d", BF16, ids=map(case_id, BF16))
def test_fused_matches_naive_bf16_inputs(name, N, lengths, d):
    compare(name, N, lengths, d, torch.bfloat16, seed=1)


@pytest.mark.parametrize("name", ["linear", "pola", "cosformer"])
def test_split_key_range_adds_up(name, monkeypatch):
    """With few (batch, head) pairs the sums over N are split across programs and added by torch:
    force many splits of 16-token blocks and uneven ranges (100 tokens = 7 blocks)."""
    monkeypatch.setattr(fl, "TARGET_PROGRAMS", 4 * 3)
    compare(name, 100, (100, 37), 32, torch.float32, seed=2)


@pytest.mark.parametrize("name", ["linear", "pola", "cosformer"])
def test_padded_content_changes_nothing_and_gets_no_gradient(name):
    """Keys and values at padded positions (here huge) add nothing to any real output, and their
    gradients are exactly zero; queries at padded positions still get outputs and gradients."""
    fused, _, kw, with_power = OPS[name]
    q, k, v, do, mask, power = inputs(40, (40, 9), 16, torch.float32, seed=3)
    noisy_k = torch.where(mask[:, None, :, None], k, 1e3 * torch.randn_like(k))
    noisy_v = torch.where(mask[:, None, :, None], v, 1e3 * torch.randn_like(v))
    a = run((fused, kw, with_power), q, k, v, do, mask, power, lambda t: t.detach().clone())
    b = run((fused, kw, with_power), q, noisy_k, noisy_v, do, mask, power, lambda t: t.detach().clone())
    real = mask[:, None, :, None].expand_as(q)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)  # every row, padded queries too
    for got in (b[2], b[3]):  # dk, dv
        assert torch.isfinite(got).all() and (got[~real] == 0).all()
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)  # dq
    assert a[1][~real].abs().sum() > 0  # padded queries' gradients are computed, not dropped


def test_non_contiguous_head_views():
    """Inputs as the layers pass them: heads split out of a (B, N, 3D) projection (strided views)."""
    B, N, H, d = 2, 37, 2, 16
    qkv = torch.randn(B, N, 3 * H * d, device=DEVICE)
    q, k, v = (t.view(B, N, H, d).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    assert not q.is_contiguous()
    mask = torch.arange(N, device=DEVICE)[None] < torch.tensor([37, 12], device=DEVICE)[:, None]
    got = fl.fused_pola(q, k, v, torch.full((H, d), 2.5, device=DEVICE), mask, 1e-6)
    want = fl.naive_pola(q.contiguous(), k.contiguous(), v.contiguous(), torch.full((H, d), 2.5, device=DEVICE), mask, 1e-6)
    assert_close("pola on strided views", want, got, *TOL[torch.float32])


# --- the references are the layers' own math -----------------------------------------------------


@pytest.mark.parametrize("polarity", [True, False])
def test_naive_pola_is_the_pola_layer_core(polarity):
    """naive_pola (and so fused_pola) on the scaled q, k and masked v is PolaAttention.linear_core
    with impl=fast (pola_linear, the torch path): the call the pola layer makes."""
    torch.manual_seed(0)
    layer = attentions.build("pola", dim=32, heads=2, max_len=64, polarity=polarity, impl="fast").double().to(DEVICE)
    with torch.no_grad():
        layer.power.normal_()
    q, k, v, _, mask, _ = inputs(29, (29, 6), 16, torch.float64)
    vm = v * mask[:, None, :, None]
    want = layer.linear_core(q, k, vm, mask)
    got = fl.naive_pola(q, k, vm, layer.exponent(), mask, layer.options.eps, polarity)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    fused = fl.fused_pola(q.float(), k.float(), vm.float(), layer.exponent().float(), mask, 1e-6, polarity)
    assert_close("fused_pola vs PolaAttention.linear_core", want, fused, *TOL[torch.float32])


def test_naive_linear_and_cosformer_are_the_torch_paths():
    from attentions.base import linear_attention
    from attentions.cosformer import cosformer_attention
    from attentions.linear import elu_feature

    q, k, v, _, mask, _ = inputs(23, (23, 5), 16, torch.float64)
    for mean in (False, True):
        torch.testing.assert_close(fl.naive_linear_attention(q, k, v, mask, 1e-6, mean),
                                   linear_attention(elu_feature(q), elu_feature(k), v, mask, 1e-6, mean))
    torch.testing.assert_close(fl.naive_cosformer(q, k, v, mask, 1e-6), cosformer_attention(q, k, v, mask, 1e-6))


# --- the layers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosformer", "pola"])
def test_layer_fused_equals_fast(name):
    """The wired layer: impl=fused and impl=fast with the same weights compute the same function
    (outputs on real tokens, gradients w.r.t. the input and every parameter)."""
    fused = attn_check.build(name, impl="fused", dtype=torch.float32).to(DEVICE)
    fast = attn_check.build(name, impl="fast", dtype=torch.float32).to(DEVICE)
    fast.load_state_dict(fused.state_dict())
    x, mask = attn_check.padded_inputs(2, 37, 32, (37, 9), dtype=torch.float32)
    (ya, ga), (yb, gb) = (attn_check.outputs_and_grads(layer, x.to(DEVICE), mask.to(DEVICE)) for layer in (fused, fast))
    tol, atol = TOL[torch.float32]
    assert_close(f"{name} layer output", yb, ya, tol, atol)
    assert ga.keys() == gb.keys()
    for key in ga:
        assert_close(f"{name} layer grad {key}", gb[key], ga[key], tol, atol)


@pytest.mark.parametrize("name", ["linear", "cosformer", "pola"])
def test_layer_info_names_the_kernel_path(name):
    """info() follows the parameters' device and dtype: auto is the kernels on CUDA only."""
    make = lambda **o: attentions.build(name, dim=32, heads=2, max_len=16, **o)
    kernel = lambda layer: layer.info()["kernel"]
    assert make().options.impl == "auto"
    assert kernel(make()) == "torch"  # on the CPU
    assert kernel(make(impl="fast").to(DEVICE)) == "torch"
    assert kernel(make(impl="fused")) == "triton"
    if ON_GPU:
        assert kernel(make().to(DEVICE)) == "triton"
        assert kernel(make().to(DEVICE).double()) == "torch"  # float64 stays exact


def test_without_triton_or_interpreter_fused_says_why_and_auto_runs_torch():
    """In a fresh process: importing the package does not import triton; with triton hidden the
    package still imports, impl=auto runs the torch path and impl=fused raises a RuntimeError
    naming the cause; with triton but no interpreter, impl=fused on the CPU says it needs CUDA (or
    TRITON_INTERPRET=1)."""
    script = textwrap.dedent("""
        import sys, torch
        if sys.argv[1] == "hidden":
            sys.modules["triton"] = None
        import attentions
        print("TRITON_IMPORTED", sys.modules.get("triton") is not None)
        x, mask = torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.bool)
        attentions.build("linear", dim=32, heads=2, max_len=8)(x, mask)
        try:
            attentions.build("linear", dim=32, heads=2, max_len=8, impl="fused")(x, mask)
        except RuntimeError as exc:
            print("ERROR", exc)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + str(ROOT / "tests")
    for mode, expected in (("hidden", "triton is not installed"), ("cpu", "CUDA")):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "TRITON_IMPORTED False" in out.stdout  # the package defers triton (seconds to import)
        assert "ERROR impl=fused cannot run" in out.stdout and expected in out.stdout, out.stdout


# --- the compiler ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("LRA_COMPILE_CHECK"), reason="compiles 114 kernel variants, ~2 min of CPU; set LRA_COMPILE_CHECK=1")
def test_every_kernel_variant_compiles_for_hopper():
    """Triton's compiler (not the interpreter) accepts every kernel variant for sm_90, in a fresh
    process without TRITON_INTERPRET: the check that needs no GPU."""
    script = ("import json; from attentions.fused_linear import compile_for_gpu; "
              "print(json.dumps(compile_for_gpu(90)))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
