"""The README's promises: its example attention is real code that registers, works and passes the
conformance suite as written; its install lines keep CUDA off a CPU machine; its two
fresh-machine commands are the ones CI runs."""

import importlib
import inspect
import re
import sys
from pathlib import Path

import torch

import attentions
from tests import test_attn_conformance as conformance

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def example_code() -> str:
    (code,) = re.findall(r"## Adding an attention.*?```python\n(.*?)```", README, re.S)
    return code


def test_the_readme_example_attention_registers_and_respects_padding():
    code = example_code()
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


def test_the_readme_example_passes_every_conformance_check_as_written(tmp_path, monkeypatch):
    """Pasted as is into a file of its own (as a user would in attentions/), the example passes
    every check of tests/test_attn_conformance.py that takes an attention name."""
    (tmp_path / "readme_attention.py").write_text(example_code())
    monkeypatch.syspath_prepend(str(tmp_path))
    checks = [fn for n, fn in sorted(vars(conformance).items())
              if n.startswith("test_") and "name" in inspect.signature(fn).parameters]
    assert len(checks) >= 8
    try:
        importlib.import_module("readme_attention")
        for check in checks:
            extra = {"device": "cpu"} if "device" in inspect.signature(check).parameters else {}
            check(name="my-attention", **extra)
    finally:
        attentions.unregister("my-attention")
        sys.modules.pop("readme_attention", None)


def test_the_readme_says_what_the_conformance_suite_requires():
    section = README[README.index("## Adding an attention"):]
    for requirement in ("Paper:", "(type, default)", 'complexity="O(', "padded", "bf16", "linear_memory"):
        assert requirement in section, requirement


def test_install_lines_keep_cuda_off_a_cpu_machine():
    """PyPI's Linux torch wheel is the CUDA build (and about 20 CUDA packages): the CPU line must
    name PyTorch's CPU index; the GPU line is there too."""
    lines = re.findall(r"^    (python -m pip install torch\S* .*)$", README, re.M)
    cpu = [line for line in lines if "CPU" in line.split("#")[-1]]
    gpu = [line for line in lines if "GPU" in line.split("#")[-1]]
    assert cpu and all("--index-url https://download.pytorch.org/whl/cpu" in line for line in cpu), lines
    assert gpu and not any("/whl/cpu" in line for line in gpu), lines


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^    (python -m pip install .*pytest.*)$", README, re.M)
    assert len(commands) == 1
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_gitignore_ignores_no_tracked_file_and_keeps_user_folders_out():
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return  # not a git checkout (an unpacked copy): nothing to check
    tracked_but_ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT,
                                         capture_output=True, text=True, check=True).stdout.split()
    assert tracked_but_ignored == []
    ignored = subprocess.run(["git", "check-ignore", "output/runs/x.json", "data/x", "results/reference/runs/x.json"],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == ["output/runs/x.json", "data/x"]
