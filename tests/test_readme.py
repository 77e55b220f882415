"""The README's promises: its example attention is real code that registers and works, and its two
fresh-machine commands are the ones CI runs."""

import re
from pathlib import Path

import torch

import attentions

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_example_attention_registers_and_respects_padding():
    (code,) = re.findall(r"## Adding an attention.*?```python\n(.*?)```", README, re.S)
    try:
        exec(compile(code, "README.md", "exec"), {})
        assert "my-attention" in attentions.available()
        layer = attentions.build("my-attention", dim=16, heads=2, max_len=32).eval()
        x = torch.randn(2, 12, 16)
        mask = torch.arange(12)[None, :] < torch.tensor([[12], [7]])
        noisy = torch.where(mask[..., None], x, 50 * torch.randn_like(x))
        torch.testing.assert_close(layer(x, mask)[mask], layer(noisy, mask)[mask])
        assert layer.linear_memory
    finally:
        attentions.unregister("my-attention")


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^    (python -m pip install .*pytest.*)$", README, re.M)
    assert len(commands) == 1
    assert commands[0] in (ROOT / ".ci" / "run").read_text()
