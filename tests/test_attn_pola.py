"""PolaFormer (pola-1d.md): the linear form equals the quadratic reference form and a plain
per-sequence, per-head transcription of the spec, on outputs and gradients, for every ablation."""

import math

import pytest
import torch
import torch.nn.functional as F

import attentions
from attn_check import assert_same_layer_function, build, outputs_and_grads, padded_inputs

ABLATIONS = [
    {},
    {"alpha": 5.0},
    {"alpha": 7.0, "dwc_kernel": 3},
    {"polarity": False},
    {"gate": False},
    {"dwc": False},
    {"learnable_power": False},
    {"gate_init": "zeros"},
    {"polarity": False, "gate": False, "dwc": False},
]


def spec_pola(layer, x, mask):
    """pola-1d.md written out literally: one sequence and one head at a time, real keys only."""
    o_opts = layer.options
    B, N, D = x.shape
    H, d = layer.heads, layer.head_dim
    q, k, v = layer.qkv(x).chunk(3, dim=-1)
    s = F.softplus(layer.scale)
    p = 1 + o_opts.alpha * torch.sigmoid(layer.power)
    rows = []
    for b in range(B):
        real = mask[b].nonzero().squeeze(1)
        n = len(real)
        heads = []
        for h in range(H):
            c = slice(h * d, (h + 1) * d)
            qh, kh, vh = q[b, :, c] / s[c], k[b, real, c] / s[c], v[b, real, c]
            ph = p[h]
            qp, qn = torch.relu(qh) ** ph, torch.relu(-qh) ** ph
            kp, kn = torch.relu(kh) ** ph, torch.relu(-kh) ** ph
            if o_opts.polarity:
                phi_k = torch.cat([kp, kn], dim=1)
                a_s = torch.cat([qp, qn], dim=1) @ phi_k.T
                a_o = torch.cat([qn, qp], dim=1) @ phi_k.T
                a_s = a_s / (a_s.sum(1, keepdim=True) + n * o_opts.eps)
                a_o = a_o / (a_o.sum(1, keepdim=True) + n * o_opts.eps)
                heads.append(torch.cat([a_s @ vh[:, : d // 2], a_o @ vh[:, d // 2:]], dim=1))
            else:
                a = qp @ kp.T
                heads.append(a / (a.sum(1, keepdim=True) + n * o_opts.eps) @ vh)
        rows.append(torch.cat(heads, dim=1))
    o = torch.stack(rows)
    if o_opts.dwc:
        vm = v * mask[..., None]
        K = o_opts.dwc_kernel
        w, bias = layer.dwc.weight[:, 0, :], layer.dwc.bias  # (D, K)
        conv = bias.expand(B, N, D).clone()
        for t in range(K):
            shift = t - K // 2  # output i reads input i + shift, zero outside the sequence
            src = torch.zeros_like(vm)
            if shift >= 0:
                src[:, : N - shift] = vm[:, shift:]
            else:
                src[:, -shift:] = vm[:, : N + shift]
            conv = conv + src * w[:, t]
        o = o + conv
    if o_opts.gate:
        o = o * layer.gate(x)
    return layer.out(o)


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (5, (5, 2, 1)), (130, (130, 129, 64))])
def test_linear_form_equals_quadratic_reference(options, N, lengths):
    assert_same_layer_function("pola", {**options, "impl": "fast"}, {**options, "impl": "reference"},
                               N=N, lengths=lengths, x_scale=2.0)


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_layer_equals_literal_spec(options):
    layer = build("pola", **options)
    with torch.no_grad():  # move off the init values so the scale and power are really exercised
        layer.scale.normal_(0, 0.5)
        layer.power.normal_(0, 1.0)
    x, mask = padded_inputs(3, 23, 32, (23, 11, 1), scale=2.0)
    y, grads = outputs_and_grads(layer, x, mask)
    spec_layer = build("pola", **options)
    spec_layer.load_state_dict(layer.state_dict())
    spec_layer.forward = lambda x_, m_: spec_pola(spec_layer, x_, m_)
    y_ref, grads_ref = outputs_and_grads(spec_layer, x, mask)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-11)
    assert grads.keys() == grads_ref.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], grads_ref[key], rtol=1e-8, atol=1e-10)


def test_linear_form_in_float32_matches_reference():
    """The production dtype: float32 linear form against the float64 reference."""
    layer = build("pola", dtype=torch.float32)
    ref = build("pola", impl="reference")
    ref.load_state_dict(layer.state_dict())
    x, mask = padded_inputs(2, 300, 32, (300, 77), scale=2.0)
    with torch.no_grad():
        torch.testing.assert_close(layer(x.float(), mask)[mask].double(), ref(x, mask)[mask], rtol=1e-4, atol=1e-5)


def test_parameters_and_initial_values():
    layer = build("pola", dim=64, heads=2, alpha=5.0)
    assert layer.scale.shape == (64,) and torch.all(layer.scale == 0)
    assert layer.power.shape == (2, 32) and isinstance(layer.power, torch.nn.Parameter)
    torch.testing.assert_close(layer.exponent(), torch.full((2, 32), 3.5, dtype=torch.float64))  # 1 + alpha/2
    assert layer.dwc.kernel_size == (5,) and layer.dwc.groups == 64 and layer.dwc.bias is not None
    assert layer.gate.weight.shape == (64, 64)
    fixed = build("pola", learnable_power=False, alpha=3.0)
    assert "power" not in dict(fixed.named_parameters()) and "power" in dict(fixed.named_buffers())
    torch.testing.assert_close(fixed.exponent(), torch.full((2, 16), 2.5, dtype=torch.float64))
    bare = build("pola", gate=False, dwc=False)
    assert bare.gate is None and bare.dwc is None


def test_power_stays_in_range():
    layer = build("pola", alpha=7.0)
    with torch.no_grad():
        layer.power.copy_(torch.linspace(-10, 10, layer.power.numel()).view_as(layer.power))
    p = layer.exponent()
    assert p.min() > 1 and p.max() < 8 and p.max() > 7.9


@pytest.mark.parametrize("init,check", [
    ("zeros", lambda w: torch.all(w == 0)),
    ("ones", lambda w: torch.all(w == 1)),
    ("uniform", lambda w: w.min() >= 0 and w.max() <= 1 and w.std() > 0.2),
    ("normal", lambda w: abs(w.std() - 1) < 0.1),
    ("kaiming", lambda w: w.abs().max() <= 1 / math.sqrt(32) + 1e-6),
])
def test_gate_initialisations(init, check):
    assert check(build("pola", gate_init=init, dtype=torch.float32).gate.weight)


def test_presets_fix_alpha():
    for name, alpha in [("pola-a3", 3.0), ("pola-a5", 5.0), ("pola-a7", 7.0)]:
        assert attentions.resolve(name).alpha == alpha
        assert attentions.get(name).base == "pola"
    assert attentions.resolve("pola").alpha == 3.0


@pytest.mark.parametrize("bad,match", [
    ({"alpha": 0}, "alpha"), ({"alpha": -1}, "alpha"), ({"dwc_kernel": 4}, "odd"), ({"dwc_kernel": 0}, "odd"),
    ({"eps": 0}, "eps"), ({"gate_init": "xavier"}, "one of"), ({"impl": "quadratic"}, "one of"),
])
def test_bad_options_fail_before_any_work(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("pola", **bad)


def test_odd_head_dim_needs_polarity_off():
    with pytest.raises(ValueError, match="even"):
        attentions.build("pola", dim=6, heads=2, max_len=8)
    layer = attentions.build("pola", dim=6, heads=2, max_len=8, polarity=False)
    assert layer(torch.randn(1, 8, 6), torch.ones(1, 8, dtype=torch.bool)).shape == (1, 8, 6)


def test_attention_maps_are_row_stochastic_over_real_keys():
    layer = build("pola")
    x, mask = padded_inputs(2, 19, 32, (19, 7))
    maps = layer.attention_maps(x, mask)
    assert list(maps) == ["same-sign", "opposite-sign"] and maps["same-sign"].shape == (2, 2, 19, 19)
    for a in maps.values():
        assert torch.all(a >= 0) and torch.all(a[1, :, :, 7:] == 0)
        sums = a.sum(-1)[mask[:, None].expand(-1, 2, -1)]
        assert torch.all(sums <= 1) and torch.all(sums > 0.99)  # 1 up to the n * eps term
    assert list(build("pola", polarity=False).attention_maps(x, mask)) == ["attention"]


def test_switches_change_the_function():
    """Each ablation really removes its term (the comparisons above would pass for a no-op switch)."""
    x, mask = padded_inputs(2, 17, 32, (17, 9))
    base = build("pola")
    with torch.no_grad():
        y = base(x, mask)
        for options in ({"gate": False}, {"dwc": False}, {"polarity": False}, {"alpha": 5.0}):
            other = build("pola", **options)
            other.load_state_dict(base.state_dict(), strict=False)
            assert not torch.allclose(other(x, mask), y), options


@pytest.mark.parametrize("K,N", [(5, 37), (3, 1), (7, 4), (35, 50)])
def test_sequence_conv_equals_torch_depthwise_conv1d(K, N):
    from attentions.base import sequence_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, K, padding=K // 2, groups=6).double()
    x = torch.randn(2, N, 6, dtype=torch.float64, requires_grad=True)
    ours = sequence_conv(x, conv.weight[:, 0, :].T, conv.bias)
    theirs = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(ours, theirs)
    g1 = torch.autograd.grad(ours.sin().sum(), (x, conv.weight))
    g2 = torch.autograd.grad(theirs.sin().sum(), (x, conv.weight))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
