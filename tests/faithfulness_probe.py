"""Probe of the faithfulness choices of docs/faithfulness.md: how far each attention core is from
exact softmax attention under each setting, on random inputs. Not a test (pytest does not collect
it); run it and quote its tables:

    PYTHONPATH=$PWD python tests/faithfulness_probe.py [--seeds 5] [--n 1024]

Inputs: q, k, v with i.i.d. N(0, sigma^2) entries, B = 2 sequences (N real tokens and 0.7 N real
tokens, the rest padding), H = 2 heads, head dim d = 32, float64, one draw per seed. The error of
a core is |out - softmax|_F / |softmax|_F over the real rows, softmax = the exact
softmax(q k^T / sqrt(d)) V over real keys; mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from attentions.base import sample_real
from attentions.informer import informer_attention, sparsity
from attentions.kernelized import kernelized_reference
from attentions.nystrom import nystrom_attention
from attentions.performer import favor_attention, favor_features, orthogonal_gaussian
from attentions.skyformer import skyformer_attention
from attentions.softmax import softmax_reference

H, D = 2, 32


def inputs(seed: int, n: int, sigma: float):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, H, n, D, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(n)[None] < torch.tensor([n, int(0.7 * n)])[:, None]
    return q * sigma, k * sigma, v, mask


def rel(out, ref, mask):
    sel = mask[:, None].expand(-1, H, -1)
    return ((out - ref)[sel].norm() / ref[sel].norm()).item()


def summary(xs) -> str:
    return f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def performer_core(q, k, v, mask, w, stabiliser, eps=1e-4):
    s = D ** -0.25
    w_s = w.T * s
    return favor_attention(favor_features(q, w_s, s, mask, True, stabiliser, eps),
                           favor_features(k, w_s, s, mask, False, stabiliser, eps), v, mask)


def probe_performer(seeds, n):
    print("performer: error against exact softmax (and the two stabilisers' relative difference)")
    print(f"{'sigma':>5} {'m':>5} | {'wx (default)':>15} {'wx-batch':>15} {'logit':>15} | {'|wx-logit|/|wx|':>15}")
    for sigma in (0.5, 1.0, 2.0):
        for m in (128, 8192):
            errs = {st: [] for st in ("wx", "wx-batch", "logit")}
            diff = []
            for seed in range(seeds):
                q, k, v, mask = inputs(seed, n, sigma)
                torch.manual_seed(1000 + seed)
                w = orthogonal_gaussian(m, D).double()
                ref = softmax_reference(q, k, v, mask)
                outs = {st: performer_core(q, k, v, mask, w, st) for st in errs}
                for st in errs:
                    errs[st].append(rel(outs[st], ref, mask))
                diff.append(rel(outs["logit"], outs["wx"], mask))
            print(f"{sigma:>5} {m:>5} | " + " ".join(f"{summary(errs[st]):>15}" for st in errs)
                  + f" | {summary(diff):>15}")


def probe_informer(seeds, n, features=128):
    print("\ninformer: error against exact softmax, and overlap of the chosen queries (same samples)")
    factor = math.ceil(features / math.log(n))
    U = factor * math.ceil(math.log(n))
    print(f"(max_len = N = {n}: factor {factor}, U = u = {U})")
    print(f"{'sigma':>5} | {'informer (default)':>18} {'mean':>15} | {'overlap':>15}")
    for sigma in (0.5, 1.0, 2.0):
        errs = {"informer": [], "mean": []}
        overlap = []
        for seed in range(seeds):
            q, k, v, mask = inputs(seed, n, sigma)
            torch.manual_seed(2000 + seed)
            pos = sample_real(mask, (n, U))
            ref = softmax_reference(q, k, v, mask)
            tops = {}
            for measure in errs:
                out = informer_attention(q, k, v, mask, factor, n, measure, pos=pos)
                errs[measure].append(rel(out, ref, mask))
                score = sparsity(q, k, pos, D ** -0.5, n if measure == "informer" else None)
                score = score.masked_fill(~mask[:, None, :], float("-inf"))
                tops[measure] = score.topk(U, dim=-1).indices
            same = [len(set(a.tolist()) & set(b.tolist())) / U
                    for a, b in zip(tops["informer"].flatten(0, 1), tops["mean"].flatten(0, 1))]
            overlap.append(statistics.mean(same))
        print(f"{sigma:>5} | {summary(errs['informer']):>18} {summary(errs['mean']):>15} | {summary(overlap):>15}")


def probe_pinv_init(seeds, n):
    print("\nnystrom (error against softmax) and skyformer (against the exact Gaussian kernel, `kernelized`),")
    print("128 landmarks, 6 iterations, by the start of the pseudo-inverse")
    heads = f"{'nystrom matrix':>15} {'nystrom batch':>15} | {'skyformer matrix':>16} {'skyformer batch':>16}"
    print(f"{'sigma':>5} | {heads}")
    for sigma in (0.5, 1.0, 2.0):
        errs = {key: [] for key in ("nm", "nb", "sm", "sb")}
        for seed in range(seeds):
            q, k, v, mask = inputs(seed, n, sigma)
            soft, kern = softmax_reference(q, k, v, mask), kernelized_reference(q, k, v, mask)
            for init in ("matrix", "batch"):
                errs["n" + init[0]].append(rel(nystrom_attention(q, k, v, mask, 128, 6, init), soft, mask))
                torch.manual_seed(3000 + seed)
                errs["s" + init[0]].append(rel(skyformer_attention(q, k, v, mask, 128, 0.1, 6, init), kern, mask))
        print(f"{sigma:>5} | {summary(errs['nm']):>15} {summary(errs['nb']):>15} | "
              f"{summary(errs['sm']):>16} {summary(errs['sb']):>16}")


def probe_linformer():
    print("\nlinformer: parameters of one attention layer of the paper model (dim 64, 2 heads, k = 128)")
    base = 64 * 192 + 192 + 64 * 64 + 64
    for n in (1024, 2048, 4096):
        e = H * 128 * n
        print(f"N = {n}: train_e=false {base} trained parameters (+ {e} fixed, saved); train_e=true {base + e}"
              f" ({(base + e) / base:.1f}x)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n", type=int, default=1024)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"B = 2 (N = {a.n} and {int(0.7 * a.n)} real tokens), H = {H}, d = {D}, float64, {a.seeds} seeds\n")
    probe_performer(a.seeds, a.n)
    probe_informer(a.seeds, a.n)
    probe_pinv_init(a.seeds, a.n)
    probe_linformer()


if __name__ == "__main__":
    main()
