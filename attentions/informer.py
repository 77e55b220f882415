"""Informer ProbSparse attention: full softmax for the u most "active" queries, mean(V) for the rest.

    c = ceil(features / ln L),  U = u = c ceil(ln L)            (L = max_len; u capped at N)
    M(q_i) = max_s q_i . k_s / sqrt(d) - (1 / L) sum_s q_i . k_s / sqrt(d)   over U keys sampled per query
    out_i = softmax(q_i K^T / sqrt(d) + M_pad) V    for the u queries of largest M
    out_i = mean_j v_j                               for the others          (real tokens only)

Paper: Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence Time-Series
Forecasting", AAAI 2021 (a Table 4 / Table 6 comparator of the PolaFormer paper). This follows
the Skyformer port (`in_nb_features` 128 -> factor c), with padding handled for real: sampled
keys are real tokens, only real queries compete for the top u, the lazy queries get the mean of
the real values, and the full rows mask padded keys. The port ignored the mask altogether.

To keep padding out of every random choice, c, U and u come from max_len (the padded length the
model was built for, which is what the port used) and the sampled key positions come from one
uniform draw of shape (max(N, max_len), U) scaled by each sequence's real length. The selection
(M and top-u) is not differentiable and runs without autograd, in chunks of queries, so its
memory stays O(chunk U d).

The sparsity measure. Informer's code (zhouhaoyi/Informer2020 `models/attn.py`, `_prob_QK`) and
the port take the max minus the SUM of the U sampled scores divided by the full key length L_K
(the paper's formula with its 1 / L_K kept while the sum runs over U samples), not the mean of the
samples; the port's L_K is the padded length, max_len. That is the default (`sparsity=informer`);
`sparsity=mean` is max minus the mean of the samples, this project's earlier rule. They pick
different queries (docs/faithfulness.md measures the overlap and the effect).

Options:
    features (int, 128): sets the factor c = ceil(features / ln max_len) (the port's in_nb_features).
    sparsity ("informer" | "mean", "informer"): the measure M ranking the queries: `informer` =
        max - (sum of the U sampled scores) / max_len, as Informer and the port compute it;
        `mean` = max - mean of the U sampled scores.

Cost: O(N u d + N U d) time with u, U ~ c ln L (O(N log N)), O(N u) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from attentions.base import AttentionBase, key_mask, sample_real
from attentions.registry import register

# Sampled keys gathered at a time by the sparsity measurement: a sixteenth of all of them, between
# 2^19 and 2^24 elements. Few large steps, not many small ones: every step is a parallel region, and
# on a busy CPU each one can wait a scheduler slice for its threads (2 threads under load: 20 s for
# a ListOps batch with 2^19-element steps, 6.5 s with 2^23).
_GATHER_MIN, _GATHER_MAX, _GATHER_PARTS = 1 << 19, 1 << 24, 16


@torch.no_grad()
def sparsity(q, k, pos, scale: float, length: int | None = None):
    """M(q_i) = max - (sum / length) of q_i . k_s * scale over the sampled keys pos (B, N, U):
    (B, H, N). length None = U (max - mean).
    The U sampled keys of a chunk of queries are copied out as whole token rows (all heads at
    once, a sixteenth of them at a time, 2^19 to 2^24 elements) and scored against their query:
    O(N U d) time and O(chunk U d) memory, as the method intends (scoring a chunk against every
    key and picking the samples would be O(N^2 d) time)."""
    B, H, N, d = q.shape
    U = pos.shape[-1]
    out = torch.empty(B, H, N, dtype=q.dtype, device=q.device)
    rows = k.transpose(1, 2).reshape(B * N, H, d)  # one row per token, every head
    qt = q.transpose(1, 2)  # (B, N, H, d)
    offset = (torch.arange(B, device=q.device) * N)[:, None, None]
    row = B * H * U * d  # elements gathered per query position
    budget = min(_GATHER_MAX, max(_GATHER_MIN, row * N // _GATHER_PARTS))
    chunk = max(1, budget // row)
    for i in range(0, N, chunk):
        p = pos[:, i:i + chunk] + offset  # (B, c, U) rows of the flattened batch
        c = p.shape[1]
        ks = rows.index_select(0, p.reshape(-1)).view(B, c, U, H, d)
        s = torch.einsum("bcuhd,bchd->bhcu", ks, qt[:, i:i + chunk]) * scale  # (B, H, c, U)
        out[:, :, i:i + chunk] = s.amax(-1) - s.sum(-1) / (length or U)
    return out


def informer_attention(q, k, v, mask, factor: int, max_len: int, measure: str = "informer", pos=None):
    """The module docstring's attention. pos (B, N, U): the sampled key positions (drawn here when
    None; tests pass their own)."""
    B, H, N, d = q.shape
    scale = 1 / math.sqrt(d)
    U = factor * math.ceil(math.log(max_len)) if max_len > 1 else 1  # keys sampled per query
    u = min(U, N)  # queries given full attention
    n = mask.sum(-1)  # (B,)
    m = key_mask(mask, v.dtype)
    context = ((v * m).sum(2, keepdim=True) / n.clamp(min=1).to(v.dtype)[:, None, None, None]).expand(B, H, N, d)
    if pos is None:
        pos = sample_real(mask, (max(N, max_len), U), keep=N)  # (B, N, U)
    length = max_len if measure == "informer" else None
    with torch.no_grad():
        score = sparsity(q, k, pos, scale, length).masked_fill(~mask[:, None, :], float("-inf"))
        top = score.topk(u, dim=-1).indices  # (B, H, u); padded queries only where n < u
    q_top = q.gather(2, top[..., None].expand(B, H, u, d))
    logits = (q_top @ k.transpose(-2, -1) * scale).masked_fill(~mask[:, None, None, :], float("-inf"))
    full = torch.softmax(logits, dim=-1) @ v  # (B, H, u, d)
    return context.scatter(2, top[..., None].expand(B, H, u, d), full)


@register("informer", complexity="O(N log N d) time, O(N log N) memory")
class InformerAttention(AttentionBase):
    """Informer ProbSparse attention (Zhou et al., 2021): top-u queries exact, the rest mean(V)."""

    linear_memory = True  # never N x N: the top-u rows are u x N with u ~ c ln max_len

    @dataclass
    class Options:
        features: int = 128
        sparsity: Literal["informer", "mean"] = "informer"

        def __post_init__(self):
            if self.features < 1:
                raise ValueError(f"features must be >= 1, got {self.features}")

    def __init__(self, dim, heads, max_len, options, grid=None):
        super().__init__(dim, heads, max_len, options, grid)
        self.factor = math.ceil(options.features / math.log(max_len)) if max_len > 1 else 1

    def core(self, q, k, v, mask):
        return informer_attention(q, k, v, mask, self.factor, self.max_len, self.options.sparsity)
