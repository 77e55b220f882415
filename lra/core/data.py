"""The data pipeline: from a task's prepared splits to batches on the device.

    task.prepared(root, split)              tokens, lengths, labels (tasks/base.py: the cache)
    -> BatchView(split, seq_len, subset)    whole batches by index array, vectorised numpy
    -> TrainBatches / eval_batches          which indices form each batch
    -> loader(...)                          a DataLoader over those index arrays
    -> to_device(batch)

A batch is ids (B, I, N) int64, mask (B, I, N) bool (True = real token), labels (B,) int64, with
I the task's number of inputs. Stored tokens become model ids here (token + the task's offset at
real positions, 0 elsewhere), and the mask comes from the stored lengths, never from `id != 0`:
a black pixel (0) is a real token (the ports' `token != 0` mask treated most of a Pathfinder
image as padding).

The training order is a pure function of (seed, step), so resuming at step s needs nothing
but s; under data parallelism each rank takes its slice of every global batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lra.core.config import RunConfig
from lra_base.errors import ConfigError, DataError, MissingDataError, StorageError

SPLITS = ("train", "val", "test")


def make_batch(tokens: np.ndarray, lengths: np.ndarray, labels: np.ndarray, seq_len: int, offset: int) -> dict:
    """Stored tokens (b, I, L) -> model ids (b, I, seq_len) with the real-token mask from lengths."""
    b, n_in, L = tokens.shape
    w = min(L, seq_len)
    mask = np.arange(seq_len)[None, None, :] < np.minimum(lengths, seq_len)[:, :, None]
    ids = np.zeros((b, n_in, seq_len), dtype=np.int64)
    ids[:, :, :w] = tokens[:, :, :w]
    if offset:
        ids += offset
    ids *= mask
    return {"ids": torch.from_numpy(ids), "mask": torch.from_numpy(mask), "labels": torch.from_numpy(labels.astype(np.int64))}


class BatchView(torch.utils.data.Dataset):
    """Indexes a PreparedSplit one whole batch at a time: `view[index_array]` -> batch dict.

    Used with a DataLoader whose sampler yields index arrays (batch_size=None), so each worker
    builds whole batches with vectorised numpy instead of collating samples one by one.
    """

    def __init__(self, split, seq_len: int, indices: Optional[np.ndarray] = None):
        self.split, self.seq_len = split, seq_len
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx) -> dict:
        rows = self.indices[np.atleast_1d(idx)]
        order = np.argsort(rows, kind="stable")  # memmap reads in file order
        toks = np.empty((len(rows),) + self.split.tokens.shape[1:], dtype=self.split.tokens.dtype)
        toks[order] = self.split.tokens[rows[order]]
        return make_batch(toks, self.split.lengths[rows], self.split.labels[rows], self.seq_len, self.split.token_offset)


def subset_indices(n: int, limit: Optional[int], seed: int) -> np.ndarray:
    """All indices, or a seeded random subset of `limit` of them (sorted, for memmap locality)."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 7919])
    return np.sort(rng.choice(n, size=limit, replace=False))


def data_root(cfg: RunConfig) -> Path:
    return Path(cfg.data_dir) / cfg.data.subdir if cfg.data.subdir else Path(cfg.data_dir)


def load_splits(cfg: RunConfig, task, progress: bool = False) -> dict[str, BatchView]:
    """The three splits as BatchViews, generating a synthetic dataset first if the preset says so.
    A split that lost more than 1% of its items is refused, as `lra data verify` calls it broken."""
    root = data_root(cfg)
    try:
        prepared = {s: task.prepared(root, s, cfg.data.options, cfg.cache_dir) for s in SPLITS}
    except MissingDataError:
        if not (cfg.data.generate and task.can_generate):
            raise
        generate(cfg, task, root, progress)
        prepared = {s: task.prepared(root, s, cfg.data.options, cfg.cache_dir) for s in SPLITS}
    for split, p in prepared.items():
        if p.broken():
            raise DataError(f"{task.name}/{split} under {root}: {p.broken()}; `lra data verify {task.name} "
                            f"--data-dir {cfg.data_dir}` shows the splits; regenerate or download the data again")
    limits = {"train": cfg.data.max_train, "val": cfg.data.max_val, "test": cfg.data.max_test}
    return {s: BatchView(p, cfg.data.seq_len, subset_indices(len(p), limits[s], cfg.seed)) for s, p in prepared.items()}


def generate(cfg: RunConfig, task, root: Path, progress: bool) -> None:
    generator = {**cfg.data.generator, **task.generator_options(task.resolve_options(cfg.data.options))}
    print(f"[lra] generating a {task.name} dataset under {root} ({generator})", flush=True)
    try:
        task.generate(root, progress=progress, **generator)
    except OSError as exc:
        raise StorageError(f"cannot write the generated {task.name} data under {root}: {exc.strerror or exc}; "
                           "pass --data-dir DIR, a folder you can write") from None


def cut_examples(view: BatchView) -> tuple[int, int]:
    """(examples of the view with an input longer than its seq_len, the longest input): content
    past seq_len is cut, so a short --seq-len changes the task, and the record says by how much."""
    lengths = view.split.lengths[view.indices]
    if not len(lengths):
        return 0, 0
    return int((lengths > view.seq_len).any(axis=1).sum()), int(lengths.max())


def provenance(splits: dict[str, BatchView]) -> dict:
    """What each split was, for the record: examples used and in the source, cache, options, skips,
    and how many examples the sequence length cut."""
    out = {}
    for s, v in splits.items():
        cut, longest = cut_examples(v)
        out[s] = {"examples": len(v), "source_examples": len(v.split), "cache": v.split.meta["path"],
                  "options": v.split.meta.get("options", {}), "skipped": v.split.meta.get("skipped", {}),
                  "lost": v.split.lost, "seq_len": v.seq_len, "cut_by_seq_len": cut, "longest": longest}
    return out


def notes(splits: dict[str, BatchView], task_name: str) -> list[str]:
    """One line per split that lost items or whose examples the sequence length cuts: what a user
    must know before trusting the run (the record keeps the same counts, `data` in provenance)."""
    out = []
    for s, v in splits.items():
        if v.split.lost:
            out.append(f"{task_name}/{s}: {v.split.lost} unreadable or missing item(s) skipped "
                       f"({', '.join(f'{k}: {n}' for k, n in sorted(v.split.meta['skipped'].items()))}), as "
                       f"`lra data verify` reports")
        cut, longest = cut_examples(v)
        if cut:
            out.append(f"{task_name}/{s}: sequence length {v.seq_len} cuts {cut} of {len(v)} examples "
                       f"(the longest has {longest} tokens)")
    return out


class TrainBatches:
    """Index arrays of training batches: epoch e is a permutation seeded by (seed, e), cut into
    full batches. The batch of a step is a pure function of (seed, step), so resuming at step s
    needs nothing but s. Under data parallelism each rank takes its slice of the global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        if n < batch_size:
            raise ConfigError(f"the training split has {n} examples, fewer than the batch size {batch_size}; "
                              "lower --batch-size or use more data")
        self.n, self.batch, self.seed, self.start, self.rank, self.world = n, batch_size, seed, start_step, rank, world
        self.per_epoch = n // batch_size

    def indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        batch = perm[k * self.batch : (k + 1) * self.batch]
        share = self.batch // self.world
        return batch[self.rank * share : (self.rank + 1) * share]

    def __iter__(self):
        step = self.start
        while True:
            yield self.indices(step)
            step += 1


def eval_batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """Consecutive index chunks of 0..n-1, dealt round-robin to the ranks."""
    chunks = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    return chunks[rank::world]


def loader(view: BatchView, sampler, cfg: RunConfig, device: torch.device):
    # A private generator: creating a DataLoader iterator must not draw from the global RNG, or a
    # resumed run would see different dropout masks from an uninterrupted one.
    workers = cfg.data.num_workers
    return torch.utils.data.DataLoader(
        view, sampler=sampler, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def random_batch(task, batch_size: int, seq_len: int, device: torch.device, seed: int) -> dict:
    """Random ids of the task's shape, every position a real token (the cost of every dense
    implementation is the same whatever the padding), and random labels: what benchmarks time."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, task.vocab_size, (batch_size, task.num_inputs, seq_len), generator=g)
    labels = torch.randint(0, task.num_classes, (batch_size,), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    return {"ids": ids.to(device), "mask": mask.to(device), "labels": labels.to(device)}
