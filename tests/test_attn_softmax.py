"""Softmax: the SDPA fast path equals the plain reference, on outputs and gradients."""

import pytest
import torch

import attentions
from attentions.softmax import softmax_reference
from attn_check import assert_dropout_only_in_training


@pytest.mark.parametrize("B,N,d", [(1, 1, 8), (2, 37, 16), (3, 130, 32)])
def test_sdpa_path_matches_reference(B, N, d):
    torch.manual_seed(0)
    H = 2
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.arange(N)[None, :] < torch.tensor([N, max(1, N // 2), 1])[:B, None]
    ref_layer = attentions.build("softmax", dim=H * d, heads=H, max_len=N, impl="reference", dropout=0.0)
    fast_layer = attentions.build("softmax", dim=H * d, heads=H, max_len=N, impl="fast", dropout=0.0)
    outs, grads = [], []
    for layer in (ref_layer, fast_layer):
        o = layer.core(q, k, v, mask)
        g = torch.autograd.grad((o * mask[:, None, :, None]).sin().sum(), (q, k, v))
        outs.append(o)
        grads.append(g)
    torch.testing.assert_close(outs[0][mask[:, None].expand(-1, H, -1)], outs[1][mask[:, None].expand(-1, H, -1)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_reference_is_softmax_of_scaled_scores():
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 1, 1, 5, 4).unbind(0)
    mask = torch.tensor([[True, True, True, False, False]])
    out = softmax_reference(q, k, v, mask)
    w = torch.softmax((q[0, 0] @ k[0, 0].T)[:, :3] / 2.0, dim=-1)
    torch.testing.assert_close(out[0, 0], w @ v[0, 0, :3])


def test_attention_dropout_only_in_training():
    assert_dropout_only_in_training("softmax", impl="reference")
