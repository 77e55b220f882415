"""Linformer: E is a real trained parameter; an identity projection gives softmax; inputs shorter
than max_len use the first columns of E; longer inputs are refused with a clear error."""

import pytest
import torch

import attentions
from attentions.softmax import softmax_reference
from attn_check import build, outputs_and_grads, padded_inputs


def test_projection_is_a_trained_saved_parameter():
    layer = build("linformer", max_len=50, k=16, dtype=torch.float32)
    assert isinstance(layer.E, torch.nn.Parameter) and layer.E.shape == (2, 16, 50)
    assert "E" in layer.state_dict()
    assert any(p is layer.E for p in layer.parameters())  # the optimiser sees it
    assert abs(layer.E.std().item() - 0.02) < 0.003
    x, mask = padded_inputs(2, 30, 32, (30, 12), dtype=torch.float32)
    _, grads = outputs_and_grads(layer, x, mask)
    g = grads["E"]
    assert g[:, :, :30].abs().sum() > 0 and torch.all(g[:, :, 30:] == 0)  # only the columns in use


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
