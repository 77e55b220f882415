"""Conformance suite run over every registered attention, presets and plugins included: a new
variant is held to these the moment it is registered."""

import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import attentions

NAMES = attentions.available()
DIM, HEADS = 32, 2


def make(name, seed=0, max_len=64, **options):
    torch.manual_seed(seed)
    layer = attentions.build(name, dim=DIM, heads=HEADS, max_len=max_len, **options)
    return layer.eval()


def inputs(B=3, N=37, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, DIM, generator=g) * scale
    lengths = torch.tensor([N, N - 11, 5])[:B]
    mask = torch.arange(N)[None, :] < lengths[:, None]
    return x, mask


def call(layer, x, mask, seed=123):
    torch.manual_seed(seed)  # methods that sample (landmarks, features) see the same stream
    return layer(x, mask)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_finite_gradients(name):
    layer = make(name).train()
    x, mask = inputs()
    x.requires_grad_(True)
    y = call(layer, x, mask)
    assert y.shape == x.shape and y.dtype == x.dtype, \
        f"{name}: core(q, k, v, mask) must return a tensor shaped like v, (B, H, N, d), got {tuple(y.shape)}"
    assert torch.isfinite(y).all(), f"{name}: NaN or inf in the output; keep normalisers away from 0 (add eps)"
    (y * mask[..., None]).square().sum().backward()
    assert torch.isfinite(x.grad).all(), f"{name}: NaN or inf in the input gradient; check divisions and roots"
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{name}: non-finite gradient of parameter {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_padded_content_does_not_leak(name):
    layer = make(name)
    x, mask = inputs()
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    with torch.no_grad():
        a, b = call(layer, x, mask), call(layer, noisy, mask)
    assert torch.isfinite(b).all(), f"{name}: large values at padded positions make the output non-finite"
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-4, atol=1e-5, msg=lambda m: (
        f"{name}: real outputs change with what padded positions hold; zero padded keys and values "
        f"(mask: (B, N), True = real) before any sum over keys\n{m}"))


@pytest.mark.parametrize("name", NAMES)
def test_padding_further_does_not_change_real_outputs(name):
    layer = make(name)
    x, mask = inputs()
    x2 = torch.cat([x, torch.randn(x.shape[0], 19, DIM)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(x.shape[0], 19, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a, b = call(layer, x, mask), call(layer, x2, mask2)
    torch.testing.assert_close(a[mask], b[:, : x.shape[1]][mask], rtol=1e-4, atol=1e-5, msg=lambda m: (
        f"{name}: more padding changes the real outputs; normalise over the real keys, never over N\n{m}"))


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name):
    x, mask = inputs()
    with torch.no_grad():
        a = call(make(name, seed=5), x, mask)
        b = call(make(name, seed=5), x, mask)
    assert torch.equal(a, b), (f"{name}: two layers built and run with the same seed differ; draw random "
                               "numbers from torch's seeded generator only")


# --- numerics, memory, documentation ------------------------------------------------------------

BASES = sorted({attentions.get(n).base or n for n in NAMES})  # one per class: presets share code


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # CUDA joins where there is one


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_long_sequence_with_large_inputs_stays_finite(name, device):
    """N = 4096, inputs x 30, under bf16 autocast: feature maps and normalisers must hold up
    (the float16/bf16 overflows of xformers #96, fast-transformers #32, performer-pytorch #44)."""
    N = 4096
    torch.manual_seed(0)
    layer = attentions.build(name, dim=64, heads=2, max_len=N).to(device).train()
    x = (torch.randn(1, N, 64, device=device) * 30).requires_grad_(True)
    mask = torch.arange(N, device=device)[None, :] < 4000
    with torch.autocast(device, dtype=torch.bfloat16):
        y = call(layer, x, mask)
    bf16 = (f"{name}: non-finite under bf16 autocast at N = 4096 with large inputs; the core runs in float32 "
            "(AttentionBase), so stabilise exponentials (subtract a max) and keep normalisers away from 0")
    assert torch.isfinite(y).all(), bf16
    (y.float() * mask[..., None]).square().mean().backward()
    assert torch.isfinite(x.grad).all(), bf16 + " (input gradient)"
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), bf16 + f" (gradient of {pname})"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_leak_under_bf16_autocast(name, device):
    torch.manual_seed(0)
    layer = attentions.build(name, dim=DIM, heads=HEADS, max_len=64).to(device).eval()
    x, mask = inputs()
    x, mask = x.to(device), mask.to(device)
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        a, b = call(layer, x, mask), call(layer, noisy, mask)
    assert torch.isfinite(b).all(), f"{name}: large values at padded positions make the bf16 output non-finite"
    torch.testing.assert_close(a[mask].float(), b[mask].float(), rtol=2e-2, atol=2e-2, msg=lambda m: (
        f"{name}: under bf16 autocast, real outputs change with what padded positions hold; mask padded keys\n{m}"))


class LargestTensor(TorchDispatchMode):
    """Records the largest storage (in elements) produced by any operator while active, forward
    and backward alike."""

    def __init__(self):
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                n = t.untyped_storage().nbytes() // t.element_size()
                if n > self.largest:
                    self.largest, self.op = n, str(func)
        return out


def largest_tensor(name, N, **options):
    torch.manual_seed(0)
    layer = attentions.build(name, dim=32, heads=2, max_len=N, **options).train()
    x = torch.randn(1, N, 32, requires_grad=True)
    mask = torch.arange(N)[None, :] < N - 100
    with LargestTensor() as rec:
        y = call(layer, x, mask)
        y.square().sum().backward()
    return rec


def test_memory_probe_sees_a_quadratic_method():
    """The probe below would catch an N x N tensor: it sees the one of plain softmax."""
    N = 2048
    rec = largest_tensor("softmax", N, impl="reference")
    assert rec.largest >= 2 * N * N


@pytest.mark.parametrize("name", [n for n in BASES if getattr(attentions.get(n).cls, "linear_memory", False)])
def test_linear_methods_never_hold_an_n_by_n_tensor(name):
    """No tensor anywhere in forward or backward comes near one head's N x N matrix."""
    N = 2048
    rec = largest_tensor(name, N)
    assert rec.largest < N * N / 4, (f"{name}: {rec.largest} elements from {rec.op}, about an N x N tensor; "
                                     "remove `linear_memory = True` or avoid materialising it")


@pytest.mark.parametrize("name", BASES)
def test_documented_equation_options_and_complexity(name):
    """Each attention's file documents every option (the lead-in docstring or the class's), and
    the registry has its one-line description and complexity for `lra list`. Each failure says
    what to add (the README's "Adding an attention" lists the same)."""
    entry = attentions.get(name)
    module = sys.modules.get(entry.cls.__module__)
    doc = (getattr(module, "__doc__", None) or "") + (entry.cls.__doc__ or "")
    assert entry.description, f"{name}: give the class a docstring; its first line is the description `lra list` shows"
    assert (entry.complexity or "").startswith("O("), \
        f'{name}: register it with its cost, e.g. @attentions.register("{name}", complexity="O(N d^2)")'
    assert "Paper:" in doc or "Vaswani" in doc, \
        f"{name}: add a line 'Paper: <authors, title, venue year>' to the class docstring (where the method comes from)"
    for field in attentions.option_fields(name):
        assert f"{field.name} (" in doc, (f"{name}: option {field.name!r} is not documented; add a line "
                                          f"'{field.name} (type, default): what it does' to the class docstring")
