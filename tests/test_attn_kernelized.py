"""Kernelized attention: exactly exp(-|q' - k'|^2 / 2) V over real keys, rows not normalised; the
one-product fast form equals the reference form on outputs and gradients, dropout included; the
reference form is the port's computation."""

import pytest
import torch

import attentions
from attentions.kernelized import kernelized_attention, kernelized_reference
from attn_check import (assert_dropout_only_in_training, assert_fast_drops_what_reference_drops, assert_same_layer_function,
                        build, padded_inputs)


@pytest.mark.parametrize("fn", [kernelized_attention, kernelized_reference])
def test_core_is_the_gaussian_kernel_times_v(fn):
    torch.manual_seed(0)
    n, N, d = 5, 8, 16
    q, k, v = (torch.randn(1, 1, N, d, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < n
    s = d ** -0.25
    kern = torch.exp(-torch.cdist(q[0, 0] * s, k[0, 0, :n] * s) ** 2 / 2)
    torch.testing.assert_close(fn(q, k, v, mask)[0, 0], kern @ v[0, 0, :n])


def port_kernelized(Q, K, V, mask):
    """SoftmaxAttention_RBF.forward of the Skyformer port (models/attention.py), written out again
    without its dropout; mask is float (B, N)."""
    p = Q.shape[-1]
    Q = Q * (mask[:, None, :, None] * p ** -0.25)
    K = K * (mask[:, None, :, None] * p ** -0.25)
    diag_Q = ((Q * Q).sum(-1) * 0.5)[..., :, None]
    diag_K = ((K * K).sum(-1) * 0.5)[..., None, :]
    product = Q @ K.transpose(-2, -1) - diag_Q - diag_K - 1e9 * (1 - mask[:, None, None, :])
    return torch.exp(product) @ V


@pytest.mark.parametrize("fn", [kernelized_attention, kernelized_reference])
def test_real_rows_are_the_port_computation(fn):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 23, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(23)[None] < torch.tensor([23, 9, 1])[:, None]
    sel = mask[:, None].expand(-1, 2, -1)
    torch.testing.assert_close(fn(q, k, v, mask)[sel], port_kernelized(q, k, v, mask.double())[sel])


@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (5, (5, 5, 5)), (3, (3, 1, 2))])
def test_fast_form_equals_reference_form_in_eval(N, lengths):
    assert_same_layer_function("kernelized", {"impl": "fast"}, {"impl": "reference"}, N=N, lengths=lengths,
                               x_scale=0.5)


@pytest.mark.parametrize("lengths", [(29, 29), (29, 7)])
def test_fast_form_equals_reference_form_with_dropout(lengths):
    """In training, with the same seed, both forms drop the same entries: same outputs, same
    gradients for the input and every parameter."""
    x, mask = padded_inputs(2, 29, 32, lengths, scale=0.5)
    assert_fast_drops_what_reference_drops("kernelized", x, mask, seed=7)


def test_padded_keys_get_weight_zero_whatever_they_hold():
    layer = build("kernelized", dropout=0.0)
    x, mask = padded_inputs(2, 20, 32, (20, 6))
    noisy = torch.where(mask[..., None], x, 1e3 * torch.randn_like(x))
    torch.testing.assert_close(layer(x, mask)[mask], layer(noisy, mask)[mask])


def test_dropout_on_the_kernel_only_in_training():
    assert_dropout_only_in_training("kernelized")
    assert_dropout_only_in_training("kernelized", impl="reference")
    assert attentions.resolve("kernelized").dropout == 0.1  # the port's setting


@pytest.mark.parametrize("bad,match", [({"dropout": 1.0}, "dropout"), ({"impl": "sdpa"}, "impl")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("kernelized", **bad)
