"""The attention registry: names, presets, typed options, errors, plugins."""

import sys
import textwrap
from dataclasses import dataclass
from typing import Literal, Optional

import pytest
import torch

import attentions
from attentions import AttentionBase


def test_required_and_sorted():
    names = attentions.available()
    assert "softmax" in names
    assert names == sorted(names)


def test_unknown_name_lists_choices_and_suggests():
    with pytest.raises(ValueError) as err:
        attentions.build("sofmax", dim=64, heads=2, max_len=16)
    msg = str(err.value)
    assert "did you mean 'softmax'" in msg and "Valid attentions:" in msg and "softmax" in msg


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError) as err:
        attentions.build("softmax", dim=64, heads=2, max_len=16, dropuot=0.1)
    assert "did you mean 'dropout'" in str(err.value) and "impl" in str(err.value)


def test_option_types_and_ranges_are_checked():
    with pytest.raises(ValueError, match="must be a number"):
        attentions.build("softmax", dim=64, heads=2, max_len=16, dropout="lots")
    with pytest.raises(ValueError, match="one of"):
        attentions.build("softmax", dim=64, heads=2, max_len=16, impl="flash")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        attentions.build("softmax", dim=64, heads=2, max_len=16, dropout=1.5)
    with pytest.raises(ValueError, match="divisible|multiple"):
        attentions.build("softmax", dim=63, heads=2, max_len=16)


def test_strings_from_the_command_line_are_converted():
    opts = attentions.resolve("softmax", dropout="0.25", impl="reference")
    assert opts.dropout == 0.25 and opts.impl == "reference"


@pytest.fixture
def toy_attention():
    """A variant registered the way a user would add one, removed afterwards."""

    @attentions.register("toy-mean", complexity="O(N d)", presets={"toy-mean-x2": {"scale": 2.0}})
    class ToyMean(AttentionBase):
        """Mean of the real values, times a scale (a test double of the registry, not of torch)."""

        @dataclass
        class Options:
            scale: float = 1.0
            mode: Literal["a", "b"] = "a"
            limit: Optional[int] = None
            flag: bool = False

        def core(self, q, k, v, mask):
            m = mask[:, None, :, None].float()
            mean = (v * m).sum(2, keepdim=True) / m.sum(2, keepdim=True)
            return self.options.scale * mean.expand_as(v)

    yield ToyMean
    attentions.unregister("toy-mean")
    attentions.unregister("toy-mean-x2")


def test_register_presets_and_typed_options(toy_attention):
    assert {"toy-mean", "toy-mean-x2"} <= set(attentions.available())
    assert attentions.resolve("toy-mean-x2").scale == 2.0
    assert attentions.resolve("toy-mean-x2", scale=3).scale == 3.0  # explicit options beat the preset
    o = attentions.resolve("toy-mean", limit="none", flag="true", mode="b")
    assert o.limit is None and o.flag is True and o.mode == "b"
    assert attentions.resolve("toy-mean", limit="7").limit == 7
    with pytest.raises(ValueError, match="true or false"):
        attentions.resolve("toy-mean", flag="maybe")
    layer = attentions.build("toy-mean-x2", dim=8, heads=2, max_len=4)
    assert isinstance(layer, toy_attention) and layer.options.scale == 2.0
    e = attentions.get("toy-mean-x2")
    assert e.base == "toy-mean" and "scale=2.0" in e.description


def test_name_clash_with_another_class_is_refused(toy_attention):
    with pytest.raises(ValueError, match="already registered"):
        @attentions.register("toy-mean")
        class Other(AttentionBase):
            """Another class under a taken name."""


def test_entry_point_plugin(tmp_path, monkeypatch):
    """A third-party distribution advertising the lra.attentions group is loaded by load_plugins."""
    (tmp_path / "my_lra_plugin.py").write_text(textwrap.dedent('''
        import attentions
        from attentions import AttentionBase

        @attentions.register("plugin-identity")
        class PluginIdentity(AttentionBase):
            """Returns v unchanged."""
            def core(self, q, k, v, mask):
                return v
    '''))
    dist = tmp_path / "my_lra_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-lra-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lra.attentions]\nidentity = my_lra_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        attentions.load_plugins(force=True)
        assert "plugin-identity" in attentions.available()
        layer = attentions.build("plugin-identity", dim=8, heads=2, max_len=4)
        x = torch.randn(2, 4, 8)
        assert layer(x, torch.ones(2, 4, dtype=torch.bool)).shape == x.shape
    finally:
        attentions.unregister("plugin-identity")
        sys.modules.pop("my_lra_plugin", None)


def test_broken_plugin_warns_instead_of_crashing(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lra.attentions]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="broken"):
        attentions.load_plugins(force=True)
    assert "softmax" in attentions.available()


def test_a_conformance_failure_says_what_to_add():
    """A new attention registered without its cost, or without 'Paper:' in its docstring, learns what
    to write, not just 'assert False'."""
    from tests import test_attn_conformance as conformance

    def make(name, **kwargs):
        @attentions.register(name, **kwargs)
        class Undocumented(attentions.AttentionBase):
            """Test attention that says nothing of its source."""

            def core(self, q, k, v, mask):
                return v

    try:
        make("toyz-nocost")
        with pytest.raises(AssertionError, match=r'register it with its cost, e.g. @attentions.register\("toyz-nocost"'):
            conformance.test_documented_equation_options_and_complexity("toyz-nocost")
        make("toyz-nopaper", complexity="O(N)")
        with pytest.raises(AssertionError, match="add a line 'Paper: <authors, title"):
            conformance.test_documented_equation_options_and_complexity("toyz-nopaper")
    finally:
        for name in ("toyz-nocost", "toyz-nopaper"):
            if name in attentions.available():
                attentions.unregister(name)
