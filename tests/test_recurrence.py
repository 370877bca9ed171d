"""The hand-written recurrences (autograd Function and compiled kernel) against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctrbench.nn import native
from ctrbench.nn import recurrence as rec
from ctrbench.nn.gru import attention_gru_loop

MODES = {
    "gru": rec.GRU,
    "agru": rec.AGRU,
    "augru_paper": rec.AUGRU_PAPER,
    "augru_official": rec.AUGRU_OFFICIAL,
}
LOOP_MODE = {rec.AGRU: 0, rec.AUGRU_PAPER: 1, rec.AUGRU_OFFICIAL: 2}  # attention_gru_loop's modes
needs_kernel = pytest.mark.skipif(native.kernel() is None, reason="no C compiler: the kernel cannot be built")


def _inputs(mode: int, b: int = 6, t: int = 5, h: int = 3, dtype=torch.float64):
    g = rec.gates(mode) * h
    gen = torch.Generator().manual_seed(mode)
    gi = torch.randn(b, t, g, generator=gen, dtype=dtype, requires_grad=True)
    att = None if mode == rec.GRU else torch.rand(b, t, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(g, h, generator=gen, dtype=dtype, requires_grad=True)
    bias = torch.randn(g, generator=gen, dtype=dtype, requires_grad=True)
    return gi, att, w, bias


@pytest.mark.parametrize("name", sorted(MODES))
def test_hand_written_backward_passes_gradcheck(name: str) -> None:
    mode = MODES[name]
    gi, att, w, bias = _inputs(mode)
    inputs = tuple(x for x in (gi, att, w, bias) if x is not None)

    def f(*xs):
        xs = list(xs)
        a = xs.pop(1) if att is not None else None
        return rec.recurrence(xs[0], a, xs[1], xs[2], mode, use_native=False)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("name", sorted(MODES))
def test_recurrence_equals_the_autograd_cells(name: str) -> None:
    mode = MODES[name]
    gi, att, w, bias = _inputs(mode)
    got = rec.recurrence(gi, att, w, bias, mode, use_native=False)
    if mode == rec.GRU:  # torch.nn.GRU with the same weights: gi = W_i x + b_i
        gru = nn.GRU(2, 3, batch_first=True).double()
        x = torch.randn(6, 5, 2, dtype=torch.float64)
        gi = nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)
        got = rec.recurrence(gi, None, gru.weight_hh_l0, gru.bias_hh_l0, mode, use_native=False)
        want = gru(x)[0]
    else:
        want = attention_gru_loop(gi.transpose(0, 1), att.t().unsqueeze(-1), w, bias, LOOP_MODE[mode])
    assert torch.allclose(got, want, atol=1e-12)


@needs_kernel
@pytest.mark.parametrize("name", sorted(MODES))
def test_compiled_kernel_matches_values_and_gradients(name: str) -> None:
    mode = MODES[name]
    gi, att, w, bias = (
        None if x is None else x.detach().float().requires_grad_() for x in _inputs(mode, 37, 7, 5)
    )
    lengths = torch.tensor([7, 0, 1, 3] + [5] * 33)
    mask = (torch.arange(7)[None, :] < lengths[:, None]).unsqueeze(-1).float()
    weights = torch.randn(37, 7, 5)
    leaves = [x for x in (gi, att, w, bias) if x is not None]
    results = []
    for use_native in (False, True):
        states = rec.recurrence(gi, att, w, bias, mode, lengths, use_native=use_native) * mask
        results.append((states, torch.autograd.grad((states * weights).sum(), leaves)))
    (ref, ref_grads), (got, got_grads) = results
    assert torch.allclose(got, ref, atol=1e-5)
    for a, b in zip(got_grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # past each row's length the kernel leaves zeros (and computes nothing)
    raw = rec.recurrence(gi, att, w, bias, mode, lengths)
    assert torch.all(raw[1] == 0) and torch.all(raw[2, 1:] == 0)


def test_without_the_kernel_the_pytorch_path_runs(monkeypatch) -> None:
    monkeypatch.setattr(native, "kernel", lambda: None)
    gi, att, w, bias = (x.detach().float() for x in _inputs(rec.AUGRU_PAPER))
    out = rec.recurrence(gi, att, w, bias, rec.AUGRU_PAPER, torch.full((6,), 5))
    assert out.shape == (6, 5, 3) and torch.isfinite(out).all()
