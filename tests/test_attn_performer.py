"""Performer FAVOR+: orthogonal chi-norm features; the estimate of softmax(q k / sqrt(d)) improves
as features grow (fixed seed); features are a seeded buffer, redrawn only when asked, in training."""

import math

import pytest
import torch

import attentions
from attentions.base import linear_attention
from attentions.performer import favor_features, orthogonal_gaussian
from attentions.softmax import softmax_reference


def test_blocks_are_orthogonal_with_gaussian_row_norms():
    torch.manual_seed(0)
    w = orthogonal_gaussian(80, 16).double()
    for i in range(0, 80, 16):
        block = w[i:i + 16]
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram), atol=1e-5, rtol=0)
    norms = torch.cat([orthogonal_gaussian(128, 16) for _ in range(20)]).norm(dim=1)
    assert abs(norms.square().mean().item() - 16) < 1.0  # chi(16): E|w|^2 = d


def performer_error(m, q, k, v, mask):
    torch.manual_seed(1)
    w = orthogonal_gaussian(m, q.shape[-1]).double()
    s = q.shape[-1] ** -0.25
    out = linear_attention(favor_features(q * s, w, None, True, 1e-4), favor_features(k * s, w, mask, False, 1e-4),
                           v, mask, eps=0.0)
    sel = mask[:, None].expand(-1, q.shape[1], -1)
    ref = softmax_reference(q, k, v, mask)
    return ((out - ref)[sel].norm() / ref[sel].norm()).item()


def test_error_against_softmax_falls_as_features_grow():
    torch.manual_seed(0)
    B, H, N, d = 2, 2, 40, 16
    q, k = (torch.randn(B, H, N, d, dtype=torch.float64) * 0.3 for _ in range(2))
    v = torch.randn(B, H, N, d, dtype=torch.float64)
    mask = torch.arange(N)[None] < torch.tensor([40, 23])[:, None]
    err = [performer_error(m, q, k, v, mask) for m in (16, 256, 4096)]
    assert err[0] > err[1] > err[2] and err[2] < 0.03


def test_temperature_is_one_over_sqrt_d():
    """The layer estimates softmax(q . k / sqrt(d)), not the port's softmax(q . k / d)."""
    torch.manual_seed(0)
    layer = attentions.build("performer", dim=4, heads=1, max_len=2, features=20000).double()
    q = torch.tensor([[[[1.0, 0, 0, 0]]]], dtype=torch.float64)
    k = torch.tensor([[[[2.0, 0, 0, 0], [-2.0, 0, 0, 0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0], [0.0]]]], dtype=torch.float64).expand(1, 1, 2, 4)
    full = torch.ones(1, 2, dtype=torch.bool)
    out = layer.core(q, k, v, full)[0, 0, 0, 0].item()
    assert abs(out - torch.sigmoid(torch.tensor(2.0)).item()) < 0.02  # scores +-1: weight 0.88
    assert abs(out - torch.sigmoid(torch.tensor(1.0)).item()) > 0.1  # the port's scores +-0.5: 0.73


def test_features_are_a_seeded_buffer_redrawn_only_on_request_in_training():
    torch.manual_seed(3)
    a = attentions.build("performer", dim=32, heads=2, max_len=16, features=40)
    torch.manual_seed(3)
    b = attentions.build("performer", dim=32, heads=2, max_len=16, features=40)
    assert torch.equal(a.projection, b.projection) and a.projection.shape == (40, 16)
    assert "projection" in a.state_dict() and all(p is not a.projection for p in a.parameters())
    x, mask = torch.randn(1, 16, 32), torch.ones(1, 16, dtype=torch.bool)
    before = a.projection.clone()
    a.train()(x, mask)
    assert torch.equal(a.projection, before)  # redraw is off by default
    r = attentions.build("performer", dim=32, heads=2, max_len=16, redraw=True)
    before = r.projection.clone()
    r.eval()(x, mask)
    assert torch.equal(r.projection, before)
    r.train()(x, mask)
    assert not torch.equal(r.projection, before)


def test_huge_inputs_stay_finite():
    layer = attentions.build("performer", dim=32, heads=2, max_len=64)
    x = torch.randn(2, 64, 32) * 1e3
    mask = torch.arange(64)[None] < torch.tensor([64, 10])[:, None]
    assert torch.isfinite(layer(x, mask)).all()


@pytest.mark.parametrize("bad,match", [({"features": 0}, "features"), ({"kernel_eps": 0}, "kernel_eps")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("performer", **bad)
