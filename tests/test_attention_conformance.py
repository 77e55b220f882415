"""Conformance suite run over every registered attention, presets and plugins included: a new
variant is held to these the moment it is registered."""

import pytest
import torch

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
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    (y * mask[..., None]).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NAMES)
def test_padded_content_does_not_leak(name):
    layer = make(name)
    x, mask = inputs()
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    with torch.no_grad():
        a, b = call(layer, x, mask), call(layer, noisy, mask)
    assert torch.isfinite(b).all()
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_padding_further_does_not_change_real_outputs(name):
    layer = make(name)
    x, mask = inputs()
    x2 = torch.cat([x, torch.randn(x.shape[0], 19, DIM)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(x.shape[0], 19, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a, b = call(layer, x, mask), call(layer, x2, mask2)
    torch.testing.assert_close(a[mask], b[:, : x.shape[1]][mask], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name):
    x, mask = inputs()
    with torch.no_grad():
        a = call(make(name, seed=5), x, mask)
        b = call(make(name, seed=5), x, mask)
    assert torch.equal(a, b)
