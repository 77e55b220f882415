"""PolaFormer (docs/pola-1d.md): the fast path equals the quadratic reference form and a plain
per-sequence, per-head transcription of the spec, on outputs and gradients, for every ablation, on
sequences and on image grids (2-D convolution), with and without the key positional term."""

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
    {"key_pos": True},
    {"key_pos": True, "polarity": False},
]


def spec_pola(layer, x, mask):
    """docs/pola-1d.md written out literally: one sequence and one head at a time, real keys only."""
    o_opts = layer.options
    B, N, D = x.shape
    H, d = layer.heads, layer.head_dim
    q, k, v = layer.qkv(x).chunk(3, dim=-1)
    if o_opts.key_pos:  # added to every key before the scale; padded keys are dropped below
        k = k + layer.key_position[:N]
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
    if o_opts.dwc and layer.grid is not None and o_opts.dwc_2d:
        o = o + spec_conv2d(layer, v * mask[..., None])
    elif o_opts.dwc:
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


def spec_conv2d(layer, vm):
    """The official module's convolution: each head's d channels as a (d, h, w) image, one
    Conv2d(d, d, K, groups=d) shared by the heads; vm (B, N, D) -> (B, N, D)."""
    B, N, D = vm.shape
    (hh, ww), d, K = layer.grid, layer.head_dim, layer.options.dwc_kernel
    heads = []
    for h in range(layer.heads):
        img = vm[..., h * d:(h + 1) * d].reshape(B, hh, ww, d).permute(0, 3, 1, 2)
        out = F.conv2d(img, layer.dwc.weight, layer.dwc.bias, padding=K // 2, groups=d)
        heads.append(out.permute(0, 2, 3, 1).reshape(B, N, d))
    return torch.cat(heads, dim=-1)


def ids(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "default"


@pytest.mark.parametrize("options", ABLATIONS, ids=ids)
@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (5, (5, 2, 1)), (130, (130, 129, 64))])
def test_linear_form_equals_quadratic_reference(options, N, lengths):
    assert_same_layer_function("pola", {**options, "impl": "fast"}, {**options, "impl": "reference"},
                               N=N, lengths=lengths, x_scale=2.0)


def perturb(layer):
    """Move the parameters off their initial values, so the scale, the power and the key positional
    term are really exercised."""
    with torch.no_grad():
        layer.scale.normal_(0, 0.5)
        layer.power.normal_(0, 1.0)
        if layer.key_position is not None:
            layer.key_position.normal_(0, 1.0)
    return layer


GRID_CASES = [  # (grid, lengths): square and not, without and with (heavy) padding
    ((5, 7), (35, 35, 35)),
    ((8, 8), (64, 40, 3)),
]


@pytest.mark.parametrize("options", ABLATIONS, ids=ids)
def test_layer_equals_literal_spec(options):
    layer = perturb(build("pola", **options))
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


# --- image grids: the official 2-D convolution ----------------------------------------------------

GRID_OPTIONS = [{}, {"key_pos": True}, {"alpha": 7.0, "dwc_kernel": 3}, {"gate": False, "polarity": False}]


@pytest.mark.parametrize("options", GRID_OPTIONS, ids=ids)
@pytest.mark.parametrize("grid,lengths", GRID_CASES, ids=str)
def test_grid_layer_equals_literal_spec(options, grid, lengths):
    """On an image grid the fast path equals the spec with F.conv2d on each head's (d, h, w) image."""
    N = grid[0] * grid[1]
    layer = perturb(build("pola", grid=grid, **options))
    assert isinstance(layer.dwc, torch.nn.Conv2d)
    x, mask = padded_inputs(3, N, 32, lengths, scale=2.0)
    y, grads = outputs_and_grads(layer, x, mask)
    spec_layer = build("pola", grid=grid, **options)
    spec_layer.load_state_dict(layer.state_dict())
    spec_layer.forward = lambda x_, m_: spec_pola(spec_layer, x_, m_)
    y_ref, grads_ref = outputs_and_grads(spec_layer, x, mask)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-11)
    assert grads.keys() == grads_ref.keys() and "dwc.weight" in grads
    for key in grads:
        torch.testing.assert_close(grads[key], grads_ref[key], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("options", GRID_OPTIONS + [{"dwc_2d": False}], ids=ids)
@pytest.mark.parametrize("grid,lengths", GRID_CASES, ids=str)
def test_grid_fast_equals_reference(options, grid, lengths):
    N = grid[0] * grid[1]
    assert_same_layer_function("pola", {**options, "grid": grid}, {**options, "grid": grid, "impl": "reference"},
                               N=N, lengths=lengths, x_scale=2.0)


def test_grid_fast_in_float32_matches_reference():
    layer = perturb(build("pola", grid=(16, 16), key_pos=True, dtype=torch.float32))
    ref = build("pola", grid=(16, 16), key_pos=True, impl="reference")
    ref.load_state_dict(layer.state_dict())
    x, mask = padded_inputs(2, 256, 32, (256, 100), scale=2.0)
    with torch.no_grad():
        torch.testing.assert_close(layer(x.float(), mask)[mask].double(), ref(x, mask)[mask], rtol=1e-4, atol=1e-5)


def conv_only(layer, vm):
    """The layer's convolution term alone (fast path), on a masked v (B, N, D)."""
    with torch.no_grad():
        return layer._conv_fast(vm)


def test_2d_convolution_sees_the_pixel_above_and_1d_does_not():
    grid = (8, 8)
    two_d, one_d = build("pola", grid=grid), build("pola", grid=grid, dwc_2d=False)
    assert two_d.dwc.weight.shape == (16, 1, 5, 5) and one_d.dwc.weight.shape == (32, 1, 5)
    vm = torch.randn(1, 64, 32, dtype=torch.float64)
    above, pixel = 2 * 8 + 3, 3 * 8 + 3  # (row 2, col 3) is right above (row 3, col 3)
    bumped = vm.clone()
    bumped[0, above] += 1.0
    for layer, sees in ((two_d, True), (one_d, False)):
        change = (conv_only(layer, bumped) - conv_only(layer, vm))[0, pixel].abs().max()
        assert (change > 1e-3) == sees, layer.info()
    # and the whole layers differ on the same input
    x, mask = padded_inputs(2, 64, 32, (64, 64))
    with torch.no_grad():
        assert not torch.allclose(two_d(x, mask), one_d(x, mask))


def test_2d_convolution_is_shared_by_the_heads():
    """One (d, K, K) kernel for all heads, as in the official module: the same image in every head
    gives the same convolution output in every head."""
    layer = build("pola", grid=(6, 6))
    vm = torch.randn(2, 36, 16, dtype=torch.float64).repeat(1, 1, 2)  # head 1 = head 0
    out = conv_only(layer, vm)
    torch.testing.assert_close(out[..., :16], out[..., 16:])


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_grid_needs_its_token_count(impl):
    layer = build("pola", grid=(8, 8), impl=impl)
    x, mask = padded_inputs(1, 60, 32, (60,))
    with pytest.raises(ValueError, match="8x8 grid's 64 tokens, got a sequence of 60"):
        layer(x, mask)
    build("pola", grid=(8, 8), dwc_2d=False)(x, mask)  # the 1-D form takes any length
    build("pola", grid=(8, 8), dwc=False)(x, mask)


def test_padded_pixels_do_not_leak_through_the_2d_convolution():
    layer = perturb(build("pola", grid=(8, 8), key_pos=True, dtype=torch.float32))
    x, mask = padded_inputs(2, 64, 32, (64, 29), dtype=torch.float32)
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, mask)[mask], layer(noisy, mask)[mask], rtol=1e-4, atol=1e-5)


def test_info_says_which_convolution_ran():
    assert build("pola").info() == {"dwc": "1d, kernel 5", "key_pos": False, "kernel": "torch"}  # on the CPU
    assert build("pola", grid=(32, 32), max_len=1024).info() == {"dwc": "2d 5x5 over the 32x32 grid", "key_pos": False,
                                                                 "kernel": "torch"}
    assert build("pola", grid=(32, 32), max_len=1024, dwc_2d=False).info()["dwc"] == "1d, kernel 5"
    assert build("pola", grid=(8, 8), dwc_kernel=3, key_pos=True).info() == {"dwc": "2d 3x3 over the 8x8 grid",
                                                                             "key_pos": True, "kernel": "torch"}
    assert build("pola", dwc=False).info()["dwc"] == "off"


# --- the key positional term ------------------------------------------------------------------------

def test_key_position_parameter_and_zero_start():
    layer = build("pola", key_pos=True, max_len=100)
    assert layer.key_position.shape == (100, 32) and torch.all(layer.key_position == 0)
    assert build("pola").key_position is None and "key_position" not in dict(build("pola").named_parameters())
    # zero-initialised: the same function as without it, until it learns
    plain = build("pola")
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "key_position"})
    x, mask = padded_inputs(2, 19, 32, (19, 7))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, mask), plain(x, mask))
        perturb(layer)
        assert not torch.allclose(layer(x, mask)[mask], plain(x, mask)[mask])


def test_key_position_gradient_only_at_real_keys():
    layer = perturb(build("pola", key_pos=True, max_len=40))
    x, mask = padded_inputs(2, 30, 32, (30, 12))
    outputs_and_grads(layer, x, mask)
    g = layer.key_position.grad
    assert torch.all(g[30:] == 0) and g[:12].abs().sum() > 0  # beyond N: unused
    # position 20 is real in sequence 0 only: its gradient comes from there
    layer2 = perturb(build("pola", key_pos=True, max_len=40))
    outputs_and_grads(layer2, x[1:], mask[1:])
    assert torch.all(layer2.key_position.grad[12:] == 0)


# --- the fast path's pieces ------------------------------------------------------------------------

@pytest.mark.parametrize("shape,kernel", [
    ((2, 6, 1, 37), (1, 5)), ((3, 4, 1, 2), (1, 7)), ((2, 6, 5, 7), (5, 5)), ((1, 3, 9, 4), (3, 3)),
    ((2, 2, 3, 3), (7, 7)),
    # 1-D with channels in groups of 16 (the weight gradient from blocks of g^T x): shifts that cross
    # into the next sequence, sequences just longer than the reach, and as long as it (plain sums)
    ((3, 32, 1, 11), (1, 5)), ((2, 48, 1, 4), (1, 7)), ((4, 16, 1, 3), (1, 7)), ((1, 16, 1, 9), (1, 3))])
def test_depthwise_conv_equals_torch(shape, kernel):
    from attentions.pola import depthwise_conv

    torch.manual_seed(0)
    C = shape[1]
    w = torch.randn(C, 1, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, requires_grad=True)
    rows = torch.randn(shape[0], shape[2], shape[3], C, dtype=torch.float64, requires_grad=True)  # (B, h, w, C)
    ours = depthwise_conv(rows.permute(0, 3, 1, 2), w, b)  # channels-last, as the layer calls it
    theirs = F.conv2d(rows.permute(0, 3, 1, 2).contiguous(), w, b, padding=(kernel[0] // 2, kernel[1] // 2), groups=C)
    torch.testing.assert_close(ours, theirs)
    g1 = torch.autograd.grad(ours.sin().sum(), (rows, w, b))
    g2 = torch.autograd.grad(theirs.sin().sum(), (rows, w, b))
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c)


def test_exact_zeros_in_q_and_k_give_the_reference_gradients():
    """|x|^p at x = 0 exactly: value 0, gradients 0 (in x and in p), no NaN from 0 / 0 or 0 log 0."""
    layer = perturb(build("pola"))
    with torch.no_grad():
        layer.qkv.bias.zero_()
    x, mask = padded_inputs(2, 21, 32, (21, 9))
    x[:, ::3] = 0  # q = k = 0 exactly at every third position
    ref = build("pola", impl="reference")
    ref.load_state_dict(layer.state_dict())
    y, grads = outputs_and_grads(layer, x, mask)
    y_ref, grads_ref = outputs_and_grads(ref, x, mask)
    torch.testing.assert_close(y, y_ref)
    for key in grads:
        assert torch.isfinite(grads[key]).all(), key
        torch.testing.assert_close(grads[key], grads_ref[key], rtol=1e-7, atol=1e-9)
