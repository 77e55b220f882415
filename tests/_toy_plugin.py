"""A real attention plugin for the harness tests: a package on disk advertised under the
`lra.attentions` entry-point group, loaded by the registry in this process and by every measuring
or training subprocess (through PYTHONPATH), exactly as a third-party package would be.

    toy-linear   elu(x)+1 linear attention (Katharopoulos et al., 2020), O(N d^2)
    toy-crash    raises a RuntimeError in its core: a broken method must not end a sweep
    toy-exit     ends its process in its core (exit status 3): a crash that takes the process with it
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

NAMES = ("toy-linear", "toy-crash", "toy-exit")

SOURCE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F

    from attentions import AttentionBase, register


    @register("toy-linear", complexity="O(N d^2)")
    class ToyLinear(AttentionBase):
        """elu+1 linear attention (test plugin)."""

        def core(self, q, k, v, mask):
            m = mask[:, None, :, None].to(q.dtype)
            q, k = F.elu(q) + 1, (F.elu(k) + 1) * m
            kv = k.transpose(-2, -1) @ (v * m)
            z = q @ k.sum(2, keepdim=True).transpose(-2, -1)
            return (q @ kv) / z.clamp_min(1e-6)


    @register("toy-crash")
    class ToyCrash(AttentionBase):
        """Always fails (test plugin)."""

        def core(self, q, k, v, mask):
            raise RuntimeError("toy-crash: deliberate failure in the attention core")


    @register("toy-exit")
    class ToyExit(AttentionBase):
        """Ends its process (test plugin)."""

        def core(self, q, k, v, mask):
            import os

            os._exit(3)
''')


def install(root: Path) -> Path:
    """Write the plugin package and its entry-point metadata under `root`; return the folder to
    put on sys.path / PYTHONPATH."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lra_toy_plugin.py").write_text(SOURCE)
    info = root / "lra_toy_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lra-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lra.attentions]\ntoy = lra_toy_plugin\n")
    return root


def load(root: Path) -> None:
    import attentions

    sys.path.insert(0, str(root))
    attentions.load_plugins(force=True)


def unload(root: Path) -> None:
    import attentions

    for name in NAMES:
        attentions.unregister(name)
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.modules.pop("lra_toy_plugin", None)
