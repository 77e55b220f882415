"""Shared fixtures. Datasets are written by the tests in the published formats; nothing is
downloaded and nothing is mocked."""

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def listops_dir(tmp_path_factory):
    """A small ListOps set in the release layout, from the suite's own generator."""
    import tasks

    root = tmp_path_factory.mktemp("listops-data")
    tasks.get("listops").generate(root, seed=3, train=320, val=64, test=64, min_length=10, max_length=120, workers=2)
    return root


@pytest.fixture
def plugin(tmp_path_factory, monkeypatch):
    """The toy attentions of tests/_toy_plugin.py, installed as a real entry-point plugin, registered
    here and visible to every subprocess through PYTHONPATH."""
    import _toy_plugin

    root = _toy_plugin.install(tmp_path_factory.mktemp("plugin"))
    _toy_plugin.load(root)
    monkeypatch.setenv("PYTHONPATH", str(root))
    yield root
    _toy_plugin.unload(root)


@pytest.fixture
def toy_with_presets():
    """Registers `make(name)`: an attention with option `a` and presets name-a1 (= the defaults,
    so an alias of `name`) and name-a2; unregistered after the test."""
    from dataclasses import dataclass

    import attentions
    from attentions import AttentionBase

    made = []

    def make(name: str) -> None:
        @attentions.register(name, presets={f"{name}-a1": {"a": 1}, f"{name}-a2": {"a": 2}})
        class Toy(AttentionBase):
            """Test attention with an option and two presets."""

            @dataclass
            class Options:
                a: int = 1

            def core(self, q, k, v, mask):
                return v

        made.extend([name, f"{name}-a1", f"{name}-a2"])

    yield make
    for name in made:
        attentions.unregister(name)
