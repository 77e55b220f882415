"""Preflight: what this machine is, and whether every attention trains on its device the way the
paper runs it, before any long measurement starts. The first stage of `lra campaign`.

    python -m lra.preflight --device cuda --out DIR/preflight.json [--tiny]

It runs in a process of its own (a crash or a stuck CUDA context ends the preflight, not the
campaign) and writes one JSON file:
- `machine`: the probe (lra/core/env.py) and what it adds here: torch, CUDA and cuDNN versions,
  the GPU's name, capability, memory and bf16 support, the cores, and which optional packages
  are importable (a bare GPU box may lack datasets, submitit or matplotlib).
- `steps`: per registered attention, training steps of the paper model at ListOps' paper batch
  and length (on CPU the batch capped as `lra bench` caps it) under the paper precision (bf16
  autocast on CUDA, fp16 with a scaler where bf16 is missing, fp32 on CPU): status, the first
  step's seconds, the step time after it, the peak memory. The campaign plans its budget with
  these.
- `checks`: the conformance checks that matter on the device (tests/test_attn_conformance.py runs
  them on whatever the test machine has, usually a CPU): bf16 autocast at N = 4096 with inputs
  x 30 stays finite in forward and backward; padded content does not leak, in fp32 and under
  bf16 autocast; fp16 autocast with a gradient scaler trains (CUDA only); the SDPA path of
  softmax agrees with its reference form, outputs and gradients; the peak-memory counters
  restart from a reset. `--tiny` shrinks the sizes (the CPU rehearsal).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from contextlib import nullcontext
from importlib import metadata
from pathlib import Path

import torch
from tabulate import tabulate

import attentions
import tasks
from lra.core.env import environment, memory_total_mb, pick_device
from lra.core.isolation import die_with_parent, is_oom
from lra.core.measure import PeakMemory, Timing, time_steps
from lra.core.model import count_parameters
from lra.core.names import expand_attentions
from lra.core.presets import make_config
from lra.core.step import Precision, TrainStep, benchmark_step
from lra.measurements import CPU_TOKENS, choose_batch
from lra_base.atomic import atomic_write_text

OPTIONAL = ("datasets", "submitit", "matplotlib", "triton", "huggingface_hub", "tokenizers", "pandas", "tabulate",
            "tqdm", "numpy", "PIL", "pytest", "hypothesis")
DIM, HEADS = 32, 2


# --- the machine -------------------------------------------------------------------------------


def package(name: str) -> str | None:
    """The version of an importable package, "present" when it has no metadata, None when absent."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):  # a broken install, or an import blocked on purpose
        return None
    dist = {"PIL": "pillow"}.get(name, name)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "present"


def machine(device: torch.device) -> dict:
    out = {"env": environment(device, torch.float32), "cpu_count": os.cpu_count(), "memory_mb": memory_total_mb(),
           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "packages": {name: package(name) for name in OPTIONAL}}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_mb": p.total_memory // 2**20,
                      "multiprocessors": p.multi_processor_count, "bf16": torch.cuda.is_bf16_supported(),
                      "count": torch.cuda.device_count()}
    return out


# --- training steps ---------------------------------------------------------------------------------


def step_shape(device: torch.device, tiny: bool) -> tuple[int, int]:
    """(batch, length) of the preflight steps: ListOps' paper shape (capped on CPU), or a toy one."""
    if tiny:
        return 2, 64
    task = tasks.get("listops")
    return choose_batch(task, task.recipe.seq_len, None, device.type, CPU_TOKENS)[0], task.recipe.seq_len


def train_steps(name: str, device: torch.device, tiny: bool) -> dict:
    """Three training steps of the paper model with `name` at the preflight shape."""
    batch, length = step_shape(device, tiny)
    cfg = make_config("listops", "paper", attention=name, device=str(device))
    cfg.train.batch_size, cfg.data.seq_len = batch, length
    precision = Precision(cfg.train.precision, device)
    out = {"status": "failed", "batch_size": batch, "seq_len": length, "precision": precision.mode}
    try:
        model, _, step = benchmark_step(cfg, "train", device, precision, total_steps=10)
        out.update(num_params=count_parameters(model), attention_info=model.attention_info())
        del model
        timed = time_steps(step, device, Timing(warmup=1, steps=2, min_seconds=0.0, max_steps=2), batch)
        out.update({k: timed.get(k) for k in ("first_step_seconds", "step_seconds", "peak_memory_mb",
                                              "memory_method")}, status="ok")
    except Exception as exc:
        out.update(status="oom" if is_oom(exc) else "failed", error=traceback.format_exc(limit=-3)[-600:])
    return out


# --- conformance checks on the device ------------------------------------------------------------


def layer(name: str, device: torch.device, n: int, dim: int = DIM) -> torch.nn.Module:
    torch.manual_seed(0)
    return attentions.build(name, dim=dim, heads=HEADS, max_len=n).to(device)


def padded(device: torch.device, n: int = 37, dim: int = DIM):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, n, dim, generator=g)
    mask = torch.arange(n)[None, :] < torch.tensor([n, n - 11, 5])[:, None]
    noisy = torch.where(mask[..., None], x, 100 * torch.randn(x.shape, generator=g))
    return x.to(device), noisy.to(device), mask.to(device)


def check_large_bf16(name: str, device: torch.device, tiny: bool) -> str:
    """bf16 autocast, long sequence, inputs x 30: forward and backward stay finite."""
    n = 256 if tiny else 4096
    mod = layer(name, device, n, dim=64).train()
    x = (torch.randn(1, n, 64, device=device) * 30).requires_grad_(True)
    mask = torch.arange(n, device=device)[None, :] < n - n // 40
    torch.manual_seed(123)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = mod(x, mask)
    assert torch.isfinite(y).all(), "non-finite output"
    (y.float() * mask[..., None]).square().mean().backward()
    assert torch.isfinite(x.grad).all(), "non-finite input gradient"
    bad = [p for p, t in mod.named_parameters() if t.grad is not None and not torch.isfinite(t.grad).all()]
    assert not bad, f"non-finite gradient of {bad[0]}"
    return f"N = {n}"


def check_padding(name: str, device: torch.device, tiny: bool) -> str:
    """Changing padded content changes no real output, in fp32 and under bf16 autocast."""
    mod = layer(name, device, 64).eval()
    x, noisy, mask = padded(device)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        cast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        with torch.no_grad(), cast:
            torch.manual_seed(123)
            a = mod(x, mask)
            torch.manual_seed(123)
            b = mod(noisy, mask)
        assert torch.isfinite(b).all(), f"non-finite output ({dtype})"
        torch.testing.assert_close(a[mask].float(), b[mask].float(), rtol=tol, atol=tol)
    return "fp32 and bf16 autocast"


def check_fp16_scaler(name: str, device: torch.device, tiny: bool) -> str:
    """fp16 autocast with the gradient scaler: five training steps (a first one may overflow and
    be skipped as the scaler backs off), finite losses, the weights move."""
    if device.type != "cuda":
        raise Skipped("fp16 autocast with a gradient scaler needs CUDA")
    cfg = make_config("listops", "paper", attention=name, device=str(device))
    cfg.train.batch_size, cfg.data.seq_len, cfg.train.precision = 4, 256, "fp16"
    model, batch, _ = benchmark_step(cfg, "eval", device, Precision("fp16", device), total_steps=10)
    model.train()
    step = TrainStep(model, cfg.train, Precision("fp16", device), total_steps=10)
    before = [p.detach().clone() for p in model.parameters()]
    losses = [float(step(batch)[0]) for _ in range(5)]
    assert all(map(lambda v: v == v and abs(v) != float("inf"), losses)), f"losses {losses}"
    scale = step.precision.scaler.get_scale()
    assert 0 < scale < float("inf"), f"scaler scale {scale}"
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), "no weight changed"
    return f"losses {', '.join(f'{v:.3f}' for v in losses)}, scale {scale:g}"


def check_sdpa(device: torch.device, tiny: bool) -> str:
    """softmax impl=fast (SDPA) against impl=reference on padded inputs: outputs and gradients."""
    n = 64 if tiny else 1024
    fast = attentions.build("softmax", dim=DIM, heads=HEADS, max_len=n, impl="fast").to(device).eval()
    ref = attentions.build("softmax", dim=DIM, heads=HEADS, max_len=n, impl="reference").to(device).eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, n, DIM, device=device)
    mask = torch.arange(n, device=device)[None, :] < torch.tensor([n, n - 11, 5], device=device)[:, None]
    grads = []
    for mod in (fast, ref):
        xi = x.clone().requires_grad_(True)
        y = mod(xi, mask)
        (y.sin() * mask[..., None]).sum().backward()
        grads.append((y[mask].detach(), xi.grad[mask]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)
    backends = ""
    if device.type == "cuda":
        on = {"flash": torch.backends.cuda.flash_sdp_enabled(), "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
              "math": torch.backends.cuda.math_sdp_enabled()}
        backends = "; SDPA backends enabled: " + ", ".join(k for k, v in on.items() if v)
    return f"N = {n}, padded, fp32 cores{backends}; info {fast.info()}"


def check_peak_counters(device: torch.device, tiny: bool) -> str:
    """Peak memory restarts from a reset: 96 MiB then, after a reset, 48 MiB are seen as such.
    (Both above glibc's largest mmap threshold, 32 MiB, so on CPU each gets fresh pages rather
    than heap memory an earlier allocation left resident.)"""
    seen = []
    for mib in (96, 48):
        # CUDA counts what is allocated already (cuBLAS workspaces...) in the peak: take it off
        base = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        peak = PeakMemory(device)
        peak.start()
        block = torch.ones(mib * 2**18, device=device)  # float32: mib MiB, every page touched
        seen.append(peak.peak_mb() - base)
        del block
    slack = 2.0 if device.type == "cuda" else 12.0
    assert 96 - slack <= seen[0] <= 96 + slack and 48 - slack <= seen[1] <= 48 + slack, f"peaks {seen} MiB"
    return f"{seen[0]:.1f} MiB then {seen[1]:.1f} MiB ({peak.method})"


class Skipped(Exception):
    """A check that does not apply on this device."""


def run_check(what: str, attention: str | None, fn, *args) -> dict:
    t0 = time.perf_counter()
    out = {"check": what, "attention": attention}
    try:
        out.update(status="pass", detail=fn(*args))
    except Skipped as exc:
        out.update(status="skipped", detail=str(exc))
    except Exception as exc:
        out.update(status="oom" if is_oom(exc) else "fail", detail=f"{type(exc).__name__}: {exc}"[:600])
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # what one check held is not counted against the next
    return out


def checks(names: list[str], device: torch.device, tiny: bool) -> list[dict]:
    out = [run_check("peak memory counters restart from a reset", None, check_peak_counters, device, tiny),
           run_check("SDPA path agrees with the reference softmax", "softmax", check_sdpa, device, tiny)]
    for name in names:
        out.append(run_check("bf16 autocast, long sequence, inputs x 30: finite", name, check_large_bf16, name,
                             device, tiny))
        out.append(run_check("padded content does not leak", name, check_padding, name, device, tiny))
        out.append(run_check("fp16 autocast + gradient scaler trains", name, check_fp16_scaler, name, device, tiny))
    return out


# --- the program ------------------------------------------------------------------------------------


def preflight(device_name: str, tiny: bool) -> dict:
    device = pick_device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(1)  # as `lra bench` times a CPU: several threads stall whenever a core is busy
    names = expand_attentions("all")
    t0 = time.perf_counter()
    out = {"machine": machine(device), "tiny": tiny, "attentions": names}
    out["steps"] = {name: train_steps(name, device, tiny) for name in names}
    out["checks"] = checks(names, device, tiny)
    failed = [c for c in out["checks"] if c["status"] in ("fail", "oom")]
    failed += [{"check": "training steps", "attention": n} for n, s in out["steps"].items() if s["status"] != "ok"]
    out["ok"] = not failed
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lra.preflight", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--tiny", action="store_true", help="toy sizes (the CPU rehearsal)")
    args = p.parse_args(argv)
    die_with_parent()
    result = preflight(args.device, args.tiny)
    atomic_write_text(Path(args.out), json.dumps(result, indent=1, default=str) + "\n")
    print_result(result)
    return 0


def print_result(result: dict) -> None:
    m = result["machine"]
    gpu = m.get("gpu")
    print(f"[preflight] torch {m['env']['torch']}, CUDA {m['cuda'] or '-'} (available: {m['cuda_available']}), "
          f"device {m['env']['device_name']}" + (f", {gpu['memory_mb']} MiB, capability {gpu['capability']}, "
                                                 f"bf16 {gpu['bf16']}" if gpu else ""))
    missing = [k for k, v in m["packages"].items() if v is None]
    print(f"[preflight] optional packages missing: {', '.join(missing) or 'none'}")
    rows = [[name, s["status"], s["precision"], f"{s['batch_size']} x {s['seq_len']}", num(s.get("first_step_seconds")),
             num(s.get("step_seconds")), num(s.get("peak_memory_mb"), ".0f"), (s.get("error") or "").strip()[-80:]]
            for name, s in result["steps"].items()]
    print(tabulate(rows, headers=["attention", "step", "precision", "batch x length", "first step s", "step s",
                                  "peak MiB", "error"]))
    counts: dict = {}
    for c in result["checks"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    skipped = sorted({c["detail"] for c in result["checks"] if c["status"] == "skipped"})
    print("[preflight] checks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f" ({'; '.join(skipped)})" if skipped else ""))
    for c in result["checks"]:
        if c["status"] in ("fail", "oom"):
            print(f"[preflight]   {c['status'].upper()}: {c['check']} [{c['attention'] or '-'}]: {c['detail'][:300]}")
    print(f"[preflight] {'ok' if result['ok'] else 'PROBLEMS FOUND'} in {result['seconds']} s")


def num(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


if __name__ == "__main__":
    sys.exit(main())
