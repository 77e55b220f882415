"""`lra analyze`: the attention maps of trained runs, their entropy and effective rank, per layer and head.

    lra analyze --task listops --attention pola-a3,pola-a5,pola-a7,linear,softmax --preset smoke --seeds 0
    lra analyze results/runs/listops-pola-a3-smoke-s0-....json        a training record (or its run id)
    lra analyze ... --inputs 4 --max-len 512 --beside none

A run is found by its identity (lra/core/identity.py run_key): its best-dev checkpoint
<results-dir>/checkpoints/<run key>/best.pt, which every `lra train` run writes. The model is
rebuilt from the checkpoint's own configuration and run in evaluation mode on the first
`--inputs` examples of the dev split (cut to `--max-len` tokens: the maps are N x N). Every
attention layer gives its maps through AttentionBase.attention_maps; lra/diagnostics.py defines
the statistics (row entropy in nats, Roy & Vetterli's effective rank, on real tokens only).

Each analysed run gets a record (`kind` "analysis", under <results-dir>/runs/) with the values per
map, layer and head and their means, and a PNG of the first input's maps, next to the maps of a
trained `--beside` run (default: the paper's baseline, softmax) of the same task, preset and seed
when its checkpoint exists. An attention that cannot write its map gets a record that says "no
map". `lra report` shows the records in its diagnostics section.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import tasks
from lra.core import checkpoint as ckpt
from lra.core import paper_numbers as paper
from lra.core.config import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR, RunConfig
from lra.core.data import load_splits
from lra.core.env import environment, pick_device
from lra.core.identity import config_dict
from lra.core.model import build_model
from lra.core.names import expand_attentions, parse_seeds
from lra.core.presets import PRESETS, make_config
from lra.core.records import METRIC_KEYS, new_run_id, now, read_records, write_record
from lra.diagnostics import MapStats, analyse, sequence_maps
from lra.args import key_value
from lra.report.figures import maps_figure
from attentions import NoAttentionMap
from lra_base.errors import ConfigError

FIGURES = "analysis"  # PNGs go to <results-dir>/analysis/


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="attention maps of trained runs: entropy, effective rank, PNGs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN", help="training records (paths) or run ids to analyse")
    p.add_argument("--task", default="listops", help="with --attention: the run's task (default listops)")
    p.add_argument("--attention", nargs="+", default=None, metavar="NAME", help="attentions (lists, `all`)")
    p.add_argument("--preset", default="smoke", help=f"{' | '.join(PRESETS)} (default smoke)")
    p.add_argument("--seeds", default="0", metavar="LIST", help="seeds, e.g. 0 or 0-2 (default 0)")
    p.add_argument("-o", "--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="attention option of the run (repeatable)")
    p.add_argument("--inputs", type=int, default=8, help="dev examples analysed (default 8)")
    p.add_argument("--max-len", type=int, default=None, help="cut every input to this many tokens (maps are N x N)")
    p.add_argument("--beside", default=None, help="attention drawn beside (default: the paper's baseline; none: off)")
    p.add_argument("--no-figure", action="store_true", help="write the records only")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"datasets (default {DEFAULT_DATA_DIR})")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"checkpoints are read from and records written to here (default {DEFAULT_RESULTS_DIR})")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args) -> int:
    if args.inputs < 1 or (args.max_len is not None and args.max_len < 1):
        raise ConfigError("--inputs and --max-len must be >= 1")
    configs = configs_from_args(args)
    failed = 0
    for cfg in configs:
        try:
            record = analyse_run(cfg, args)
        except ConfigError as exc:  # no checkpoint for this one: say so, go on with the others
            print(f"[analyze] {cfg.task} / {cfg.attention} / seed {cfg.seed}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(summary_line(record), flush=True)
        failed += record["status"] != "ok"
    return 1 if failed else 0


def summary_line(record: dict) -> str:
    m, where = record["metrics"], f"{record['task']} / {record['attention']} / seed {record['seed']}"
    if record["status"] != "ok":
        return f"[analyze] {where}: {record['error']}  ({record['path']})"
    maps = ", ".join(f"{name} {v['entropy_mean']:.3f} nats / rank {v['effective_rank_mean']:.1f}"
                     for name, v in m["maps"].items())
    return (f"[analyze] {where}: entropy {m['entropy']:.3f} nats (uniform {record['analysis']['uniform_entropy']:.3f}), "
            f"effective rank {m['effective_rank']:.1f}; {maps}  ({record['path']})")


# --- which runs --------------------------------------------------------------------------------------


def configs_from_args(args) -> list[RunConfig]:
    """The runs named on the command line: records / run ids, or task x attentions x seeds."""
    if args.runs:
        return [config_of(find_record(r, args.results_dir), args) for r in args.runs]
    if not args.attention:
        raise ConfigError("name the runs to analyse: record paths or run ids, or --attention (with --task, --preset, --seeds)")
    out = []
    for attention in expand_attentions(args.attention):
        for seed in parse_seeds(args.seeds):
            cfg = make_config(args.task, args.preset, attention=attention, seed=seed)
            cfg.attention_options = dict(args.option)
            out.append(where(cfg, args))
    return out


def find_record(ref: str, results_dir) -> dict:
    path = Path(ref)
    if path.suffix == ".json" and path.is_file():
        return json.loads(path.read_text())
    found = [r for r in read_records(results_dir) if r["run_id"] == ref or Path(r["_path"]).stem == ref]
    if not found:
        raise ConfigError(f"no record {ref!r}: give a record file or the run id of a record under {Path(results_dir) / 'runs'}")
    return found[-1]


def config_of(record: dict, args) -> RunConfig:
    if record.get("kind", "train") != "train":
        raise ConfigError(f"{record['run_id']} is a {record.get('kind')} record; analyse a training run")
    return where(RunConfig.from_dict(record["config"]), args)


def where(cfg: RunConfig, args) -> RunConfig:
    """cfg run here: the data, results and device of `args` (the command line, or another RunConfig)."""
    cfg.data_dir, cfg.results_dir, cfg.device = args.data_dir, args.results_dir, args.device
    return cfg


def load_trained(cfg: RunConfig, task, device: torch.device):
    """(model, checkpoint) of a run's best-dev weights; the model built from the checkpoint's own config."""
    path = ckpt.directory(cfg) / "best.pt"
    if not path.is_file():
        raise ConfigError(f"no checkpoint {path}: train the run first (`lra train` writes best.pt)")
    saved = ckpt.load(path)
    trained = where(RunConfig.from_dict(saved["config"]), cfg)
    model = build_model(trained, task)
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), saved, trained, path


# --- one run -------------------------------------------------------------------------------------


def inputs_of(cfg: RunConfig, task, count: int, max_len: int | None, device) -> dict:
    """The first `count` dev examples (the seeded dev subset of the run), cut to max_len tokens."""
    view = load_splits(cfg, task)["val"]
    batch = view[np.arange(min(count, len(view)))]
    if max_len is not None:
        batch = {**batch, "ids": batch["ids"][..., :max_len], "mask": batch["mask"][..., :max_len]}
    return {k: v.to(device) for k, v in batch.items()}


def analyse_run(cfg: RunConfig, args) -> dict:
    task = tasks.get(cfg.task)
    device = pick_device(args.device)
    model, saved, trained, path = load_trained(cfg, task, device)
    batch = inputs_of(trained, task, args.inputs, args.max_len, device)
    record = new_record(trained, saved, path, args, device)
    try:
        stats = analyse(model, batch, trained.seed)
    except NoAttentionMap as exc:
        record["status"], record["error"] = "failed", f"no map: {exc}"
        record["path"] = str(write_record(cfg.results_dir, record))
        return record
    record["status"] = "ok"
    record["metrics"].update(stats.means())
    record["analysis"].update(uniform_entropy=stats.uniform_entropy, lengths=stats.lengths)
    if not args.no_figure:
        try:
            record["analysis"]["figure"], record["analysis"]["beside"] = draw(stats, trained, batch, args, record["run_id"])
        except ModuleNotFoundError as exc:  # matplotlib is optional: the numbers need nothing of it
            print(f"[analyze] no figure ({exc}); install matplotlib for the PNGs", file=sys.stderr)
    record["path"] = str(write_record(cfg.results_dir, record))
    return record


def new_record(cfg: RunConfig, saved: dict, path: Path, args, device) -> dict:
    config = config_dict(cfg)
    return {
        "run_id": "analysis-" + new_run_id(cfg.task, cfg.attention, cfg.preset, cfg.seed), "task": cfg.task,
        "attention": cfg.attention, "attention_options": config["attention_options"], "preset": cfg.preset,
        "seed": cfg.seed, "status": "failed", "kind": "analysis",
        "metrics": {**{k: None for k in METRIC_KEYS}, "best_val_accuracy": saved.get("val_accuracy")},
        "steps": saved.get("step"), "config": config, "env": environment(device, torch.float32), "created_at": now(),
        "analysis": {"source_run": saved.get("run_id"), "checkpoint": f"checkpoints/{path.parent.name}/{path.name}",
                     "checkpoint_step": saved.get("step"), "split": "val", "inputs": args.inputs,
                     "max_len": args.max_len, "figure": None, "beside": None,
                     "definitions": "lra/diagnostics.py: row entropy in nats of |A| renormalised per real query "
                                    "row over real keys; effective rank (Roy & Vetterli 2007) of A on real "
                                    "tokens; means over the sequences, per map, layer and head"},
    }


# --- the figure ----------------------------------------------------------------------------------


def beside_name(args, cfg: RunConfig) -> str | None:
    name = args.beside or next(c.attention for c in paper.TABLE6 if c.throughput_ratio == 1.0)
    return None if name == "none" or name == cfg.attention else name


def beside_maps(name: str, cfg: RunConfig, batch: dict, device) -> tuple[list, str] | None:
    """The first input's maps under the trained `name` run of the same task, preset and seed, if any."""
    other = make_config(cfg.task, cfg.preset, attention=name, seed=cfg.seed)
    other = where(other, cfg)
    if not (ckpt.directory(other) / "best.pt").is_file():
        return None
    model, saved, trained, _ = load_trained(other, tasks.get(cfg.task), device)
    maps, masks = sequence_maps(model, batch["ids"][:1], batch["mask"][:1], trained.seed)
    return [{n: a[0][:, masks[0]][:, :, masks[0]] for n, a in layer.items()} for layer in maps], saved.get("run_id")


def draw(stats: MapStats, cfg: RunConfig, batch: dict, args, run_id: str) -> tuple[str, dict | None]:
    """The PNG of the first input's maps (and the beside run's), relative to the results folder."""
    name = beside_name(args, cfg)
    other = beside_maps(name, cfg, batch, pick_device(args.device)) if name else None
    rows = []
    for li, layer in enumerate(stats.first):
        row = [(f"{cfg.attention} L{li} h{h} {n}\nH {stats.entropy[n][li][h]:.2f} nats, erank "
                f"{stats.effective_rank[n][li][h]:.1f}", a[h].numpy()) for n, a in layer.items() for h in range(len(a))]
        if other is not None:
            row += [(f"{name} L{li} h{h} {n}", a[h].numpy()) for n, a in other[0][li].items() for h in range(len(a))]
        rows.append(row)
    n = stats.lengths[0]
    title = (f"{cfg.task} ({cfg.preset} preset, seed {cfg.seed}), dev example 0 ({n} real tokens): |A| per layer "
             f"and head, each panel's colour clipped at its 99th percentile; H and erank: means over "
             f"{len(stats.lengths)} sequences")
    rel = f"{FIGURES}/{run_id}.png"
    maps_figure(rows, title)(Path(cfg.results_dir) / rel)
    return rel, ({"attention": name, "source_run": other[1]} if other is not None else None)
