"""Kernelized attention: exactly exp(-|q' - k'|^2 / 2) V over real keys, rows not normalised."""

import pytest
import torch

import attentions
from attentions.kernelized import kernelized_attention
from attn_check import assert_dropout_only_in_training


def test_core_is_the_gaussian_kernel_times_v():
    torch.manual_seed(0)
    n, N, d = 5, 8, 16
    q, k, v = (torch.randn(1, 1, N, d, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < n
    s = d ** -0.25
    kern = torch.exp(-torch.cdist(q[0, 0] * s, k[0, 0, :n] * s) ** 2 / 2)
    torch.testing.assert_close(kernelized_attention(q, k, v, mask)[0, 0], kern @ v[0, 0, :n])


def test_dropout_on_the_kernel_only_in_training():
    assert_dropout_only_in_training("kernelized")
    assert attentions.resolve("kernelized").dropout == 0.1  # the port's setting


def test_bad_options():
    with pytest.raises(ValueError, match="dropout"):
        attentions.resolve("kernelized", dropout=1.0)
