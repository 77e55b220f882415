"""Skyformer: approximates the exact Gaussian-kernel attention (`kernelized`) better as landmarks
grow (fixed seed); landmarks are real tokens only."""

import pytest
import torch

import attentions
from attentions.base import sample_real
from attentions.kernelized import kernelized_attention
from attentions.skyformer import skyformer_attention


def test_error_against_kernelized_falls_as_landmarks_grow():
    torch.manual_seed(0)
    B, H, N, d = 2, 2, 40, 16
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < torch.tensor([40, 23])[:, None]
    sel = mask[:, None].expand(-1, H, -1)
    ref = kernelized_attention(q, k, v, mask)[sel]
    err = []
    for m in (4, 16, 64, 256):
        torch.manual_seed(1)
        err.append(((skyformer_attention(q, k, v, mask, m, 0.1, 6)[sel] - ref).norm() / ref.norm()).item())
    assert err[0] > err[1] > err[2] > err[3] and err[3] < 0.05


def test_landmarks_are_sampled_among_real_tokens_only():
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[0, :50] = True
    mask[1, :7] = True
    mask[2, [3, 10, 11, 40]] = True  # a mask with holes
    torch.manual_seed(0)
    pos = sample_real(mask, (500,))
    assert pos.shape == (3, 500)
    for b in range(3):
        assert mask[b, pos[b]].all()
        assert set(pos[b].tolist()) == set(mask[b].nonzero().squeeze(1).tolist())  # and all of them


def test_rows_are_not_normalised_like_the_kernel():
    """Far-away queries get (near) zero output, as exp(-|q - k|^2 / 2) does, not a weighted mean."""
    layer = attentions.build("skyformer", dim=16, heads=1, max_len=8)
    k = torch.zeros(1, 1, 8, 16)
    q = torch.cat([torch.zeros(1, 1, 4, 16), torch.full((1, 1, 4, 16), 50.0)], dim=2)
    v = torch.ones(1, 1, 8, 16)
    out = layer.core(q, k, v, torch.ones(1, 8, dtype=torch.bool))
    assert out[0, 0, 4:].abs().max() < 1e-6 and out[0, 0, :4].abs().min() > 1


@pytest.mark.parametrize("bad,match", [({"landmarks": 0}, "landmarks"), ({"gamma": -0.1}, "gamma")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("skyformer", **bad)
