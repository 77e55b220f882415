"""Linear Transformer (elu + 1): the linear form equals the N x N form and the paper's formula."""

import pytest
import torch
import torch.nn.functional as F

import attentions
from attn_check import assert_same_layer_function


@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (1, (1, 1, 1)), (130, (130, 64, 129))])
def test_linear_form_equals_quadratic_form(N, lengths):
    assert_same_layer_function("linear", {"impl": "fast"}, {"impl": "reference"}, N=N, lengths=lengths, x_scale=2.0)


def test_core_is_katharopoulos_formula():
    torch.manual_seed(0)
    n, N, d = 6, 9, 4
    q, k, v = (torch.randn(1, 1, N, d, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < n
    layer = attentions.build("linear", dim=d, heads=1, max_len=N)
    out = layer.core(q, k, v, mask)[0, 0]
    fq, fk = F.elu(q[0, 0]) + 1, F.elu(k[0, 0, :n]) + 1
    expected = (fq @ (fk.T @ v[0, 0, :n])) / ((fq @ fk.sum(0))[:, None] + 1e-6)
    torch.testing.assert_close(out, expected)


def test_bad_options():
    with pytest.raises(ValueError, match="one of"):
        attentions.resolve("linear", impl="flash")
