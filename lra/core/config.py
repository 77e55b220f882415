"""Run configuration: every setting that shapes a run, in typed dataclasses.

A run is fully described by a RunConfig; it goes into the result record as `config`, so a table
cell can always be traced back to what produced it. Presets (lra/core/presets.py) fill a RunConfig
from a task's own recipe; the command line overrides any field with `--set section.key=value`.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import attentions
from lra_base.errors import ConfigError, did_you_mean
from lra_base.typed import coerce, type_name

# Where datasets and a user's results go unless a command says otherwise. A user's runs,
# checkpoints and reports go to `output/` (git-ignored), never beside the reference results the
# suite ships with (REFERENCE_DIR), which only `--results-dir results/reference` or
# `lra report --reference` writes. The prepared-data cache lives beside the data unless
# --cache-dir / LRA_CACHE_DIR puts it elsewhere (data on read-only shared storage).
DEFAULT_DATA_DIR = os.environ.get("LRA_DATA_DIR", "data")
DEFAULT_RESULTS_DIR = os.environ.get("LRA_RESULTS_DIR", "output")
DEFAULT_CACHE_DIR = os.environ.get("LRA_CACHE_DIR") or None
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"


@dataclass
class ModelConfig:
    """The shared encoder (docs/lra-reference.md, training setups): the same for every attention."""

    dim: int = 64
    heads: int = 2
    layers: int = 2
    ffn_dim: int = 128
    head_hidden: int = 128
    dropout: float = 0.1
    # Recompute each block in backward to save activation memory. Applies to every attention
    # alike (the ports enabled it for softmax only, which skewed their memory column).
    grad_checkpoint: bool = False


@dataclass
class TrainConfig:
    steps: int = 50_000
    batch_size: int = 32
    lr: float = 1e-4
    warmup: int = 1000
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    # torch's OneCycleLR with linear annealing, as in the Skyformer port. With cycle_momentum on
    # (torch's default, and what the port ran) Adam's beta1 cycles 0.95 -> 0.85 -> 0.95 against the
    # learning rate; turn it off to keep beta1 fixed.
    cycle_momentum: bool = True
    grad_clip: float = 1.0
    grad_clip_mode: Literal["value", "norm"] = "value"  # the port clips each gradient value at 1
    eval_every: int = 500
    # Dev samples per evaluation (a fixed seeded subset, the same at every evaluation); None = all.
    eval_samples: Optional[int] = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 / fp16 on CUDA, fp32 on CPU
    timing_warmup: int = 5  # training steps left out of the throughput figure
    # torch.compile the model's forward and backward (every attention alike; recorded with the run).
    # compile_mode is torch's: "reduce-overhead" replays the compiled step as CUDA graphs, which is
    # what a tiny model on a GPU needs (a step is hundreds of small kernel launches); "auto" takes
    # it on CUDA and "default" on CPU. `lra bench --set train.compile=true --set
    # train.compile_mode=...` measures each against eager on a device, so the mode is chosen by
    # measurement there.
    compile: bool = False
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "auto"
    # Ask torch for deterministic kernels (slower on CUDA; see docs/reliability.md). CPU runs are
    # deterministic without it.
    deterministic: bool = False


@dataclass
class DataConfig:
    # Tokens fed to the model per input. Content longer than this is cut; shorter is padded and
    # masked. The paper preset pads ListOps to 2048 and Text/Retrieval to 4096 like the ports.
    seq_len: int = 2048
    # Dataset root below --data-dir ("" = the data dir itself). The smoke preset uses "smoke" so
    # its small generated sets never mix with real data.
    subdir: str = ""
    # Generate the dataset when missing (synthetic tasks only), with these generator options.
    generate: bool = False
    generator: dict = field(default_factory=dict)
    # Use at most this many samples of each split (a seeded subset); None = all.
    max_train: Optional[int] = None
    max_val: Optional[int] = None
    max_test: Optional[int] = None
    options: dict = field(default_factory=dict)  # task options (e.g. Pathfinder difficulty)
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class RunConfig:
    task: str = "listops"
    attention: str = field(default_factory=attentions.default_name)
    attention_options: dict = field(default_factory=dict)
    preset: str = "smoke"
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    results_dir: str = "output"
    cache_dir: Optional[str] = None  # the prepared-data cache; None = <data_dir>/.cache
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A RunConfig from its dict. Fields this version does not know (a record written by another
        version) are dropped, fields it lacks keep their defaults."""
        sections = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}

        def known(target, values: dict) -> dict:
            names = {f.name for f in dataclasses.fields(target)}
            return {k: v for k, v in values.items() if k in names}

        top = known(cls, d)
        for key, sub in sections.items():
            if isinstance(top.get(key), dict):
                top[key] = sub(**known(sub, top[key]))
        return cls(**top)


SECTIONS = ("model", "train", "data")


def flatten(d: dict, prefix: str = "") -> dict:
    """A RunConfig dict with its sections spelled out: {"train.lr": ..., "seed": ...}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in SECTIONS:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_field(cfg: RunConfig, key: str, value) -> None:
    """Apply one override `section.name=value` (or a top-level `name=value`), type-checked."""
    parts = key.split(".")
    target = cfg
    for part in parts[:-1]:
        if part not in SECTIONS or target is not cfg:
            raise ConfigError(
                f"unknown setting {key!r}{did_you_mean(part, SECTIONS)}; sections are {', '.join(SECTIONS)}"
            )
        target = getattr(cfg, part)
    name = parts[-1]
    fields = {f.name: f for f in dataclasses.fields(target)}
    if name not in fields or (target is cfg and name in SECTIONS):
        valid = [n for n in fields if not (target is cfg and n in SECTIONS)]
        prefix = ".".join(parts[:-1])
        raise ConfigError(
            f"unknown setting {key!r}{did_you_mean(name, valid)}. Valid settings"
            f"{' in ' + prefix if prefix else ''}: {', '.join(valid)}"
        )
    hints = typing.get_type_hints(type(target))
    setattr(target, name, coerce(value, hints[name], f"setting {key!r}"))


def describe_settings() -> str:
    """One line per overridable setting, for `--help`."""
    lines = []
    for section, cls in (("model", ModelConfig), ("train", TrainConfig), ("data", DataConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"{section}.{f.name} ({type_name(hints[f.name])})")
    return ", ".join(lines)


def validate(cfg: RunConfig) -> None:
    """Check ranges and relations before any work starts. Raises ConfigError naming the setting."""
    m, t, d = cfg.model, cfg.train, cfg.data

    def need(ok: bool, msg: str):
        if not ok:
            raise ConfigError(msg)

    for name in ("dim", "heads", "layers", "ffn_dim", "head_hidden"):
        need(getattr(m, name) >= 1, f"model.{name} must be >= 1, got {getattr(m, name)}")
    need(m.dim % m.heads == 0, f"model.dim ({m.dim}) must be divisible by model.heads ({m.heads})")
    need(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
    need(t.steps >= 1, f"train.steps must be >= 1, got {t.steps}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    need(0 <= t.warmup <= t.steps, f"train.warmup must be in [0, train.steps={t.steps}], got {t.warmup}")
    need(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    need(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)")
    need(t.eps > 0, f"train.eps must be > 0, got {t.eps}")
    need(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {t.grad_clip}")
    need(t.eval_every >= 1, f"train.eval_every must be >= 1, got {t.eval_every}")
    need(t.eval_samples is None or t.eval_samples >= 1, "train.eval_samples must be >= 1 or None")
    need(t.timing_warmup >= 0, "train.timing_warmup must be >= 0")
    need(d.seq_len >= 1, f"data.seq_len must be >= 1, got {d.seq_len}")
    need(d.num_workers >= 0, "data.num_workers must be >= 0")
    for split in ("train", "val", "test"):
        v = getattr(d, f"max_{split}")
        need(v is None or v >= 1, f"data.max_{split} must be >= 1 or None, got {v}")
    need(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
         f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
