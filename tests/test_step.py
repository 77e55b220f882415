"""The training step every command runs (lra/core/step.py): compiled, it computes what the eager
step computes."""

import pytest
import torch

from lra.core.presets import make_config
from lra.core.step import Precision, benchmark_step


def losses(cfg, steps: int = 3):
    device = torch.device("cpu")
    model, batch, step = benchmark_step(cfg, "train", device, Precision("fp32", device), total_steps=10)
    out = [float(step()[0]) for _ in range(steps)]
    return out, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("attention", ["pola-a3"])
def test_the_compiled_step_gives_the_eager_steps_loss(attention):
    cfg = make_config("listops", "paper", attention=attention, device="cpu")
    cfg.data.seq_len, cfg.train.batch_size = 48, 3
    cfg.model.dropout = 0.0  # compiled and eager kernels draw dropout masks differently
    cfg.model.layers, cfg.model.dim, cfg.model.ffn_dim, cfg.model.head_hidden = 1, 16, 32, 16  # compiles faster
    eager_loss, eager_params = losses(cfg)
    cfg.train.compile = True
    compiled_loss, compiled_params = losses(cfg)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled_params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert eager_loss[-1] != eager_loss[0]  # the steps really trained
