"""Helpers for the attention exactness tests (imported by tests/test_attn_*.py; not a test module)."""

from __future__ import annotations

import torch

import attentions


def padded_inputs(B: int, N: int, dim: int, lengths, seed: int = 1, dtype=torch.float64, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, N, dim, generator=g, dtype=torch.float64) * scale).to(dtype)
    mask = torch.arange(N)[None, :] < torch.tensor(lengths)[:B, None]
    return x, mask


def build(name: str, dim: int = 32, heads: int = 2, max_len: int = 256, seed: int = 0, dtype=torch.float64, **options):
    torch.manual_seed(seed)
    return attentions.build(name, dim=dim, heads=heads, max_len=max_len, **options).to(dtype).eval()


def outputs_and_grads(layer, x, mask, seed: int = 123):
    """Output on real positions, and gradients of a non-trivial loss of it w.r.t. x and every parameter."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = layer(x, mask)
    (y.sin() * mask[..., None]).sum().backward()
    grads = {"x": x.grad[mask]}
    grads.update({n: p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return y[mask].detach(), grads


def assert_same_layer_function(name: str, a: dict, b: dict, *, B=3, N=37, lengths=(37, 20, 1), dim=32, heads=2,
                               max_len=256, rtol=1e-7, atol=1e-9, x_scale=1.0, same_grad_keys=True):
    """Two option sets of `name` with the same weights compute the same function (float64):
    outputs on real tokens and gradients w.r.t. the input and every parameter."""
    la = build(name, dim=dim, heads=heads, max_len=max_len, **a)
    lb = build(name, dim=dim, heads=heads, max_len=max_len, **b)
    lb.load_state_dict(la.state_dict())
    x, mask = padded_inputs(B, N, dim, lengths, scale=x_scale)
    ya, ga = outputs_and_grads(la, x, mask)
    yb, gb = outputs_and_grads(lb, x, mask)
    torch.testing.assert_close(ya, yb, rtol=rtol, atol=atol)
    if same_grad_keys:
        assert ga.keys() == gb.keys()
    for key in ga:
        torch.testing.assert_close(ga[key], gb[key], rtol=rtol, atol=atol, msg=lambda m: f"grad {key}: {m}")


def assert_dropout_only_in_training(name: str, dropout: float = 0.5, **options) -> None:
    """Attention dropout of `name`: off in eval (same output twice), on in training (two seeds, two
    outputs)."""
    layer = attentions.build(name, dim=16, heads=2, max_len=8, dropout=dropout, **options)
    x, mask = torch.randn(2, 8, 16), torch.ones(2, 8, dtype=torch.bool)
    layer.eval()
    torch.testing.assert_close(layer(x, mask), layer(x, mask))
    layer.train()
    torch.manual_seed(0)
    a = layer(x, mask)
    torch.manual_seed(1)
    assert not torch.allclose(a, layer(x, mask))


def assert_fast_drops_what_reference_drops(name: str, x, mask, seed: int) -> None:
    """In training with dropout and the same seed, impl=fast and impl=reference drop the same
    entries: same outputs on real tokens, same gradients for the input and every parameter."""
    outs, grads = [], []
    for impl in ("fast", "reference"):
        layer = build(name, impl=impl, dropout=0.3).train()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(seed)
        y = layer(xi, mask)
        (y.sin() * mask[..., None]).sum().backward()
        outs.append(y[mask].detach())
        grads.append([xi.grad[mask]] + [p.grad for p in layer.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
