"""Attention-map statistics of a model: the maps of every layer and head on some inputs, their
row entropy and effective rank (the PolaFormer paper's evidence: its Figures 1 and 5, Theorem 1).

Each attention layer gives its maps through `AttentionBase.attention_maps` ({name: A}, out = A v
for each group of v's channels; PolaFormer has a same-sign and an opposite-sign map). Every
statistic is taken per sequence on its real tokens only: the n x n block B of A whose rows are
real queries and columns real keys.

- Row entropy (nats): mean over the n rows of H_i = -sum_j p_ij ln p_ij with p_ij = |B_ij| /
  sum_j |B_ij| (0 ln 0 = 0). For a non-negative row-stochastic map p is the map itself; the
  absolute value and the renormalisation put an unnormalised kernel (kernelized, skyformer) or a
  map with negative entries (a pseudo-inverse: nystrom, skyformer) on the same scale. It lies
  between 0 (every row one spike) and ln n (every row uniform; `uniform_entropy` is the mean of
  ln n over the sequences analysed).
- Effective rank: exp of the entropy of the normalised singular values of B (Roy & Vetterli,
  "The effective rank: a measure of effective dimensionality", EUSIPCO 2007): with s the
  singular values, q = s / sum s, erank = exp(-sum_k q_k ln q_k). Between 1 and n; it is taken on
  B as the layer applies it (not renormalised).

Each value is the mean over the sequences analysed, per map, layer and head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lra.core.model import Classifier


def real_block(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """a (N, N), mask (N,) bool -> the (n, n) block of real queries and real keys, float64."""
    idx = mask.nonzero().flatten()
    return a.index_select(0, idx).index_select(1, idx).double()


def row_entropy(block: torch.Tensor) -> float:
    """Mean entropy (nats) of the rows of |block| renormalised to sum 1 (rows that are all zero skipped)."""
    p = block.abs()
    sums = p.sum(-1, keepdim=True)
    keep = sums[:, 0] > 0
    p = p[keep] / sums[keep]
    h = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)
    return float(h.mean()) if len(h) else float("nan")


def effective_rank(block: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values."""
    s = torch.linalg.svdvals(block)
    total = s.sum()
    if not total > 0:
        return 0.0
    q = s[s > 0] / total
    return float(torch.exp(-(q * torch.log(q)).sum()))


def attention_layers(model: Classifier) -> list:
    return [block.attn for block in model.encoder.blocks]


def layer_inputs(model: Classifier, ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What each attention layer receives, (x, mask), in one evaluation forward of the model."""
    seen: list = []
    hooks = [layer.register_forward_pre_hook(lambda module, args: seen.append(args[:2]))
             for layer in attention_layers(model)]
    try:
        with torch.no_grad():
            model(ids, mask)
    finally:
        for h in hooks:
            h.remove()
    return seen


@dataclass
class MapStats:
    """Per map name: entropy and effective rank as [layer][head] means over the sequences."""

    entropy: dict = field(default_factory=dict)
    effective_rank: dict = field(default_factory=dict)
    lengths: list = field(default_factory=list)  # real tokens of each sequence analysed
    first: list = field(default_factory=list)  # per layer, {name: (H, n, n)} of the first sequence

    @property
    def uniform_entropy(self) -> float:
        return sum(math.log(n) for n in self.lengths) / len(self.lengths) if self.lengths else float("nan")

    def means(self) -> dict:
        """{"entropy": mean over maps, layers, heads, "effective_rank": ..., "maps": {name: {...}}}."""
        maps = {name: {"entropy": self.entropy[name], "effective_rank": self.effective_rank[name],
                       "entropy_mean": _mean(self.entropy[name]),
                       "effective_rank_mean": _mean(self.effective_rank[name])} for name in self.entropy}
        return {"entropy": _mean([m["entropy_mean"] for m in maps.values()]),
                "effective_rank": _mean([m["effective_rank_mean"] for m in maps.values()]), "maps": maps}


def _mean(values) -> float:
    flat = [v for row in values for v in (row if isinstance(row, list) else [row])]
    return sum(flat) / len(flat) if flat else float("nan")


def sequence_maps(model: Classifier, ids: torch.Tensor, mask: torch.Tensor, seed: int) -> tuple[list, torch.Tensor]:
    """The maps of every layer for one example ids, mask (1, I, N): [layer]{name: (I, H, N, N)}
    and the (I, N) mask. Seeded, so a method that draws at random draws the same every time."""
    torch.manual_seed(seed)
    inputs = layer_inputs(model, ids, mask)
    out = []
    for layer, (x, m) in zip(attention_layers(model), inputs):
        torch.manual_seed(seed)
        out.append({name: a.detach().cpu() for name, a in layer.attention_maps(x, m).items()})
    return out, mask.reshape(-1, mask.shape[-1]).cpu()


def analyse(model: Classifier, batch: dict, seed: int) -> MapStats:
    """Entropy and effective rank of every map, layer and head over the examples of `batch`
    (ids, mask (B, I, N)), one example at a time (the maps are N x N each)."""
    model.eval()
    sums: dict = {}
    stats = MapStats()
    for b in range(batch["ids"].shape[0]):
        maps, masks = sequence_maps(model, batch["ids"][b:b + 1], batch["mask"][b:b + 1], seed)
        if b == 0:
            stats.first = [{name: a[0][:, masks[0]][:, :, masks[0]] for name, a in layer.items()} for layer in maps]
        for s, m in enumerate(masks):
            stats.lengths.append(int(m.sum()))
            for li, layer in enumerate(maps):
                for name, a in layer.items():
                    for h in range(a.shape[1]):
                        block = real_block(a[s, h], m)
                        acc = sums.setdefault(name, {}).setdefault((li, h), [0.0, 0.0, 0])
                        acc[0] += row_entropy(block)
                        acc[1] += effective_rank(block)
                        acc[2] += 1
    for name, cells in sums.items():
        layers = 1 + max(li for li, _ in cells)
        heads = 1 + max(h for _, h in cells)
        stats.entropy[name] = [[cells[(li, h)][0] / cells[(li, h)][2] for h in range(heads)] for li in range(layers)]
        stats.effective_rank[name] = [[cells[(li, h)][1] / cells[(li, h)][2] for h in range(heads)] for li in range(layers)]
    return stats
