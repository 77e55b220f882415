"""The training loop: `run(cfg)` turns a RunConfig into a result record.

    AdamW -> OneCycle schedule (linear warm-up to the peak lr, linear decay over all steps)
    -> gradient clipping -> evaluation on a fixed dev subset every `eval_every` steps
    -> the best-dev weights are tested on the whole test split at the end.

Mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler) wraps the model;
the attention cores run in float32 whatever the autocast (attentions/base.py). The loop knows
tasks only through their description and attentions only through the registry: no branch here
depends on which task or attention is running.

Reliability: checkpoints (atomic) every `checkpoint_every` steps, on the best dev score and on
SIGTERM/SIGINT; `resume=True` continues from the last one and ends exactly as an uninterrupted run
would on CPU (model, optimiser, schedule, scaler, every RNG and the data position are restored;
the data order is a pure function of (seed, step)). A NaN/inf loss or gradient stops the run as
"diverged", an out-of-memory error as "oom"; both still write their result record.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import attentions
import tasks
from lra import checkpoint as ckpt
from lra import distributed
from lra.config import RunConfig, validate
from lra.env import environment, pick_device
from lra.errors import ConfigError, LRAError, MissingDataError
from lra.measure import PeakMemory, Stopwatch
from lra.model import Classifier, count_parameters
from lra.results import new_run_id, now, write_record
from tasks.base import BatchView, subset_indices


class Diverged(LRAError):
    """The loss or the gradients became NaN or infinite."""


class Interrupted(LRAError):
    """SIGTERM or SIGINT arrived; a checkpoint was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# --- pieces ----------------------------------------------------------------------------------------


class Precision:
    """Autocast dtype and gradient scaler for a device and a `train.precision` setting."""

    def __init__(self, mode: str, device: torch.device):
        if mode == "auto":
            if device.type == "cuda":
                mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                mode = "fp32"
        if mode == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision fp16 needs CUDA; use bf16 or fp32 on CPU")
        self.mode = mode
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda", enabled=(mode == "fp16"))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)


def make_scheduler(optimizer, t) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's OneCycleLR with linear annealing, as the Skyformer port ran it: from lr/25 up to lr
    over the warm-up, then down to lr/25e4 at the last step.

    OneCycleLR divides by (warm-up - 1) and by the steps left after the warm-up, so the warm-up is
    clamped into [2, steps - 1] (a warm-up of 0 or 1 step becomes 2); runs of fewer than 3 steps
    (benchmarks, checks) keep the peak learning rate throughout.
    """
    if t.steps < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = min(max(t.warmup, 2), t.steps - 1)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=t.lr, total_steps=t.steps, pct_start=warmup / t.steps,
        anneal_strategy="linear", cycle_momentum=t.cycle_momentum)


def train_step(model, train_model, batch: dict, optimizer, scheduler, precision: Precision, params: list,
               t) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One optimisation step exactly as training runs it; `lra bench` times this same function.

    `model` is the bare Classifier (for its auxiliary losses), `train_model` what runs the forward
    (the model itself, or its DDP / compiled wrapper). Returns the detached task loss, the
    auxiliary loss (or None) and a 0-dim bool tensor that is True if the loss or the gradients are
    not finite (with an fp16 scaler, inf gradients are skipped steps, not divergence).
    """
    with precision.autocast():
        logits = train_model(batch["ids"], batch["mask"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        aux = model.aux_loss()
        total = loss if aux is None else loss + aux
    precision.scaler.scale(total).backward()
    precision.scaler.unscale_(optimizer)
    bad = ~torch.isfinite(loss.detach())
    if not precision.scaler.is_enabled():
        bad = bad | ~torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
    if t.grad_clip > 0:
        if t.grad_clip_mode == "value":
            torch.nn.utils.clip_grad_value_(params, t.grad_clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), aux, bad


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_deterministic_kernels() -> None:
    """Deterministic CUDA kernels where torch has them (cuBLAS needs its workspace pinned before
    first use); operations without one warn instead of failing, and the warning names them."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def load_data(cfg: RunConfig, task, progress: bool = True) -> dict[str, BatchView]:
    """The three splits as BatchViews, generating a synthetic dataset first if the preset says so."""
    root = Path(cfg.data_dir) / cfg.data.subdir if cfg.data.subdir else Path(cfg.data_dir)
    try:
        prepared = {s: task.prepared(root, s, cfg.data.options) for s in ("train", "val", "test")}
    except MissingDataError:
        if not (cfg.data.generate and task.can_generate):
            raise
        generator = {**cfg.data.generator, **task.generator_options(task.resolve_options(cfg.data.options))}
        print(f"[lra] generating a {task.name} dataset under {root} ({generator})", flush=True)
        task.generate(root, **generator)
        prepared = {s: task.prepared(root, s, cfg.data.options) for s in ("train", "val", "test")}
    limits = {"train": cfg.data.max_train, "val": cfg.data.max_val, "test": cfg.data.max_test}
    return {
        s: BatchView(p, cfg.data.seq_len, subset_indices(len(p), limits[s], cfg.seed))
        for s, p in prepared.items()
    }


@contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag the loop checks after each step (main thread only)."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C leaves at once
        flag["signum"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in msg or "not enough memory" in msg
                                              or "out of memory" in msg.lower())


# --- the run -----------------------------------------------------------------------------------------


def run(cfg: RunConfig, *, resume: bool = False, checkpoint_every: int | None = None,
        progress: bool = True) -> dict:
    """Train, evaluate and test one configuration; returns (and writes) its result record."""
    validate(cfg)
    task = tasks.get(cfg.task)
    attn_options = attentions.options_dict(attentions.resolve(cfg.attention, **cfg.attention_options))
    task.resolve_options(cfg.data.options)
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")

    if cfg.train.deterministic:
        use_deterministic_kernels()
    device = pick_device(cfg.device)
    dist = distributed.init(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.batch_size % dist.world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be divisible by the {dist.world} processes")
    precision = Precision(cfg.train.precision, device)

    data = load_data(cfg, task) if dist.is_main else None
    if dist.enabled:  # rank 0 generates / prepares first; the others then read its cache
        distributed.barrier()
        if not dist.is_main:
            data = load_data(cfg, task)

    seed_everything(cfg.seed)
    model = Classifier(cfg.model, attention=cfg.attention, attention_options=cfg.attention_options,
                       vocab_size=task.vocab_size, max_len=cfg.data.seq_len, num_classes=task.num_classes,
                       num_inputs=task.num_inputs, grid=task.grid).to(device)
    n_params = count_parameters(model)
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
                                  weight_decay=t.weight_decay)
    scheduler = make_scheduler(optimizer, t)

    run_id = new_run_id(cfg.task, cfg.attention, cfg.preset, cfg.seed)
    ck_dir = ckpt.directory(cfg)
    state = {"step": 0, "best_acc": -1.0, "best_step": None, "best_model": None, "history": {"train": [], "eval": []},
             "aux": [0.0, 0], "last_loss": None, "loss_window": [0.0, 0], "timer": None, "created_at": now()}
    if resume:
        last = ck_dir / "last.pt"
        if last.exists():
            saved = ckpt.load(last)
            ckpt.check_compatible(saved["config"], cfg, last)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            precision.scaler.load_state_dict(saved["scaler"])
            set_rng_state(saved["rng"])
            run_id = saved["run_id"]
            state.update(saved["state"])
            if dist.is_main:
                print(f"[lra] resuming {run_id} from {last} at step {state['step']}", flush=True)
        elif dist.is_main:
            print(f"[lra] --resume: no checkpoint under {ck_dir}; starting afresh", flush=True)

    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        train_model = torch.compile(train_model)

    record = {
        "run_id": run_id, "task": cfg.task, "attention": cfg.attention, "attention_options": attn_options,
        "preset": cfg.preset, "seed": cfg.seed, "status": "failed",
        "metrics": {k: None for k in ("test_accuracy", "best_val_accuracy", "train_throughput", "eval_throughput",
                                      "peak_memory_mb")},
        "steps": state["step"], "num_params": n_params, "config": cfg.to_dict(),
        "env": {**environment(device, precision.dtype), "world_size": dist.world},
        "created_at": state["created_at"], "kind": "train", "attention_info": model.attention_info(),
    }
    record["config"]["attention_options"] = attn_options
    record["data"] = {s: {"examples": len(v), "source_examples": len(v.split), "cache": v.split.meta["path"],
                          "options": v.split.meta.get("options", {}), "skipped": v.split.meta.get("skipped", {})}
                      for s, v in data.items()}

    timer = Stopwatch(device)
    if state["timer"]:
        timer.load_state_dict(state["timer"])
    memory = PeakMemory(device)
    try:
        with stop_on_signals() as stop:
            _train(cfg, train_model, model, optimizer, scheduler, precision, data, dist, device, state, timer,
                   memory, stop, ck_dir, checkpoint_every, run_id, progress)
        # Test the best-dev weights on the whole test split.
        if state["best_model"] is not None:
            model.load_state_dict(state["best_model"])
        eval_timer = Stopwatch(device)
        test_acc = evaluate(model, data["test"], cfg, precision, dist, device, eval_timer)
        m = record["metrics"]
        m.update(test_accuracy=test_acc, best_val_accuracy=state["best_acc"], train_throughput=timer.rate(),
                 eval_throughput=eval_timer.rate(), peak_memory_mb=memory.peak_mb())
        m.update(best_step=state["best_step"], final_train_loss=state["last_loss"],
                 peak_memory_method=memory.method, train_seconds=timer.seconds)
        if state["aux"][1]:
            m["aux_loss_mean"] = state["aux"][0] / state["aux"][1]
        record["status"] = "ok"
        if dist.is_main:  # finished: nothing to resume; best.pt stays as the trained model
            (ck_dir / "last.pt").unlink(missing_ok=True)
    except Interrupted:
        raise  # a checkpoint was written; the run is not finished, so it gets no record
    except Diverged as exc:
        record["status"], record["error"] = "diverged", str(exc)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not is_oom(exc):
            record["error"] = traceback.format_exc(limit=-8)
            _finish(record, state, dist, cfg)
            raise
        record["status"], record["error"] = "oom", str(exc).splitlines()[0][:500]
    except Exception:
        record["error"] = traceback.format_exc(limit=-8)
        _finish(record, state, dist, cfg)
        raise
    _finish(record, state, dist, cfg)
    return record


def _finish(record: dict, state: dict, dist, cfg: RunConfig) -> None:
    record["steps"] = state["step"]
    record["history"] = state["history"]
    record["finished_at"] = now()
    if dist.is_main:
        record["path"] = str(write_record(cfg.results_dir, record))


def _train(cfg, train_model, model, optimizer, scheduler, precision, data, dist, device, state, timer, memory,
           stop, ck_dir, checkpoint_every, run_id, progress):
    t = cfg.train
    batches = TrainBatches(len(data["train"]), t.batch_size, cfg.seed, state["step"], dist.rank, dist.world)
    it = iter(loader(data["train"], batches, cfg, device))
    params = [p for p in model.parameters() if p.requires_grad]
    log_every = max(10, t.steps // 500)
    guard_every = 1 if device.type == "cpu" else 10  # a finite-check syncs the GPU: not every step
    # The running sum of the loss since the last log point stays on the device (no sync per step);
    # it is part of the checkpoint so a resumed run logs exactly the same curve.
    loss_sum = torch.tensor(state["loss_window"][0], device=device)
    logged, first_step = state["loss_window"][1], state["step"]
    nonfinite = torch.zeros((), device=device, dtype=torch.bool)
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=state["step"], desc=f"{cfg.task}/{cfg.attention}", unit="step",
                   dynamic_ncols=True, mininterval=1.0)

    def save_last():
        # Collective under DDP (every rank calls it at the same step): the saved loss window is the
        # ranks' average, so the sum over ranks, and with it the next logged loss, is preserved.
        window = float(loss_sum)
        if dist.enabled:
            window = distributed.all_reduce_sum([window], device)[0] / dist.world
        if dist.is_main:
            ckpt.save(ck_dir / "last.pt", {
                "run_id": run_id, "config": cfg.to_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": precision.scaler.state_dict(), "rng": rng_state(),
                "state": {**state, "timer": timer.state_dict(), "loss_window": [window, logged]}})

    if dist.is_main:
        print(f"[lra] training {run_id}: steps {state['step']}..{t.steps} on {device} "
              f"({precision.mode}, {dist.world} process{'es' if dist.world > 1 else ''})", flush=True)
    train_model.train()
    while state["step"] < t.steps:
        step = state["step"]
        if step - first_step == min(t.timing_warmup, t.steps - first_step - 1):
            memory.start()
            timer.start()
        batch = to_device(next(it), device)
        loss, aux, bad = train_step(model, train_model, batch, optimizer, scheduler, precision, params, t)
        nonfinite |= bad
        timer.count(t.batch_size)  # global samples per step
        loss_sum += loss
        logged += 1
        if aux is not None:
            state["aux"][0] += float(aux.detach())
            state["aux"][1] += 1
        state["step"] = step = step + 1

        stopping = False
        if step % guard_every == 0 or step == t.steps:
            stopping = _guard(cfg, state, bool(nonfinite), stop["signum"] is not None and step < t.steps,
                              dist, device)
        if step % log_every == 0 or step == t.steps:
            mean_loss = float(loss_sum) / logged
            if dist.enabled:
                mean_loss = distributed.all_reduce_sum([mean_loss], device)[0] / dist.world
            state["last_loss"] = mean_loss
            state["history"]["train"].append([step, mean_loss])
            loss_sum.zero_()
            logged = 0
        if step % t.eval_every == 0 or step == t.steps:
            timer.stop()
            acc = evaluate(model, data["val"], cfg, precision, dist, device, None, limit=t.eval_samples)
            _keep_best(cfg, model, state, acc, ck_dir / "best.pt" if dist.is_main and checkpoint_every else None,
                       run_id)
            if bar is not None:
                bar.write(f"step {step}: dev accuracy {acc:.2f}% (best {state['best_acc']:.2f}% at step "
                          f"{state['best_step']})")
            train_model.train()
            if step - first_step >= t.timing_warmup and step < t.steps:
                timer.start()
        if bar is not None:
            bar.update(1)
            if step % log_every == 0 or step == t.steps:
                rate = timer.rate()
                bar.set_postfix(loss=f"{state['last_loss']:.4f}", dev=f"{state['history']['eval'][-1][1]:.1f}"
                                if state["history"]["eval"] else "-", samples_s=f"{rate:.0f}" if rate else "-")
        if checkpoint_every and step % checkpoint_every == 0 and step < t.steps:
            save_last()
        if stopping:
            timer.stop()
            save_last()
            if bar is not None:
                bar.close()
            signum = stop["signum"] or signal.SIGTERM  # a rank told by another rank
            raise Interrupted(f"{signal.Signals(signum).name} received at step {step}: checkpoint written to "
                              f"{ck_dir / 'last.pt'}; continue with the same command and --resume", signum)
    timer.stop()
    if bar is not None:
        bar.close()


def _guard(cfg, state, nonfinite: bool, signalled: bool, dist, device) -> bool:
    """Raises Diverged on a non-finite loss or gradient; True when a stop signal arrived. Decided
    by all ranks together at the same step: a rank that stopped alone would leave the others
    hanging in their next collective."""
    flags = [float(nonfinite), float(signalled)]
    if dist.enabled:
        flags = distributed.all_reduce_sum(flags, device)
    if flags[0] > 0:
        raise Diverged(
            f"non-finite loss or gradients at step {state['step']} (last finite training loss "
            f"{state['last_loss']}); attention {cfg.attention} with options "
            f"{attentions.options_dict(attentions.resolve(cfg.attention, **cfg.attention_options))}")
    return flags[1] > 0


def _keep_best(cfg, model, state, acc: float, best_path, run_id: str) -> None:
    """Logs a dev score; on a new best keeps a CPU copy of the weights (tested at the end) and,
    where `best_path` is given, writes it as best.pt."""
    step = state["step"]
    state["history"]["eval"].append([step, acc])
    if acc > state["best_acc"]:
        state["best_acc"], state["best_step"] = acc, step
        state["best_model"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if best_path is not None:
            ckpt.save(best_path, {"run_id": run_id, "step": step, "val_accuracy": acc,
                                  "config": cfg.to_dict(), "model": state["best_model"]})


@torch.no_grad()
def evaluate(model, view: BatchView, cfg: RunConfig, precision: Precision, dist, device, timer: Stopwatch | None,
             limit: int | None = None) -> float:
    """Accuracy (%) on the first `limit` examples of `view` (all if None). With a timer, the time of
    every batch but the first (warm-up) is measured."""
    model.eval()
    n = len(view) if limit is None else min(limit, len(view))
    per_rank = max(1, cfg.train.batch_size // dist.world)
    chunks = eval_batches(n, per_rank, dist.rank, dist.world)
    correct, total = 0, 0
    for i, batch in enumerate(loader(view, chunks, cfg, device)):
        if timer is not None and i == 1:
            timer.start()
        batch = to_device(batch, device)
        with precision.autocast():
            logits = model(batch["ids"], batch["mask"])
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
        if timer is not None:
            timer.count(len(batch["labels"]) * dist.world)  # global samples/s (ranks run in step)
    if timer is not None:
        timer.stop()
    correct, total = distributed.all_reduce_sum([correct, total], device)
    model.train()
    return 100.0 * correct / max(total, 1)
