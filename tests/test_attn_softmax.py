"""Softmax: the fast paths (SDPA; the CPU training path with its own dropout and backward) equal
the plain reference, on outputs and gradients, dropout included; the reference is the port's
computation; the dropout draws drop the stated fraction."""

import math

import pytest
import torch

import attentions
from attentions.softmax import drop_threshold, dropout_drop, softmax_attention, softmax_reference
from attn_check import assert_dropout_only_in_training, assert_fast_drops_what_reference_drops, padded_inputs


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


@pytest.mark.parametrize("N,lengths", [(37, (37, 37, 37)), (37, (37, 20, 1)), (3, (3, 1, 2))])
def test_cpu_training_path_matches_reference_with_dropout(N, lengths):
    """Training with dropout on a CPU takes the hand-written path (no mask when nothing is padded);
    with the same seed it drops the same weights as the reference: same outputs and gradients."""
    x, mask = padded_inputs(3, N, 32, lengths)
    assert_fast_drops_what_reference_drops("softmax", x, mask, seed=11)


def test_cpu_training_path_masks_padded_keys():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(9)[None] < torch.tensor([9, 4])[:, None]
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 4:], v2[1, :, 4:] = 1e3, 1e3  # padded content must not matter
    torch.manual_seed(1)
    a = softmax_attention(q, k, v, mask, dropout=0.2, training=True)
    torch.manual_seed(1)
    b = softmax_attention(q, k2, v2, mask, dropout=0.2, training=True)
    torch.testing.assert_close(a, b)


def port_softmax(Q, K, V, mask):
    """SoftmaxAttention.forward of the Skyformer port (models/attention.py), written out again
    without its dropout; mask is float (B, N)."""
    dot = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    dot = dot - 1e6 * (1 - mask[:, None, None, :])
    return torch.softmax(dot, dim=-1) @ V


def test_reference_is_the_port_computation():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 21, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(21)[None] < torch.tensor([21, 7, 1])[:, None]
    torch.testing.assert_close(softmax_reference(q, k, v, mask), port_softmax(q, k, v, mask.double()))


def test_dropout_draws_drop_the_rounded_rate_and_rescale():
    t, scale = drop_threshold(0.1)
    assert t == 3277 and scale == 1 / (1 - 3277 / 32768)
    torch.manual_seed(0)
    drop = dropout_drop((1000, 1000), 0.1, "cpu")
    assert abs(drop.double().mean().item() - 3277 / 32768) < 1e-3
