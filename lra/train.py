"""The training loop: `run(cfg)` turns a RunConfig into a result record.

    AdamW -> OneCycle schedule (linear warm-up to the peak lr, linear decay over all steps)
    -> gradient clipping -> evaluation on a fixed dev subset every `eval_every` steps
    -> the best-dev weights are tested on the whole test split at the end.

One optimisation step is lra/core/step.py's TrainStep, the step `lra bench` times. The loop knows
tasks only through their description and attentions only through the registry: no branch here
depends on which task or attention is running.

Reliability: the results and checkpoint folders are checked writable before any work;
checkpoints (atomic) every `checkpoint_every` steps, on the best dev score, on SIGTERM/SIGINT and
at the last step; `resume=True` continues from the last one and ends exactly as an uninterrupted
run would on CPU (model, optimiser, schedule, scaler, every RNG and the data position are
restored; the data order is a pure function of (seed, step)), or extends a run to a larger
--steps. An unfinished checkpoint is never overwritten by a run started without --resume. A
NaN/inf loss or gradient stops the run as "diverged", an out-of-memory error as "oom"; both still
write their result record.
"""

from __future__ import annotations

import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import tasks
from lra import grid
from lra.args import add_run_arguments, config_from_args
from lra.core import checkpoint as ckpt
from lra.core import distributed
from lra.core.config import RunConfig, validate
from lra.core.data import TrainBatches, load_splits, loader, notes, provenance, to_device
from lra.core.env import environment, pick_device
from lra.core.evaluate import evaluate
from lra.core.identity import config_dict
from lra.core.isolation import is_oom
from lra.core.measure import PeakMemory, Stopwatch
from lra.core.model import Classifier, build_model, count_parameters
from lra.core.records import METRIC_KEYS, new_run_id, now, print_summary, saved_in, write_record
from lra.core.signals import stop_on_signals
from lra.core.step import LossWindow, Precision, Runtime, TrainStep, step_model, use_deterministic_kernels
from lra_base.atomic import check_writable
from lra_base.errors import ConfigError, LRAError


class Diverged(LRAError):
    """The loss or the gradients became NaN or infinite."""


class Interrupted(LRAError):
    """SIGTERM or SIGINT arrived; a checkpoint was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class State:
    """What the loop carries from step to step; every checkpoint saves it."""

    step: int = 0
    best_acc: float = -1.0
    best_step: int | None = None
    best_model: dict | None = None  # a CPU copy of the best-dev weights, tested at the end
    history: dict = field(default_factory=lambda: {"train": [], "eval": []})
    aux: list = field(default_factory=lambda: [0.0, 0])  # sum and count of the auxiliary losses
    last_loss: float | None = None
    loss_window: list = field(default_factory=lambda: [0.0, 0])  # loss sum and steps since the last log
    timer: dict | None = None
    created_at: str = field(default_factory=now)
    extensions: list = field(default_factory=list)  # each change of --steps on resume: at which step, from, to


@dataclass
class Run:
    """What one training run works with, set up once by `prepare`."""

    cfg: RunConfig
    rt: Runtime
    data: dict
    model: Classifier  # the bare model (checkpoints, evaluation); `step` may run a DDP or compiled wrapper
    step: TrainStep
    run_id: str
    ck_dir: Path
    checkpoint_every: int | None


# --- setting up ----------------------------------------------------------------------------------


def check_storage(cfg: RunConfig) -> None:
    """The record and the checkpoints can be written: found now, not at the end of the work."""
    if distributed.from_env().is_main:
        fix = "pass --results-dir DIR, a folder you can write (or set LRA_RESULTS_DIR)"
        check_writable(Path(cfg.results_dir) / "runs", "the run's record", fix)
        check_writable(ckpt.directory(cfg), "the run's checkpoints", fix)


def prepare(cfg: RunConfig, checkpoint_every: int | None, progress: bool = False) -> Run:
    """Device, process group, data, model and optimiser of a run, in the order that makes a run
    reproducible: the data is loaded (or generated) before the seed, the model built after it."""
    task = tasks.get(cfg.task)
    if cfg.train.deterministic:
        use_deterministic_kernels()
    device = pick_device(cfg.device)
    dist = distributed.init(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.batch_size % dist.world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be divisible by the {dist.world} processes")
    rt = Runtime(device, Precision(cfg.train.precision, device), dist)
    data = load_splits(cfg, task, progress) if dist.is_main else None
    if dist.enabled:  # rank 0 generates / prepares first; the others then read its cache
        distributed.barrier()
        if not dist.is_main:
            data = load_splits(cfg, task)
    for line in notes(data, task.name) if dist.is_main else []:
        print(f"[lra] note: {line}", flush=True)
    ckpt.seed_everything(cfg.seed)
    model = build_model(cfg, task).to(device)
    run_model = model
    if dist.enabled:
        run_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    run_model = step_model(run_model, cfg.train, device)
    step = TrainStep(model, cfg.train, rt.precision, run_model)
    run_id = new_run_id(cfg.task, cfg.attention, cfg.preset, cfg.seed)
    return Run(cfg, rt, data, model, step, run_id, ckpt.directory(cfg), checkpoint_every)


def restore(run: Run, saved: dict) -> State:
    """The state of a checkpoint (ckpt.resumable), with the weights, optimiser and RNG restored in
    place. Extending a finished run (final.pt) makes a new run id: its earlier record stays."""
    run.model.load_state_dict(saved["model"])
    run.step.load_state_dict(saved)
    ckpt.set_rng_state(saved["rng"])
    state = State(**saved["state"])
    extension = saved["_extension"]
    if saved["_path"].name == ckpt.LAST:
        run.run_id = saved["run_id"]
    if extension:
        state.extensions.append(extension)
    if run.rt.dist.is_main:
        print(f"[lra] resuming {saved['run_id']} from {saved['_path']} at step {state.step}", flush=True)
        if extension:
            print(f"[lra] extending it from {extension['from_steps']} to {extension['to_steps']} steps as {run.run_id}: "
                  f"the schedule continues as one planned for {extension['to_steps']} steps (docs/reliability.md)",
                  flush=True)
    return state


def new_record(run: Run, state: State) -> dict:
    """The result record, filled in as the run goes; written whatever the outcome."""
    cfg = run.cfg
    config = config_dict(cfg)
    return {
        "run_id": run.run_id, "task": cfg.task, "attention": cfg.attention,
        "attention_options": config["attention_options"], "preset": cfg.preset, "seed": cfg.seed,
        "status": "failed", "metrics": {k: None for k in METRIC_KEYS}, "steps": state.step,
        "num_params": count_parameters(run.model), "config": config,
        "env": {**environment(run.rt.device, run.rt.precision.dtype), "world_size": run.rt.dist.world},
        "created_at": state.created_at, "kind": "train", "attention_info": run.model.attention_info(),
        "data": provenance(run.data), "extensions": state.extensions,
    }


# --- the run -------------------------------------------------------------------------------------


def run(cfg: RunConfig, *, resume: bool = False, checkpoint_every: int | None = None,
        progress: bool = True, restart: bool = False) -> dict:
    """Train, evaluate and test one configuration; returns (and writes) its result record."""
    validate(cfg)
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    config_dict(cfg)  # unknown attention or task options fail here, before any work
    tasks.get(cfg.task).resolve_options(cfg.data.options)
    check_storage(cfg)
    saved = ckpt.resumable(cfg, resume, restart)
    if resume and saved is None and distributed.from_env().is_main:
        print(f"[lra] --resume: no checkpoint under {ckpt.directory(cfg)}; starting afresh", flush=True)
    r = prepare(cfg, checkpoint_every, progress)
    state = restore(r, saved) if saved else State()
    record = new_record(r, state)
    timer, memory = Stopwatch(r.rt.device), PeakMemory(r.rt.device)
    if state.timer:
        timer.load_state_dict(state.timer)
    memory.start()  # from this process's first step: the first steps allocate what later ones reuse
    try:
        with stop_on_signals() as stop:
            train(r, state, timer, memory, stop, progress)
        test(r, state, record, timer, memory, progress)
    except Interrupted:
        raise  # a checkpoint was written; the run is not finished, so it gets no record
    except Diverged as exc:
        record["status"], record["error"] = "diverged", str(exc)
    except Exception as exc:
        if not is_oom(exc):
            record["error"] = traceback.format_exc(limit=-8)
            finish(r, record, state)
            raise
        record["status"], record["error"] = "oom", str(exc).splitlines()[0][:500]
    finish(r, record, state)
    return record


def test(r: Run, state: State, record: dict, timer: Stopwatch, memory: PeakMemory, progress: bool) -> None:
    """Test the best-dev weights on the whole test split and fill in the metrics."""
    if state.best_model is not None:
        r.model.load_state_dict(state.best_model)
    eval_timer = Stopwatch(r.rt.device)
    acc = evaluate(r.model, r.data["test"], r.cfg, r.rt, eval_timer, progress="testing" if progress else None)
    m = record["metrics"]
    peak, why = memory.reported()
    m.update(test_accuracy=acc, best_val_accuracy=state.best_acc, train_throughput=timer.rate(),
             eval_throughput=eval_timer.rate(), peak_memory_mb=peak)
    m.update(best_step=state.best_step, final_train_loss=state.last_loss, peak_memory_method=memory.method,
             train_seconds=timer.seconds)
    if why:
        m["peak_memory_note"] = why
    if state.aux[1]:
        m["aux_loss_mean"] = state.aux[0] / state.aux[1]
    record["status"] = "ok"
    if r.rt.dist.is_main:  # finished: nothing to resume; best.pt stays as the trained model
        (r.ck_dir / ckpt.LAST).unlink(missing_ok=True)


def finish(r: Run, record: dict, state: State) -> None:
    record["steps"] = state.step
    record["history"] = state.history
    record["finished_at"] = now()
    if r.rt.dist.is_main:
        record["path"] = str(write_record(r.cfg.results_dir, record))


# --- the loop ------------------------------------------------------------------------------------


def train(r: Run, state: State, timer: Stopwatch, memory: PeakMemory, stop: dict, progress: bool) -> None:
    t, rt = r.cfg.train, r.rt
    batches = TrainBatches(len(r.data["train"]), t.batch_size, r.cfg.seed, state.step, rt.dist.rank, rt.dist.world)
    it = iter(loader(r.data["train"], batches, r.cfg, rt.device))
    log_every = max(10, t.steps // 500)
    guard_every = 1 if rt.device.type == "cpu" else 10  # a finite-check syncs the GPU: not every step
    window = LossWindow(state.loss_window, rt.device)
    first_step = state.step
    nonfinite = torch.zeros((), device=rt.device, dtype=torch.bool)
    bar = tqdm(total=t.steps, initial=state.step, desc=f"{r.cfg.task}/{r.cfg.attention}", unit="step",
               dynamic_ncols=True, mininterval=1.0, disable=not (progress and rt.dist.is_main))
    if rt.dist.is_main:
        print(f"[lra] training {r.run_id}: steps {state.step}..{t.steps} on {rt.device} "
              f"({rt.precision.mode}, {rt.dist.world} process{'es' if rt.dist.world > 1 else ''})", flush=True)
    r.step.run_model.train()
    while state.step < t.steps:
        if state.step - first_step == min(t.timing_warmup, t.steps - first_step - 1):
            timer.start()  # the first steps (allocator warm-up, lazy init) stay out of the throughput
        loss, aux, bad = r.step(to_device(next(it), rt.device))
        nonfinite |= bad
        timer.count(t.batch_size)  # global samples per step
        window.add(loss)
        if aux is not None:
            state.aux[0] += float(aux.detach())
            state.aux[1] += 1
        state.step = step = state.step + 1
        last = step == t.steps
        stopping = (step % guard_every == 0 or last) and guard(r, state, bool(nonfinite), stop["signum"] is not None and not last)
        if step % log_every == 0 or last:
            state.last_loss = window.take_mean(rt)
            state.history["train"].append([step, state.last_loss])
        if step % t.eval_every == 0 or last:
            evaluate_dev(r, state, timer, bar, resume_timing=step - first_step >= t.timing_warmup and not last)
        bar.update(1)
        if step % log_every == 0 or last:
            dev = state.history["eval"][-1][1] if state.history["eval"] else None
            rate = timer.rate()
            bar.set_postfix(loss=f"{state.last_loss:.4f}", dev="-" if dev is None else f"{dev:.1f}",
                            samples_s=f"{rate:.0f}" if rate else "-")
        if r.checkpoint_every and step % r.checkpoint_every == 0 and not last:
            save_checkpoint(r, state, timer, window)
        if stopping:
            timer.stop()
            save_checkpoint(r, state, timer, window)
            bar.close()
            signum = stop["signum"] or signal.SIGTERM  # a rank told by another rank
            raise Interrupted(f"{signal.Signals(signum).name} received at step {step}: checkpoint written to "
                              f"{r.ck_dir / ckpt.LAST}; continue with the same command and --resume", signum)
    timer.stop()
    bar.close()
    if r.checkpoint_every:  # the finished state, which `--resume --steps N` extends
        save_checkpoint(r, state, timer, window, ckpt.FINAL)


def evaluate_dev(r: Run, state: State, timer: Stopwatch, bar, resume_timing: bool) -> None:
    """A dev evaluation (outside the timed training), the best weights kept, the score logged."""
    timer.stop()
    acc = evaluate(r.model, r.data["val"], r.cfg, r.rt, limit=r.cfg.train.eval_samples,
                   progress=None if bar.disable else f"step {state.step}: dev")
    keep_best(r, state, acc)
    if not bar.disable:
        bar.write(f"step {state.step}: dev accuracy {acc:.2f}% (best {state.best_acc:.2f}% at step {state.best_step})")
    r.step.run_model.train()
    if resume_timing:
        timer.start()


def save_checkpoint(r: Run, state: State, timer: Stopwatch, window: LossWindow, name: str = ckpt.LAST) -> None:
    """Checkpoint everything a resumed run needs to continue exactly (collective under DDP)."""
    saved_window = window.saved(r.rt)
    if r.rt.dist.is_main:
        saved_state = {**vars(state), "timer": timer.state_dict(), "loss_window": saved_window}
        ckpt.save(r.ck_dir / name, {
            "run_id": r.run_id, "config": config_dict(r.cfg), "model": r.model.state_dict(), **r.step.state_dict(),
            "rng": ckpt.rng_state(), "state": saved_state})


def guard(r: Run, state: State, nonfinite: bool, signalled: bool) -> bool:
    """Raises Diverged on a non-finite loss or gradient; True when a stop signal arrived. Decided
    by all ranks together at the same step: a rank that stopped alone would leave the others
    hanging in their next collective."""
    flags = [float(nonfinite), float(signalled)]
    if r.rt.dist.enabled:
        flags = distributed.all_reduce_sum(flags, r.rt.device)
    if flags[0] > 0:
        raise Diverged(
            f"non-finite loss or gradients at step {state.step} (last finite training loss {state.last_loss}); "
            f"attention {r.cfg.attention} with options {config_dict(r.cfg)['attention_options']}")
    return flags[1] > 0


def keep_best(r: Run, state: State, acc: float) -> None:
    """Logs a dev score; on a new best keeps a CPU copy of the weights (tested at the end) and,
    when the run writes checkpoints, saves it as best.pt."""
    state.history["eval"].append([state.step, acc])
    if acc > state.best_acc:
        state.best_acc, state.best_step = acc, state.step
        state.best_model = {k: v.detach().to("cpu", copy=True) for k, v in r.model.state_dict().items()}
        if r.rt.dist.is_main and r.checkpoint_every:
            ckpt.save(r.ck_dir / ckpt.BEST, {"run_id": r.run_id, "step": state.step, "val_accuracy": acc,
                                             "config": config_dict(r.cfg), "model": state.best_model})


# --- the command ---------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train and test one configuration (several: a grid)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    if grid.is_grid(args):  # several cells: each in its own process
        return grid.run_grid(args)
    cfg = config_from_args(args)
    every = args.checkpoint_every if args.checkpoint_every is not None else cfg.train.eval_every
    try:
        record = run(cfg, resume=args.resume, checkpoint_every=every, progress=not args.no_progress,
                     restart=args.restart)
    finally:
        distributed.shutdown()
    if not distributed.from_env().is_main:  # under torchrun, one summary
        return 0
    print_summary([record])
    return 0 if record["status"] == "ok" and saved_in(record["path"], cfg.results_dir) else 1
