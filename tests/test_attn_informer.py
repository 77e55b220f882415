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


def test_bad_options():
    with pytest.raises(ValueError, match="features"):
        attentions.resolve("informer", features=0)


def test_sparsity_measure_is_max_minus_mean_over_each_querys_samples():
    from attentions.informer import sparsity

    q, k, _, mask = qkv(N=30, lengths=(30, 12))
    torch.manual_seed(1)
    pos = torch.stack([torch.randint(0, n, (30, 7)) for n in (30, 12)])  # (B, N, U) sampled keys
    got = sparsity(q, k, pos, 0.25)
    for b in range(2):
        for h in range(2):
            for i in range(30):
                s = k[b, h, pos[b, i]] @ q[b, h, i] * 0.25
                torch.testing.assert_close(got[b, h, i], s.max() - s.mean())
