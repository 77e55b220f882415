"""cosFormer: the linear form equals the N x N re-weighted form, which is the paper's formula."""

import math

import pytest
import torch

import attentions
from attentions.cosformer import cosformer_reference
from attn_check import assert_same_layer_function


@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (2, (2, 1, 1)), (130, (130, 3, 77))])
def test_linear_form_equals_quadratic_form(N, lengths):
    assert_same_layer_function("cosformer", {"impl": "fast"}, {"impl": "reference"}, N=N, lengths=lengths, x_scale=2.0)


def test_reference_is_relu_scores_times_cos_of_relative_distance():
    torch.manual_seed(0)
    n, N, d = 5, 8, 4
    q, k, v = (torch.randn(1, 1, N, d, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < n
    out = cosformer_reference(q, k, v, mask, 1e-6)[0, 0, :n]
    i = torch.arange(n, dtype=torch.float64)
    w = torch.cos(math.pi / 2 * (i[:, None] - i[None, :]) / n)
    a = (q[0, 0, :n].relu() @ k[0, 0, :n].relu().T) * w
    torch.testing.assert_close(out, (a @ v[0, 0, :n]) / a.sum(-1, keepdim=True).clamp(min=1e-6))
    assert torch.all(w > 0)  # M = real length keeps every weight positive


def test_all_negative_query_gives_zero_not_nan():
    layer = attentions.build("cosformer", dim=4, heads=1, max_len=8)
    q = -torch.ones(1, 1, 3, 4)
    k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    out = layer.core(q, k, v, torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(out, torch.zeros_like(out))


def test_bad_options():
    with pytest.raises(ValueError, match="eps"):
        attentions.resolve("cosformer", eps=-1)
