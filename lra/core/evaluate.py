"""Accuracy of a model on a split, the same for dev evaluations, the final test and analyses."""

from __future__ import annotations

import torch
from tqdm import tqdm

from lra.core import distributed
from lra.core.config import RunConfig
from lra.core.data import BatchView, eval_batches, loader, to_device
from lra.core.measure import Stopwatch
from lra.core.step import Runtime, forward


@torch.no_grad()
def evaluate(model, view: BatchView, cfg: RunConfig, rt: Runtime, timer: Stopwatch | None = None,
             limit: int | None = None, progress: str | None = None) -> float:
    """Accuracy (%) on the first `limit` examples of `view` (all if None). With a timer, the time of
    every batch but the first (warm-up) is measured. With `progress` (a label), a bar on a
    terminal, for evaluations long enough to leave a user wondering (a whole test split)."""
    model.eval()
    n = len(view) if limit is None else min(limit, len(view))
    per_rank = max(1, cfg.train.batch_size // rt.dist.world)
    chunks = eval_batches(n, per_rank, rt.dist.rank, rt.dist.world)
    bar = tqdm(total=n, desc=progress, unit=" samples", disable=None if progress and rt.dist.is_main else True,
               leave=False, mininterval=1.0)
    correct, total = 0, 0
    for i, batch in enumerate(loader(view, chunks, cfg, rt.device)):
        if timer is not None and i == 1:
            timer.start()
        batch = to_device(batch, rt.device)
        logits = forward(model, batch, rt.precision)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
        bar.update(len(batch["labels"]) * rt.dist.world)
        if timer is not None:
            timer.count(len(batch["labels"]) * rt.dist.world)  # global samples/s (ranks run in step)
    bar.close()
    if timer is not None:
        timer.stop()
    correct, total = distributed.all_reduce_sum([correct, total], rt.device)
    model.train()
    return 100.0 * correct / max(total, 1)
