"""Informer ProbSparse: u selected queries get exact softmax rows over real keys, the others the
mean of the real values; when u covers every token it is softmax."""

import math

import pytest
import torch

import attentions
from attentions.informer import informer_attention
from attentions.softmax import softmax_reference


def qkv(B=2, H=2, N=40, d=16, lengths=(40, 23), seed=0):
    torch.manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64) for _ in range(3))
    return q, k, v, torch.arange(N)[None] < torch.tensor(lengths)[:, None]


def test_factor_and_u_follow_the_port():
    layer = attentions.build("informer", dim=64, heads=2, max_len=2048)
    assert layer.factor == math.ceil(128 / math.log(2048))  # 17, so u = 17 * 8 = 136


def test_when_u_covers_every_token_it_is_softmax():
    q, k, v, mask = qkv()
    out = informer_attention(q, k, v, mask, factor=10, max_len=64)  # u = 10 * 5 = 50 >= 40
    sel = mask[:, None].expand(-1, 2, -1)
    torch.testing.assert_close(out[sel], softmax_reference(q, k, v, mask)[sel])


def test_lazy_queries_get_the_mean_of_real_values_and_active_ones_exact_rows():
    q, k, v, mask = qkv(N=60, lengths=(60, 31))
    torch.manual_seed(0)
    out = informer_attention(q, k, v, mask, factor=1, max_len=64)  # u = ceil(ln 64) = 5
    ref = softmax_reference(q, k, v, mask)
    for b, n in enumerate((60, 31)):
        mean = v[b, :, :n].mean(1)  # (H, d)
        for h in range(2):
            rows = out[b, h, :n]
            is_mean = torch.isclose(rows, mean[h].expand_as(rows)).all(-1)
            is_exact = torch.isclose(rows, ref[b, h, :n]).all(-1)
            assert int(is_exact.sum()) == 5 and int(is_mean.sum()) == n - 5
            assert torch.all(is_mean ^ is_exact)


@pytest.mark.parametrize("bad,match", [({"features": 0}, "features"), ({"sparsity": "max"}, "sparsity")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("informer", **bad)


@pytest.mark.parametrize("length", [None, 50])
def test_sparsity_measure_over_each_querys_samples(length):
    """max - mean of the samples (length None), or max - their sum / length (Informer's rule)."""
    from attentions.informer import sparsity

    q, k, _, mask = qkv(N=30, lengths=(30, 12))
    torch.manual_seed(1)
    pos = torch.stack([torch.randint(0, n, (30, 7)) for n in (30, 12)])  # (B, N, U) sampled keys
    got = sparsity(q, k, pos, 0.25, length)
    for b in range(2):
        for h in range(2):
            for i in range(30):
                s = k[b, h, pos[b, i]] @ q[b, h, i] * 0.25
                torch.testing.assert_close(got[b, h, i], s.max() - s.sum() / (length or 7))


# --- the reference rule, transcribed from the port's ProbAttention --------------------------------


def port_prob_attention(Q, K, V, factor, index_sample):
    """ProbAttention.forward of the Skyformer port (models/attention_informer.py, from Informer's
    models/attn.py), written out again for unmasked self-attention, with the sampled key indices
    (L_Q, U) passed in instead of drawn."""
    B, H, L, D = K.shape
    U_part = min(factor * math.ceil(math.log(L)), L)
    u = min(factor * math.ceil(math.log(L)), L)
    assert index_sample.shape == (L, U_part)
    K_sample = K[:, :, index_sample, :]  # (B, H, L_Q, U, D): the same samples for every sequence
    Q_K_sample = (Q.unsqueeze(-2) @ K_sample.transpose(-2, -1)).squeeze(-2)
    M = Q_K_sample.max(-1)[0] - Q_K_sample.sum(-1) / L
    M_top = M.topk(u, sorted=False)[1]
    Q_reduce = Q[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], M_top, :]
    scores = (Q_reduce @ K.transpose(-2, -1)) / math.sqrt(D)
    context = V.mean(dim=-2, keepdim=True).expand(B, H, L, D).clone()
    context[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], M_top, :] = torch.softmax(scores, -1) @ V
    return context


def test_default_is_the_port_rule():
    """With the port's sampled keys and no padding, the default computes exactly the port's output."""
    L, factor = 64, 2  # U = u = 2 * ceil(ln 64) = 10
    q, k, v, mask = qkv(N=L, lengths=(L, L), seed=3)
    assert attentions.resolve("informer").sparsity == "informer"
    torch.manual_seed(5)
    index = torch.randint(L, (L, 10))
    ours = informer_attention(q, k, v, mask, factor, max_len=L, pos=index.expand(2, L, 10))
    torch.testing.assert_close(ours, port_prob_attention(q, k, v, factor, index))


def test_the_two_measures_choose_different_queries():
    """Query 0: high max and high mean; query 1: lower max, much lower mean. max - mean prefers 1,
    Informer's max - sum / L (a mean shrunk by U / L) prefers 0; with L = U they agree."""
    from attentions.informer import sparsity

    scores = torch.tensor([[4.0, 3.0, 3.0, 3.0], [3.0, -3.0, -3.0, -3.0]], dtype=torch.float64)  # (query, sample)
    k = torch.eye(4, dtype=torch.float64)[None, None]  # key s = e_s, so q_i . k_s = scores[i, s]
    q = torch.cat([scores, torch.zeros(2, 4, dtype=torch.float64)])[None, None]  # 4 queries, 2 scored
    pos = torch.arange(4).expand(1, 4, 4)
    for length, best in ((None, 1), (100, 0), (4, 1)):
        assert sparsity(q, k, pos, 1.0, length)[0, 0, :2].argmax().item() == best, length
