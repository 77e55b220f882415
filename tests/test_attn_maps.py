"""attention_maps, held to its contract for every registered attention (presets and plugins
included): the maps are the token mixing the core applies, exactly (A @ v against the core's own
output, float64), zero at padded keys, untouched by padded content, and taken with dropout off."""

import pytest
import torch

import attentions
from attentions import AttentionBase, NoAttentionMap, register, unregister
from attentions.base import float32_core

NAMES = attentions.available()
DIM, HEADS = 32, 2


def make(name, **options):
    torch.manual_seed(0)
    return attentions.build(name, dim=DIM, heads=HEADS, max_len=64, **options).double().eval()


def inputs(B=3, N=23, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, DIM, generator=g, dtype=torch.float64)
    mask = torch.arange(N)[None, :] < torch.tensor([N, 14, 3])[:B, None]
    return x, mask


def maps_and_core(layer, x, mask, seed=7):
    """The maps and the core's output on random v, each drawn at the same generator state."""
    torch.manual_seed(seed)
    maps = layer.attention_maps(x, mask)
    q, k, _ = layer.project(x)
    v = torch.randn(q.shape, generator=torch.Generator().manual_seed(3), dtype=q.dtype)
    torch.manual_seed(seed)
    with torch.no_grad(), float32_core(x.device):
        out = layer.core(q, k, v, mask)
    return maps, v, out


@pytest.mark.parametrize("name", NAMES)
def test_maps_times_v_is_the_core_output(name):
    layer = make(name)
    x, mask = inputs()
    maps, v, out = maps_and_core(layer, x, mask)
    assert maps and all(a.shape == (3, HEADS, 23, 23) and a.dtype == torch.float64 for a in maps.values())
    groups = zip(maps.values(), v.chunk(len(maps), -1), out.chunk(len(maps), -1))
    for (label, a), (_, vs, os) in zip(maps.items(), groups):
        torch.testing.assert_close(a @ vs, os, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name} {label}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_maps_are_zero_at_padded_keys_and_blind_to_padded_content(name):
    layer = make(name)
    x, mask = inputs()
    torch.manual_seed(7)
    maps = layer.attention_maps(x, mask)
    noisy = torch.where(mask[..., None], x, 50 * torch.randn_like(x))
    torch.manual_seed(7)
    other = layer.attention_maps(noisy, mask)
    real = mask[:, None, :, None] & mask[:, None, None, :]
    for label, a in maps.items():
        assert torch.all(a.masked_select(~mask[:, None, None, :]) == 0), label
        torch.testing.assert_close(a[real.expand_as(a)], other[label][real.expand_as(a)], rtol=1e-7, atol=1e-9)


def test_maps_are_taken_with_dropout_off_and_the_mode_is_restored():
    layer = make("softmax", dropout=0.5).train()
    x, mask = inputs()
    a = layer.attention_maps(x, mask)["attention"]
    assert layer.training
    sums = a.sum(-1)[mask[:, None, :].expand(-1, HEADS, -1)]
    torch.testing.assert_close(sums, torch.ones_like(sums))  # no dropped (or rescaled) weight


def test_an_attention_that_is_not_a_map_of_v_says_so():
    @register("toy-squared")
    class Squared(AttentionBase):
        """Squares v: not linear in v, so no map."""

        maps_from_core = False

        def core(self, q, k, v, mask):
            return v * v

    try:
        layer = attentions.build("toy-squared", dim=DIM, heads=HEADS, max_len=64)
        with pytest.raises(NoAttentionMap, match="does not write its output"):
            layer.attention_maps(*inputs())
    finally:
        unregister("toy-squared")
