"""Performer FAVOR+: orthogonal chi-norm features; the estimate of softmax(q k / sqrt(d)) improves
as features grow (fixed seed); features are a seeded buffer, redrawn only when asked, in training;
the stabiliser follows the port's performer-pytorch rule (a transcription of it below), and the
fast form equals the reference form on outputs and gradients."""

import math

import pytest
import torch

import attentions
from attentions.base import quadratic_linear_attention
from attentions.performer import favor_features_reference, orthogonal_gaussian
from attentions.softmax import softmax_reference
from attn_check import assert_same_layer_function, build, padded_inputs


def test_blocks_are_orthogonal_with_gaussian_row_norms():
    torch.manual_seed(0)
    w = orthogonal_gaussian(80, 16).double()
    for i in range(0, 80, 16):
        block = w[i:i + 16]
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram), atol=1e-5, rtol=0)
    norms = torch.cat([orthogonal_gaussian(128, 16) for _ in range(20)]).norm(dim=1)
    assert abs(norms.square().mean().item() - 16) < 1.0  # chi(16): E|w|^2 = d


def performer_error(m, q, k, v, mask):
    torch.manual_seed(1)
    w = orthogonal_gaussian(m, q.shape[-1]).double()
    s = q.shape[-1] ** -0.25
    phi_q = favor_features_reference(q * s, w, mask, True, "wx", 1e-4)
    phi_k = favor_features_reference(k * s, w, mask, False, "wx", 1e-4)
    out = quadratic_linear_attention(phi_q, phi_k, v, mask, eps=0.0)[0]
    sel = mask[:, None].expand(-1, q.shape[1], -1)
    ref = softmax_reference(q, k, v, mask)
    return ((out - ref)[sel].norm() / ref[sel].norm()).item()


def test_error_against_softmax_falls_as_features_grow():
    torch.manual_seed(0)
    B, H, N, d = 2, 2, 40, 16
    q, k = (torch.randn(B, H, N, d, dtype=torch.float64) * 0.3 for _ in range(2))
    v = torch.randn(B, H, N, d, dtype=torch.float64)
    mask = torch.arange(N)[None] < torch.tensor([40, 23])[:, None]
    err = [performer_error(m, q, k, v, mask) for m in (16, 256, 4096)]
    assert err[0] > err[1] > err[2] and err[2] < 0.03


def test_temperature_is_one_over_sqrt_d():
    """The layer estimates softmax(q . k / sqrt(d)), not the port's softmax(q . k / d)."""
    torch.manual_seed(0)
    layer = attentions.build("performer", dim=4, heads=1, max_len=2, features=20000).double()
    q = torch.tensor([[[[1.0, 0, 0, 0]]]], dtype=torch.float64)
    k = torch.tensor([[[[2.0, 0, 0, 0], [-2.0, 0, 0, 0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0], [0.0]]]], dtype=torch.float64).expand(1, 1, 2, 4)
    full = torch.ones(1, 2, dtype=torch.bool)
    out = layer.core(q, k, v, full)[0, 0, 0, 0].item()
    assert abs(out - torch.sigmoid(torch.tensor(2.0)).item()) < 0.02  # scores +-1: weight 0.88
    assert abs(out - torch.sigmoid(torch.tensor(1.0)).item()) > 0.1  # the port's scores +-0.5: 0.73


def test_features_are_a_seeded_buffer_redrawn_only_on_request_in_training():
    torch.manual_seed(3)
    a = attentions.build("performer", dim=32, heads=2, max_len=16, features=40)
    torch.manual_seed(3)
    b = attentions.build("performer", dim=32, heads=2, max_len=16, features=40)
    assert torch.equal(a.projection, b.projection) and a.projection.shape == (40, 16)
    assert "projection" in a.state_dict() and all(p is not a.projection for p in a.parameters())
    x, mask = torch.randn(1, 16, 32), torch.ones(1, 16, dtype=torch.bool)
    before = a.projection.clone()
    a.train()(x, mask)
    assert torch.equal(a.projection, before)  # redraw is off by default
    r = attentions.build("performer", dim=32, heads=2, max_len=16, redraw=True)
    before = r.projection.clone()
    r.eval()(x, mask)
    assert torch.equal(r.projection, before)
    r.train()(x, mask)
    assert not torch.equal(r.projection, before)


def test_huge_inputs_stay_finite():
    layer = attentions.build("performer", dim=32, heads=2, max_len=64)
    x = torch.randn(2, 64, 32) * 1e3
    mask = torch.arange(64)[None] < torch.tensor([64, 10])[:, None]
    assert torch.isfinite(layer(x, mask)).all()


@pytest.mark.parametrize("bad,match", [({"features": 0}, "features"), ({"kernel_eps": 0}, "kernel_eps"),
                                       ({"stabiliser": "max"}, "stabiliser")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        attentions.resolve("performer", **bad)


# --- the reference rule, transcribed from the port's vendored performer-pytorch -------------------


def port_softmax_kernel(data, projection, is_query, eps=1e-4):
    """`softmax_kernel` of performer-pytorch as the Skyformer port vendors it (models/performer.py),
    written out again: features of data (B, H, N, d) for projection (m, d)."""
    normalizer = data.shape[-1] ** -0.25
    ratio = projection.shape[0] ** -0.5
    data_dash = torch.einsum("bhnd,md->bhnm", normalizer * data, projection)
    diag = ((data ** 2).sum(-1) / 2.0 * normalizer ** 2)[..., None]
    if is_query:
        stab = torch.max(data_dash, dim=-1, keepdim=True).values
    else:
        stab = torch.max(data_dash)  # one number for the whole batch
    return ratio * (torch.exp(data_dash - diag - stab) + eps)


def port_performer(q, k, v, mask, projection):
    """The port's PerformerAttention.forward + FastAttention + linear_attention, except that q and
    k are not divided by d^(1/4) before the kernel divides them again (the port's temperature bug,
    fixed on purpose and tested in test_temperature_is_one_over_sqrt_d)."""
    m = mask[:, None, :, None].to(q.dtype)
    phi_q = port_softmax_kernel(q, projection, True)
    phi_k = port_softmax_kernel(k * m, projection, False)
    v = v * m
    k_sum = phi_k.sum(-2)
    d_inv = 1.0 / torch.einsum("bhnf,bhf->bhn", phi_q, k_sum)
    context = torch.einsum("bhnf,bhne->bhfe", phi_k, v)
    return torch.einsum("bhfe,bhnf,bhn->bhne", context, phi_q, d_inv)


def layer_and_qkv(B, N, lengths, scale=1.0, seed=0, **options):
    layer = build("performer", dim=32, heads=2, max_len=N, features=40, **options)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, 2, N, 16, generator=g, dtype=torch.float64) * scale for _ in range(3))
    mask = torch.arange(N)[None] < torch.tensor(lengths)[:, None]
    return layer, q, k, v, mask


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_wx_batch_is_the_port_rule_exactly(impl):
    """Without padding (the port's padded keys leak into its denominator), stabiliser=wx-batch is
    the port's computation, batch-wide key maximum included."""
    layer, q, k, v, mask = layer_and_qkv(3, 29, (29, 29, 29), scale=1.5, stabiliser="wx-batch", impl=impl)
    ref = port_performer(q, k, v, mask, layer.projection.double())
    torch.testing.assert_close(layer.core(q, k, v, mask), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_default_is_the_port_rule_per_sequence(impl):
    """The default (stabiliser=wx) is the port's rule applied to each (sequence, head) on its own,
    padding cut off: the port's output for a batch of one unpadded sequence with one head (the
    port's key maximum spans heads too; the JAX code it transcribes takes it per head)."""
    lengths = (29, 17, 5)
    layer, q, k, v, mask = layer_and_qkv(3, 29, lengths, scale=1.5, impl=impl)
    assert layer.options.stabiliser == "wx"
    out = layer.core(q, k, v, mask)
    w = layer.projection.double()
    for b, n in enumerate(lengths):
        for h in range(2):
            one = port_performer(*(t[b:b + 1, h:h + 1, :n] for t in (q, k, v)), mask[b:b + 1, :n], w)
            torch.testing.assert_close(out[b:b + 1, h:h + 1, :n], one, rtol=1e-10, atol=1e-12)


def test_batch_wide_maximum_couples_sequences_and_the_default_does_not():
    """wx-batch: a sequence's output changes with its batch neighbour; wx: it does not."""
    for stabiliser, coupled in (("wx-batch", True), ("wx", False)):
        layer, q, k, v, mask = layer_and_qkv(2, 20, (20, 20), scale=1.5, stabiliser=stabiliser)
        k2 = k.clone()
        k2[1] *= 2.0  # another neighbour, with larger w . k
        a, b = layer.core(q, k, v, mask)[0], layer.core(q, k2, v, mask)[0]
        assert (not torch.allclose(a, b, rtol=1e-6, atol=0)) == coupled, stabiliser


def test_logit_rule_differs_through_the_eps_floor_only():
    """The two stabilisers give different outputs with the 1e-4 floor and the same output when the
    floor is negligible (the stabiliser then cancels): the difference is the floor's weight."""
    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    outs = {}
    for eps in (1e-4, 1e-15):
        for st in ("wx", "logit"):
            layer, q, k, v, mask = layer_and_qkv(2, 40, (40, 23), scale=2.0, stabiliser=st, kernel_eps=eps)
            outs[eps, st] = layer.core(q, k, v, mask)[mask[:, None].expand(-1, 2, -1)]
    assert rel(outs[1e-4, "logit"], outs[1e-4, "wx"]) > 0.05
    assert rel(outs[1e-15, "logit"], outs[1e-15, "wx"]) < 1e-7


@pytest.mark.parametrize("stabiliser", ["wx", "wx-batch", "logit"])
@pytest.mark.parametrize("N,lengths", [(37, (37, 20, 1)), (5, (5, 2, 3))])
def test_fast_form_equals_reference_form(stabiliser, N, lengths):
    assert_same_layer_function("performer", {"stabiliser": stabiliser, "impl": "fast"},
                               {"stabiliser": stabiliser, "impl": "reference"}, N=N, lengths=lengths, x_scale=2.0)


def test_padded_keys_stay_out_with_huge_padded_content():
    layer = build("performer", dim=32, heads=2, max_len=30, stabiliser="logit")
    x, mask = padded_inputs(2, 30, 32, (30, 9))
    noisy = torch.where(mask[..., None], x, 1e4 * torch.randn_like(x))
    with torch.no_grad():
        a, b = layer(x, mask), layer(noisy, mask)
    assert torch.isfinite(b).all()
    torch.testing.assert_close(a[mask], b[mask])
