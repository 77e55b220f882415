"""The shared encoder and classifier."""

import pytest
import torch

import attentions
from lra.core.config import ModelConfig
from lra.core.model import Classifier, masked_mean

CFG = ModelConfig(dim=32, heads=2, layers=2, ffn_dim=64, head_hidden=48, dropout=0.1)


def batch(B=4, I=1, N=40, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, I, N), generator=g)
    lengths = torch.randint(3, N + 1, (B, I), generator=g)
    lengths[0, 0] = N
    mask = torch.arange(N) < lengths[..., None]
    return ids * mask, mask


def model(num_inputs=1, attention="softmax", **kw):
    torch.manual_seed(0)
    return Classifier(CFG, attention=attention, vocab_size=20, max_len=64, num_classes=5, num_inputs=num_inputs, **kw)


@pytest.mark.parametrize("num_inputs", [1, 2])
def test_shapes(num_inputs):
    m = model(num_inputs)
    ids, mask = batch(I=num_inputs)
    assert m(ids, mask).shape == (4, 5)
    assert m.pooled(ids, mask).shape == (4, num_inputs, CFG.dim)


def test_wrong_input_count_is_an_error():
    with pytest.raises(ValueError, match=r"\(B, 2, N\)"):
        model(2)(*batch(I=1))


def test_dual_head_sees_u_v_product_and_difference():
    m = model(2).eval()
    ids, mask = batch(I=2)
    with torch.no_grad():
        p = m.pooled(ids, mask)
        u, v = p[:, 0], p[:, 1]
        expected = m.head(torch.cat([u, v, u * v, u - v], dim=-1))
        torch.testing.assert_close(m(ids, mask), expected)
        swapped = m(ids.flip(1), mask.flip(1))
    assert not torch.allclose(swapped, expected)  # order matters through u - v


@pytest.mark.parametrize("name", attentions.available())
def test_padded_token_ids_do_not_change_the_output(name):
    m = model(2, attention=name).eval()
    ids, mask = batch(I=2)
    other = torch.where(mask, ids, torch.randint_like(ids, 1, 20))
    with torch.no_grad():
        torch.manual_seed(0)
        a = m.pooled(ids, mask)
        torch.manual_seed(0)
        b = m.pooled(other, mask)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_masked_mean_is_the_mean_of_real_tokens():
    h = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6], dtype=torch.bool)
    out = masked_mean(h, mask)
    torch.testing.assert_close(out[0], h[0, :3].mean(0))
    torch.testing.assert_close(out[1], h[1].mean(0))


def test_gradient_checkpointing_changes_nothing_but_memory():
    ids, mask = batch()
    outs = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = Classifier(ModelConfig(**{**CFG.__dict__, "grad_checkpoint": ckpt, "dropout": 0.0}), attention="softmax",
                       vocab_size=20, max_len=64, num_classes=5)
        loss = m(ids, mask).logsumexp(-1).sum()
        loss.backward()
        outs.append((loss.detach(), m.encoder.tokens.weight.grad.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_sequence_longer_than_max_len_is_refused():
    ids = torch.ones(1, 1, 65, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than the model's max_len"):
        model()(ids, ids.bool())


def test_the_task_grid_reaches_every_attention_only_when_the_tokens_form_the_image():
    """The layout goes to every layer through the registry; a --seq-len that cuts the image drops it."""
    seen = []

    class Probe(attentions.AttentionBase):
        def __init__(self, dim, heads, max_len, options=None, grid=None):
            super().__init__(dim, heads, max_len, options, grid)
            seen.append(grid)

        def core(self, q, k, v, mask):
            return v

        def info(self):
            return {"grid": self.grid}

    attentions.register("probe-grid")(Probe)
    try:
        m = Classifier(CFG, attention="probe-grid", vocab_size=20, max_len=64, num_classes=5, grid=(8, 8))
        assert seen == [(8, 8)] * CFG.layers and m.attention_info() == {"grid": (8, 8)}
        seen.clear()
        m = Classifier(CFG, attention="probe-grid", vocab_size=20, max_len=60, num_classes=5, grid=(8, 8))
        assert seen == [None] * CFG.layers and m.attention_info() == {"grid": None}
    finally:
        attentions.unregister("probe-grid")


@pytest.mark.parametrize("name", __import__("tasks").available())
def test_a_task_grid_covers_exactly_its_tokens(name):
    """Image tasks say their grid, sequence tasks none; a grid is exactly the task's tokens."""
    import tasks

    t = tasks.get(name)
    if t.grid is not None:
        assert t.grid[0] * t.grid[1] == t.max_len == t.recipe.seq_len
    assert (t.grid is not None) == (name in ("image", "pathfinder", "pathx"))
