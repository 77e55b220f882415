"""Nystromformer: landmarks are segment means of real tokens; with as many landmarks as tokens it
is softmax; the iterative pseudo-inverse converges to the true one; the convolution skip."""

import pytest
import torch
import torch.nn.functional as F

import attentions
from attentions.nystrom import iterative_pinv, nystrom_attention, nystrom_reference, segment_means
from attentions.softmax import softmax_reference
from attn_check import assert_same_layer_function, build, outputs_and_grads, padded_inputs


def test_segment_means_of_real_tokens_with_uneven_segments():
    N, m = 14, 4
    x = torch.arange(N, dtype=torch.float64).view(1, 1, N, 1).repeat(2, 1, 1, 1)
    mask = torch.arange(N)[None] < torch.tensor([10, 3])[:, None]
    lm, used = segment_means(x, mask, m)
    # 10 real tokens in 4 segments: floor(r * 4 / 10) -> sizes 3, 2, 3, 2
    torch.testing.assert_close(lm[0, 0, :, 0], torch.tensor([1.0, 3.5, 6.0, 8.5], dtype=torch.float64))
    # 3 real tokens, fewer than m: each token is its own landmark, the 4th is unused
    torch.testing.assert_close(lm[1, 0, :3, 0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert used.tolist() == [[True] * 4, [True, True, True, False]]


def test_iterative_pinv_converges_to_the_pseudo_inverse():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(3, 12, 12, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(iterative_pinv(a, 30), torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)
    err = [(iterative_pinv(a, it) @ a - torch.eye(12, dtype=a.dtype)).norm() for it in (2, 4, 6)]
    assert err[0] > err[1] > err[2]


@pytest.mark.parametrize("N,lengths", [(40, (40, 23, 1)), (7, (7, 7, 2))])
def test_as_many_landmarks_as_tokens_is_softmax(N, lengths):
    torch.manual_seed(0)
    B, H, d = 3, 2, 16
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.arange(N)[None] < torch.tensor(lengths)[:, None]
    sel = mask[:, None].expand(-1, H, -1)
    outs, grads = [], []
    for fn in (lambda: nystrom_attention(q, k, v, mask, landmarks=N, pinv_iters=40),
               lambda: softmax_reference(q, k, v, mask)):
        o = fn()
        outs.append(o[sel])
        grads.append(torch.autograd.grad((o[sel]).sin().sum(), (q, k, v)))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-9)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("N,lengths,landmarks", [
    (48, (48, 48, 48), 8),    # nothing padded, m divides N: the reshape landmarks, no mask at all
    (37, (37, 37, 37), 8),    # nothing padded, uneven segments
    (37, (37, 20, 5), 8),     # padding, one sequence shorter than m: unused landmarks
    (37, (37, 20, 9), 8),     # padding, every sequence has m tokens
    (5, (5, 1, 3), 128),      # every sequence shorter than m
])
def test_fast_form_equals_reference_form(N, lengths, landmarks):
    assert_same_layer_function("nystrom", {"impl": "fast", "landmarks": landmarks},
                               {"impl": "reference", "landmarks": landmarks}, N=N, lengths=lengths, x_scale=2.0)


def test_port_pooling_on_unpadded_sequences():
    """With nothing padded and m dividing N, landmarks are the port's block means and the output
    is the port's formula (one pseudo-inverse per matrix instead of the port's batch-wide Z0)."""
    torch.manual_seed(0)
    B, H, N, d, m = 2, 2, 32, 16, 8
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64) for _ in range(3))
    full = torch.ones(B, N, dtype=torch.bool)
    s = d ** -0.25
    ql = (q * s).reshape(B, H, m, N // m, d).mean(-2)
    kl = (k * s).reshape(B, H, m, N // m, d).mean(-2)
    k1 = torch.softmax((q * s) @ kl.transpose(-1, -2), -1)
    k2 = torch.softmax(ql @ kl.transpose(-1, -2), -1)
    k3 = torch.softmax(ql @ (k * s).transpose(-1, -2), -1)
    expected = k1 @ iterative_pinv(k2, 6) @ (k3 @ v)
    torch.testing.assert_close(nystrom_attention(q, k, v, full, m, 6), expected)


def port_iterative_inv(mat, n_iter=6):
    """iterative_inv of the Skyformer port (models/attention_nystrom.py, init option "original"),
    written out again: one maximum column sum over the whole batch."""
    I = torch.eye(mat.size(-1), dtype=mat.dtype)
    V = 1 / torch.max(torch.sum(mat, dim=-2)) * mat.transpose(-1, -2)
    for _ in range(n_iter):
        KV = mat @ V
        V = (0.25 * V) @ (13 * I - KV @ (15 * I - KV @ (7 * I - KV)))
    return V


def test_pinv_batch_init_is_the_port_rule_and_couples_matrices():
    torch.manual_seed(0)
    a = torch.softmax(3 * torch.randn(3, 2, 10, 10, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(iterative_pinv(a, 6, "batch"), port_iterative_inv(a))
    b = a.clone()
    b[1:] = torch.softmax(6 * torch.randn(2, 2, 10, 10, dtype=torch.float64), dim=-1)  # new neighbours
    own = lambda x, init: iterative_pinv(x, 6, init)[0]
    torch.testing.assert_close(own(a, "matrix"), own(b, "matrix"))  # per matrix: independent
    assert not torch.allclose(own(a, "batch"), own(b, "batch"))  # batch-wide: tied to the others
    assert not torch.allclose(iterative_pinv(a, 6, "matrix"), iterative_pinv(a, 6, "batch"))


@pytest.mark.parametrize("name,differ", [("nystrom", 1e-3), ("skyformer", 1e-12)])
def test_pinv_init_option_reaches_the_layer(name, differ):
    """The option changes the output (for skyformer barely: its degree-normalised landmark
    matrices have nearly equal column sums, so the two starting points nearly coincide)."""
    x, mask = padded_inputs(2, 40, 32, (40, 33))
    outs = []
    for init in ("matrix", "batch"):
        layer = build(name, landmarks=8, pinv_init=init)
        torch.manual_seed(3)
        with torch.no_grad():
            outs.append(layer(x, mask)[mask])
    assert (outs[0] - outs[1]).abs().max() > differ


def test_error_falls_as_landmarks_grow():
    """With the paper's 6 iterations (which also regularise: the exact pseudo-inverse of a small
    landmark matrix amplifies the approximation error) the error falls as landmarks grow."""
    torch.manual_seed(0)
    B, H, N, d = 2, 2, 96, 16
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < torch.tensor([96, 70])[:, None]
    sel = mask[:, None].expand(-1, H, -1)
    ref = softmax_reference(q, k, v, mask)[sel]
    err = [(nystrom_attention(q, k, v, mask, m, 6)[sel] - ref).norm() / ref.norm() for m in (4, 16, 48, 96)]
    assert err[0] > err[1] > err[2] > err[3] and err[3] < 0.1


def test_default_layer_is_close_to_softmax_on_short_sequences():
    """128 landmarks, 6 iterations, sequences shorter than 128: the method is softmax up to the
    unconverged pseudo-inverse."""
    x, mask = padded_inputs(2, 30, 32, (30, 12))
    nys, soft = build("nystrom"), build("softmax", dropout=0.0, impl="reference")
    nys.load_state_dict(soft.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(nys(x, mask)[mask], soft(x, mask)[mask], rtol=0, atol=0.1)


def test_conv_skip_adds_a_per_head_depthwise_convolution_of_masked_values():
    layer = build("nystrom", conv_kernel=3)
    assert layer.conv.weight.shape == (2, 1, 3, 1)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    got = layer.core(q, k, v, mask) - nystrom_attention(q, k, v, mask, 128, 6)
    vm = v * mask[:, None, :, None]
    w = layer.conv.weight[:, 0, :, 0]  # (H, 3)
    pad = F.pad(vm, (0, 0, 1, 1))
    expected = sum(w[None, :, t, None, None] * pad[:, :, t:t + 9] for t in range(3))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, layer.conv(vm))  # the original code's Conv2d, same weights


def test_gradients_reach_the_conv_kernel():
    layer = build("nystrom", conv_kernel=5)
    x, mask = padded_inputs(2, 12, 32, (12, 6))
    _, grads = outputs_and_grads(layer, x, mask)
    assert grads["conv.weight"].abs().sum() > 0


@pytest.mark.parametrize("bad,match", [({"landmarks": 0}, "landmarks"), ({"conv_kernel": 4}, "odd"),
                                       ({"pinv_iters": -1}, "pinv_iters"),
                                       ({"pinv_init": "global"}, "pinv_init")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("nystrom", **bad)
