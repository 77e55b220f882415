"""The training step: what one optimisation step is, written once.

    AdamW -> forward under autocast -> task loss (+ any auxiliary loss an attention set)
    -> backward through the gradient scaler -> non-finite check -> gradient clipping
    -> optimiser step -> schedule step

The training loop (lra/train.py), `lra bench` and `lra data throughput` all run this same
`TrainStep`, so the throughput a benchmark reports is the throughput of the step that trains.
Mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler) wraps the model;
the attention cores run in float32 whatever the autocast (attentions/base.py).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import tasks
from lra.core import distributed
from lra.core.config import RunConfig, TrainConfig
from lra.core.data import random_batch
from lra.core.model import build_model
from lra_base.errors import ConfigError


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


def make_scheduler(optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
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


def continue_schedule(scheduler, step: int) -> None:
    """Put `scheduler` at `step` as if it had been stepped there: the learning rate (and, with
    cycle_momentum, beta1) of its own schedule at that step, set on the optimiser."""
    scheduler.last_epoch = step
    with warnings.catch_warnings():  # get_lr outside step() warns; here it is the point
        warnings.simplefilter("ignore")
        values = scheduler.get_lr()  # OneCycleLR sets beta1 for this step as it computes the lr
    for group, lr in zip(scheduler.optimizer.param_groups, values):
        group["lr"] = lr
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def use_deterministic_kernels() -> None:
    """Deterministic CUDA kernels where torch has them (cuBLAS needs its workspace pinned before
    first use); operations without one warn instead of failing, and the warning names them."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def step_model(model, t: TrainConfig, device: torch.device):
    """What a step runs the forward (and backward) through: the model itself, or the model
    compiled with torch.compile when `train.compile` is set (the same for every attention)."""
    if not t.compile:
        return model
    mode = t.compile_mode if t.compile_mode != "auto" else ("reduce-overhead" if device.type == "cuda" else "default")
    return torch.compile(model, mode=mode)


class TrainStep:
    """One optimisation step of `model` as training runs it.

    `run_model` runs the forward (the model itself, or its DDP / compiled wrapper); `model` is the
    bare Classifier, asked for its auxiliary losses. `total_steps` overrides the schedule's length
    (a benchmark runs a few steps of a 50k-step schedule). Calling it with a batch returns the
    detached task loss, the auxiliary loss (or None) and a 0-dim bool tensor that is True if the
    loss or the gradients are not finite (with an fp16 scaler, inf gradients are skipped steps,
    not divergence). Nothing here synchronises the device.
    """

    def __init__(self, model, t: TrainConfig, precision: Precision, run_model=None, total_steps: int | None = None):
        self.model, self.run_model = model, (model if run_model is None else run_model)
        self.t, self.precision = t, precision
        self.params = [p for p in model.parameters() if p.requires_grad]
        # On CUDA one fused kernel updates every parameter (fewer launches for a tiny model).
        fused = bool(self.params) and all(p.is_cuda for p in self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
                                           weight_decay=t.weight_decay, fused=fused or None)
        schedule = t if total_steps is None else dataclasses.replace(t, steps=total_steps)
        self.scheduler = make_scheduler(self.optimizer, schedule)

    def __call__(self, batch: dict):
        scaler, t = self.precision.scaler, self.t
        with self.precision.autocast():
            logits = self.run_model(batch["ids"], batch["mask"])
            loss = F.cross_entropy(logits.float(), batch["labels"])
            aux = self.model.aux_loss()
            total = loss if aux is None else loss + aux
        scaler.scale(total).backward()
        scaler.unscale_(self.optimizer)
        bad = ~torch.isfinite(loss.detach())
        if not scaler.is_enabled():
            grads = [p.grad for p in self.params if p.grad is not None]
            bad = bad | ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if t.grad_clip > 0:
            if t.grad_clip_mode == "value":
                torch.nn.utils.clip_grad_value_(self.params, t.grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), aux, bad

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.precision.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved step. A schedule saved for another length (a run extended with --resume
        --steps N) is not loaded: this step's schedule, built for the new length, continues from the
        saved step count (docs/reliability.md)."""
        self.optimizer.load_state_dict(state["optimizer"])
        saved = state["scheduler"]
        if saved.get("total_steps") == getattr(self.scheduler, "total_steps", None):
            self.scheduler.load_state_dict(saved)
        else:
            continue_schedule(self.scheduler, saved["last_epoch"])
        self.precision.scaler.load_state_dict(state["scaler"])


class LossWindow:
    """The running sum of the training loss since the last log point. It stays on the device (no
    sync per step) and is part of the checkpoint, so a resumed run logs exactly the same curve."""

    def __init__(self, saved: list, device: torch.device):
        self.sum = torch.tensor(saved[0], device=device)
        self.count = saved[1]

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss
        self.count += 1

    def take_mean(self, rt: Runtime) -> float:
        """The mean since the last log point, averaged over ranks; the window starts again."""
        mean = float(self.sum) / self.count
        if rt.dist.enabled:
            mean = distributed.all_reduce_sum([mean], rt.device)[0] / rt.dist.world
        self.sum.zero_()
        self.count = 0
        return mean

    def saved(self, rt: Runtime) -> list:
        # Collective under DDP (every rank saves at the same step): the saved sum is the ranks'
        # average, so the sum over ranks, and with it the next logged loss, is preserved.
        total = float(self.sum)
        if rt.dist.enabled:
            total = distributed.all_reduce_sum([total], rt.device)[0] / rt.dist.world
        return [total, self.count]


def forward(model, batch: dict, precision: Precision) -> torch.Tensor:
    """The inference step: logits under the run's autocast, no gradients."""
    with torch.no_grad(), precision.autocast():
        return model(batch["ids"], batch["mask"])


@dataclass(frozen=True)
class Runtime:
    """Where and how a run executes: its device, its precision and its data-parallel context."""

    device: torch.device
    precision: Precision
    dist: distributed.Context


def benchmark_step(cfg: RunConfig, phase: str, device: torch.device, precision: Precision, total_steps: int):
    """The paper model of `cfg`, a random batch of its task's shape, and one step of `phase` on it:
    "train" = a TrainStep (forward + backward + the recipe's optimiser step), "eval" = forward only,
    in eval mode under no_grad. What `lra bench` and `lra data throughput` time."""
    task = tasks.get(cfg.task)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, task).to(device)
    run_model = step_model(model, cfg.train, device)
    batch = random_batch(task, cfg.train.batch_size, cfg.data.seq_len, device, cfg.seed)
    if phase == "eval":
        model.eval()
        return model, batch, lambda: forward(run_model, batch, precision)
    model.train()
    train_step = TrainStep(model, cfg.train, precision, run_model, total_steps=total_steps)
    return model, batch, lambda: train_step(batch)
