"""Hedgehog: linear form = quadratic form; identity-initialised [softmax(xW), softmax(-xW)] maps;
the softmax-mimicry loss is the cross-entropy it claims to be, only in training, and it trains."""

import math

import pytest
import torch

import attentions
from attentions.hedgehog import mimicry_loss
from attn_check import assert_same_layer_function, build, padded_inputs
from lra.core.config import ModelConfig
from lra.core.model import Classifier


@pytest.mark.parametrize("options", [{}, {"feature_dim": 48}, {"feature_dim": 5}])
@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (3, (3, 1, 2))])
def test_linear_form_equals_quadratic_form(options, N, lengths):
    assert_same_layer_function("hedgehog", {**options, "impl": "fast"}, {**options, "impl": "reference"},
                               N=N, lengths=lengths, x_scale=2.0)


def test_feature_maps_start_as_identity_softmax_pair():
    layer = build("hedgehog")
    x = torch.randn(2, 2, 7, 16, dtype=torch.float64)
    phi = layer.feature_q(x)
    torch.testing.assert_close(phi, torch.cat([x.softmax(-1), (-x).softmax(-1)], dim=-1))
    assert layer.feature_q.weight is not layer.feature_k.weight  # separate maps for q and k
    wide = build("hedgehog", feature_dim=24)
    assert wide.feature_q(x).shape == (2, 2, 7, 48)


def explicit_ce(layer, x, mask):
    """Cross-entropy of Hedgehog's weights against softmax weights, every real query row, by hand."""
    q, k, _ = layer.project(x)
    phi_q, phi_k = layer.feature_q(q), layer.feature_k(k)
    total, count = 0.0, 0
    for b in range(x.shape[0]):
        real = mask[b].nonzero().squeeze(1)
        for h in range(layer.heads):
            for i in real:
                t = torch.softmax(q[b, h, i] @ k[b, h, real].T / math.sqrt(layer.head_dim), -1)
                a = phi_q[b, h, i] @ phi_k[b, h, real].T
                a = a / (a.sum() + layer.options.eps)
                total = total - (t * a.log()).sum()
                count += 1
    return total / count


def test_distillation_loss_is_the_cross_entropy_in_training_only():
    layer = build("hedgehog", distill=True, distill_queries=0, distill_weight=0.5)
    x, mask = padded_inputs(2, 11, 32, (11, 4))
    layer.eval()
    layer(x, mask)
    assert layer.aux_loss is None
    layer.train()
    layer(x, mask)
    torch.testing.assert_close(layer.aux_loss, 0.5 * explicit_ce(layer, x, mask))
    layer.aux_loss.backward()
    assert layer.feature_q.weight.grad.abs().sum() > 0 and layer.feature_k.weight.grad.abs().sum() > 0
    off = build("hedgehog").train()
    off(x, mask)
    assert off.aux_loss is None


def test_sampled_rows_estimate_the_full_loss():
    torch.manual_seed(0)
    B, H, N, d = 2, 2, 30, 8
    q, k = torch.randn(B, H, N, d, dtype=torch.float64), torch.randn(B, H, N, d, dtype=torch.float64)
    mask = torch.arange(N)[None] < torch.tensor([30, 12])[:, None]
    phi_q, phi_k = q.softmax(-1), k.softmax(-1)
    full = mimicry_loss(phi_q, phi_k, q, k, mask, 1e-6, 0)
    sampled = torch.stack([mimicry_loss(phi_q, phi_k, q, k, mask, 1e-6, 64) for _ in range(20)]).mean()
    torch.testing.assert_close(sampled, full, rtol=0.03, atol=0)
    assert not torch.equal(mimicry_loss(phi_q, phi_k, q, k, mask, 1e-6, 4), full)


def test_mimicry_training_reduces_the_loss():
    """Training the feature maps on the loss alone brings Hedgehog's weights towards softmax."""
    layer = build("hedgehog", distill=True, distill_queries=0, dtype=torch.float32).train()
    opt = torch.optim.Adam([*layer.feature_q.parameters(), *layer.feature_k.parameters()], lr=3e-2)
    x, mask = padded_inputs(4, 24, 32, (24, 20, 16, 9), dtype=torch.float32, scale=3.0)
    losses = []
    for _ in range(30):
        layer(x, mask)
        losses.append(layer.aux_loss.item())
        opt.zero_grad()
        layer.aux_loss.backward()
        opt.step()
    assert losses[-1] < 0.9 * losses[0]


def test_model_collects_the_aux_loss_for_the_training_loop():
    cfg = ModelConfig(dim=32, heads=2, layers=2, ffn_dim=64, head_hidden=48, dropout=0.0)
    model = Classifier(cfg, attention="hedgehog", attention_options={"distill": True}, vocab_size=20, max_len=32,
                       num_classes=3).train()
    ids = torch.randint(1, 20, (2, 1, 32))
    model(ids, torch.ones_like(ids, dtype=torch.bool))
    aux = model.aux_loss()
    assert aux is not None and aux.requires_grad and aux > 0


@pytest.mark.parametrize("bad,match", [({"feature_dim": 0}, "feature_dim"), ({"eps": 0}, "eps"),
                                       ({"distill_weight": -1}, "distill_weight"), ({"distill_queries": -2}, "distill_queries")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("hedgehog", **bad)
