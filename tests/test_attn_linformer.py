"""Linformer: E is a fixed saved buffer by default (the port) or a trained parameter (train_e); the
fast form equals the reference form; the reference form is the port's computation; an identity
projection gives softmax; inputs shorter than max_len use the first columns of E; longer inputs
are refused with a clear error."""

import math

import pytest
import torch

import attentions
from attentions.softmax import softmax_reference
from attn_check import assert_same_layer_function, build, outputs_and_grads, padded_inputs


def test_projection_is_a_trained_saved_parameter_with_train_e():
    layer = build("linformer", max_len=50, k=16, dtype=torch.float32, train_e=True)
    assert isinstance(layer.E, torch.nn.Parameter) and layer.E.shape == (2, 16, 50)
    assert "E" in layer.state_dict()
    assert any(p is layer.E for p in layer.parameters())  # the optimiser sees it
    assert abs(layer.E.std().item() - 0.02) < 0.003
    x, mask = padded_inputs(2, 30, 32, (30, 12), dtype=torch.float32)
    _, grads = outputs_and_grads(layer, x, mask)
    g = grads["E"]
    assert g[:, :, :30].abs().sum() > 0 and torch.all(g[:, :, 30:] == 0)  # only the columns in use


def test_default_projection_is_a_fixed_saved_seeded_buffer():
    layer = build("linformer", max_len=50, k=16, dtype=torch.float32)
    assert not layer.options.train_e and layer.info() == {"projection": "fixed buffer"}
    assert "E" in layer.state_dict() and all(p is not layer.E for p in layer.parameters())
    assert not layer.E.requires_grad and layer.E.shape == (2, 16, 50)
    assert abs(layer.E.std().item() - 0.02) < 0.003
    again = build("linformer", max_len=50, k=16, dtype=torch.float32)
    assert torch.equal(layer.E, again.E)  # drawn from the seeded global generator
    other = build("linformer", max_len=50, k=16, dtype=torch.float32, seed=1)
    assert not torch.equal(other.E, layer.E)
    other.load_state_dict(layer.state_dict())  # a saved model restores its projection
    assert torch.equal(other.E, layer.E)
    x, mask = padded_inputs(2, 30, 32, (30, 12), dtype=torch.float32)
    _, grads = outputs_and_grads(layer, x, mask)
    assert "E" not in grads
    trained = build("linformer", max_len=50, k=16, dtype=torch.float32, train_e=True)
    n_params = lambda m: sum(p.numel() for p in m.parameters())
    assert n_params(trained) - n_params(layer) == 2 * 16 * 50


@pytest.mark.parametrize("train_e", [False, True])
@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (3, (3, 1, 2))])
def test_fast_form_equals_reference_form(train_e, N, lengths):
    assert_same_layer_function("linformer", {"impl": "fast", "train_e": train_e, "k": 9},
                               {"impl": "reference", "train_e": train_e, "k": 9}, N=N, lengths=lengths, max_len=40)


def port_linformer(Q, K, V, mask, E):
    """LinformerAttention.forward of the Skyformer port (models/attention_linformer.py), written
    out again; mask is float (B, N)."""
    K = torch.matmul(E, K * mask[:, None, :, None])
    V = torch.matmul(E, V * mask[:, None, :, None])
    dot = torch.matmul(Q, torch.transpose(K, -2, -1)) / math.sqrt(Q.shape[-1])
    return torch.matmul(torch.softmax(dot, dim=-1), V)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_core_is_the_port_computation(impl):
    N = 29
    layer = build("linformer", max_len=N, k=7, impl=impl)
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, N, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(N)[None] < torch.tensor([29, 11, 2])[:, None]
    torch.testing.assert_close(layer.core(q, k, v, mask), port_linformer(q, k, v, mask.double(), layer.E))


def test_identity_projection_is_softmax():
    N = 24
    layer = build("linformer", max_len=N, k=N)
    with torch.no_grad():
        layer.E.copy_(torch.eye(N, dtype=torch.float64).expand(2, N, N))
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, N, 16, dtype=torch.float64) for _ in range(3))
    full = torch.ones(3, N, dtype=torch.bool)
    torch.testing.assert_close(layer.core(q, k, v, full), softmax_reference(q, k, v, full))


def test_shorter_inputs_use_the_first_columns():
    layer = build("linformer", max_len=64, k=8)
    x, mask = padded_inputs(2, 20, 32, (20, 9))
    short = build("linformer", max_len=20, k=8)
    with torch.no_grad():
        short.load_state_dict({**layer.state_dict(), "E": layer.E[:, :, :20]})
        torch.testing.assert_close(layer(x, mask)[mask], short(x, mask)[mask])


def test_longer_than_max_len_is_refused():
    layer = attentions.build("linformer", dim=32, heads=2, max_len=16)
    with pytest.raises(ValueError, match="max_len=16 but got 17 tokens"):
        layer(torch.randn(1, 17, 32), torch.ones(1, 17, dtype=torch.bool))


@pytest.mark.parametrize("bad,match", [({"k": 0}, "k must"), ({"init_std": 0}, "init_std")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("linformer", **bad)
