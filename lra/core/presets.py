"""Presets: a RunConfig for (task, preset), filled from the task's own recipe.

- paper: the PolaFormer/Skyformer setup (docs/lra-reference.md, training setups): the task's Recipe as is,
  50k steps, best-dev checkpoint tested at the end.
- quick: the paper model, batch, lengths and learning rate for a tenth of the steps (warm-up and
  evaluation scaled to fit): a reduced but meaningful run, minutes on a GPU.
- smoke: about a minute on a laptop CPU. Synthetic tasks train on a small set generated on the fly
  under <data-dir>/smoke (never mixed with real data); other tasks on a small real-data subset.
"""

from __future__ import annotations

import tasks
from lra.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lra_base.errors import ConfigError, did_you_mean

PRESETS = ("smoke", "quick", "paper")


def make_config(task: str, preset: str = "smoke", **top) -> RunConfig:
    """The preset's RunConfig for `task`; keyword arguments set top-level fields (attention, seed...)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}. Valid presets: {', '.join(PRESETS)}")
    t = tasks.get(task)
    r = t.recipe
    if preset == "paper":
        train = TrainConfig(steps=r.steps, batch_size=r.batch_size, lr=r.lr, warmup=r.warmup,
                            eval_every=r.eval_every, eval_samples=r.eval_samples)
        data = DataConfig(seq_len=r.seq_len)
    elif preset == "quick":
        steps = r.steps // 10
        train = TrainConfig(steps=steps, batch_size=r.batch_size, lr=r.lr, warmup=min(r.warmup, steps // 10),
                            eval_every=max(r.eval_every, steps // 10), eval_samples=r.eval_samples)
        data = DataConfig(seq_len=r.seq_len)
    else:
        s = t.smoke
        train = TrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup=max(2, s.steps // 10),
                            eval_every=s.eval_every, eval_samples=None, timing_warmup=min(3, s.steps - 1))
        synthetic = s.generator is not None
        data = DataConfig(seq_len=s.seq_len, subdir="smoke" if synthetic else "", generate=synthetic,
                          generator=dict(s.generator or {}), max_train=s.max_train, max_val=s.max_val,
                          max_test=s.max_test, options=dict(s.options or {}))
    cfg = RunConfig(task=task, preset=preset, model=ModelConfig(), train=train, data=data)
    for key, value in top.items():
        setattr(cfg, key, value)
    return cfg
