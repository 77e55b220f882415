"""Command-line arguments several commands share, and how they become a RunConfig.

`lra train` (and `python run_lra.py`), `lra sweep` and grid cells take the same run arguments;
every command names several attentions or tasks the same way (repeated, comma-separated, or
`all`: lra/core/names.py).
"""

from __future__ import annotations

import argparse

from lra.core.config import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR, RunConfig, set_field
from lra.core.identity import config_dict
from lra.core.names import split_names
from lra.core.presets import PRESETS, make_config
from lra_base.errors import ConfigError

# `--flag` -> the setting it overrides
OVERRIDES = {"steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr", "warmup": "train.warmup",
             "eval_every": "train.eval_every", "seq_len": "data.seq_len", "precision": "train.precision",
             "num_workers": "data.num_workers"}


class NameList(argparse.Action):
    """Names that accumulate over repeats: `--attention a --attention b,c` is a, b and c (plain
    nargs="+" would keep only the last). A first use replaces the default."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (list(current) if current and current is not self.default else []) + list(values))


def key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What to run, overrides of the preset, where and how: `lra train`, `lra sweep`, grid cells."""
    g = p.add_argument_group("what to run")
    g.add_argument("--task", nargs="+", action=NameList, default=["listops"], metavar="NAME",
                   help="task name (see `lra list`); default listops. Several (or `all`) run a grid")
    g.add_argument("--attention", nargs="+", action=NameList, default=None, metavar="NAME",
                   help="attention name (see `lra list`); default: the suite's headline method. "
                        "Several (or `all`) run a grid")
    g.add_argument("--preset", default="smoke", help=f"{' | '.join(PRESETS)} (default smoke)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("-o", "--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="attention option, e.g. -o alpha=5 (repeatable)")
    g.add_argument("--task-option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="task option (repeatable)")
    o = p.add_argument_group("overrides of the preset")
    o.add_argument("--steps", type=int)
    o.add_argument("--batch-size", type=int)
    o.add_argument("--lr", type=float)
    o.add_argument("--warmup", type=int)
    o.add_argument("--eval-every", type=int)
    o.add_argument("--seq-len", type=int)
    o.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    o.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    o.add_argument("--set", action="append", type=key_value, default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set model.dim=128 --set train.grad_clip_mode=norm")
    r = p.add_argument_group("where and how")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    r.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"where datasets live (default {DEFAULT_DATA_DIR}, env LRA_DATA_DIR)")
    r.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where records and checkpoints go (default {DEFAULT_RESULTS_DIR}, env LRA_RESULTS_DIR)")
    r.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                   help="where the prepared (tokenised) data is cached (default: <data-dir>/.cache, env LRA_CACHE_DIR); "
                        "for data on read-only storage")
    r.add_argument("--resume", action="store_true",
                   help="continue from this run's last checkpoint (with a larger --steps: extend the run)")
    r.add_argument("--restart", action="store_true",
                   help="discard this run's unfinished checkpoint and start again from step 0")
    r.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="write a checkpoint every K steps (default: at every evaluation)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = p.add_argument_group("grid (several tasks or attentions, `all`, or --seeds run a sweep: one process per run)")
    s.add_argument("--seeds", default=None, metavar="LIST", help="seeds of every cell, e.g. 0,1,2 or 0-4")
    s.add_argument("--variants", nargs="+", default=None, metavar="VARIANT",
                   help="attention option sets, each its own cell (ablations): `baseline` (no option) or "
                        "KEY=VALUE[,KEY=VALUE...], e.g. --variants baseline gate=false polarity=false,dwc=false; "
                        "on top of -o options")
    s.add_argument("--redo", action="store_true", help="run cells that already have an ok record again")
    s.add_argument("--dry-run", action="store_true", help="list the cells and what would be skipped; run nothing")
    s.add_argument("--jobs", type=int, default=None, metavar="K",
                   help="run up to K cells at once on this machine, each in its own process (default 1; "
                        "`lra sweep --executor local`: at most K jobs at once)")


def parse_variant(text: str) -> list[tuple[str, str]]:
    """'baseline' -> []; 'gate=false,dwc=false' -> [('gate', 'false'), ('dwc', 'false')]."""
    if text.strip() == "baseline":
        return []
    try:
        return [key_value(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--variants: {exc} (a variant is `baseline` or KEY=VALUE[,KEY=VALUE...])") from None


def config_from_args(args) -> RunConfig:
    """The RunConfig of one run (one task, one attention, one seed) from run arguments."""
    (task,) = split_names(args.task)
    attention = split_names(args.attention)
    cfg = make_config(task, args.preset, seed=args.seed, device=args.device, data_dir=args.data_dir,
                      results_dir=args.results_dir, cache_dir=args.cache_dir)
    if attention:
        (cfg.attention,) = attention
    cfg.attention_options = dict(args.option)
    cfg.data.options = {**cfg.data.options, **dict(args.task_option)}  # the preset's (smoke), then the user's
    for flag, key in OVERRIDES.items():
        if getattr(args, flag) is not None:
            set_field(cfg, key, getattr(args, flag))
    if args.steps is not None and args.warmup is None:
        cfg.train.warmup = min(cfg.train.warmup, max(1, args.steps // 10))  # keep the warm-up inside a shortened run
    for key, value in args.set:
        set_field(cfg, key, value)
    config_dict(cfg)  # unknown attention options fail before any work
    return cfg
