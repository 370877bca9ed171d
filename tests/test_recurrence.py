"""The compiled recurrence kernel and its hand-written backward against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from ctrbench.nn import native
from ctrbench.nn import recurrence as rec
from ctrbench.nn.gru import InterestEvolution, InterestExtractor, attention_gru_loop

MODES = {
    "gru": rec.GRU,
    "agru": rec.AGRU,
    "augru_paper": rec.AUGRU_PAPER,
    "augru_official": rec.AUGRU_OFFICIAL,
}
LOOP_MODE = {rec.AGRU: 0, rec.AUGRU_PAPER: 1, rec.AUGRU_OFFICIAL: 2}  # attention_gru_loop's modes
needs_kernel = pytest.mark.skipif(native.kernel() is None, reason="no C compiler: the kernel cannot be built")


def _inputs(mode: int, b: int = 37, t: int = 7, h: int = 5):
    g = rec.gates(mode) * h
    gen = torch.Generator().manual_seed(mode)
    gi = torch.randn(b, t, g, generator=gen, requires_grad=True)
    att = None if mode == rec.GRU else torch.rand(b, t, generator=gen, requires_grad=True)
    w = torch.randn(g, h, generator=gen, requires_grad=True)
    bias = torch.randn(g, generator=gen, requires_grad=True)
    b_ih = torch.randn(g, generator=gen, requires_grad=True)
    return gi, att, w, bias, b_ih


def _eye(gi: torch.Tensor) -> torch.Tensor:
    """Identity input weights: the kernel's input projection is then gi itself."""
    return torch.eye(gi.shape[2])


def _autograd(gi, att, w, bias, b_ih, mode: int) -> torch.Tensor:
    """The same recurrence through autograd: torch.nn.GRU (identity input weights, so its input
    projection is gi + b_ih) or the eager attentional loop."""
    if mode == rec.GRU:
        width, hidden = gi.shape[2], w.shape[1]
        params = {"weight_ih_l0": torch.eye(width), "bias_ih_l0": b_ih}
        params.update(weight_hh_l0=w, bias_hh_l0=bias)
        return functional_call(nn.GRU(width, hidden, batch_first=True), params, (gi,))[0]
    return attention_gru_loop((gi + b_ih).transpose(0, 1), att.t().unsqueeze(-1), w, bias, LOOP_MODE[mode])


@needs_kernel
@pytest.mark.parametrize("name", sorted(MODES))
def test_compiled_kernel_matches_values_and_gradients(name: str) -> None:
    mode = MODES[name]
    gi, att, w, bias, b_ih = _inputs(mode)
    lengths = torch.tensor([7, 0, 1, 3] + [5] * 33)
    mask = (torch.arange(7)[None, :] < lengths[:, None]).unsqueeze(-1).float()
    weights = torch.randn(37, 7, 5)
    leaves = [x for x in (gi, att, w, bias, b_ih) if x is not None]
    results = []
    kernel = rec.recurrence(gi, att, _eye(gi), b_ih, w, bias, mode, lengths)
    for states in (_autograd(gi, att, w, bias, b_ih, mode), kernel):
        states = states * mask
        results.append((states, torch.autograd.grad((states * weights).sum(), leaves)))
    (ref, ref_grads), (got, got_grads) = results
    assert torch.allclose(got, ref, atol=1e-5)
    for a, b in zip(got_grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # past each row's length the kernel leaves zeros (and computes nothing)
    raw = rec.recurrence(gi, att, _eye(gi), b_ih, w, bias, mode, lengths)
    assert torch.all(raw[1] == 0) and torch.all(raw[2, 1:] == 0)


@pytest.mark.parametrize("kind", ["aigru", "agru", "augru"])
def test_without_the_kernel_the_pytorch_path_runs(monkeypatch, kind: str) -> None:
    """Same final states and gradients from the kernel and from the PyTorch path (torch.nn.GRU
    for the extractor and AIGRU's evolving GRU, the eager loop for AGRU / AUGRU)."""
    torch.manual_seed(0)
    x, lengths = torch.randn(6, 5, 3), torch.tensor([5, 4, 3, 2, 1, 0])
    extractor, evolution = InterestExtractor(3, 4), InterestEvolution(4, 4, kind)
    att = torch.rand(6, 5)
    params = [*extractor.parameters(), *evolution.parameters()]

    def run():
        final = evolution(extractor(x, lengths), att, lengths)[1]
        return final, torch.autograd.grad(final.square().sum(), params)

    with_kernel, kernel_grads = run()
    monkeypatch.setattr(native, "kernel", lambda: None)
    without, torch_grads = run()
    assert without.shape == (6, 4) and torch.isfinite(without).all()
    assert torch.allclose(without, with_kernel, atol=1e-5)
    for a, b in zip(kernel_grads, torch_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("name", ["gru", "augru_paper"])
def test_rows_split_over_threads_give_the_single_thread_result(name: str) -> None:
    """Rows run in blocks on OpenMP threads; each row's arithmetic is the same on any thread."""
    mode = MODES[name]
    gi, att, w, bias, b_ih = _inputs(mode, b=203, t=9, h=6)
    lengths = torch.randint(0, 10, (203,), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(203, 9, 6)
    leaves = [x for x in (gi, att, w, bias, b_ih) if x is not None]
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            states = rec.recurrence(gi, att, _eye(gi), b_ih, w, bias, mode, lengths)
            results.append((states, torch.autograd.grad((states * weights).sum(), leaves)))
    finally:
        torch.set_num_threads(before)
    (one, one_grads), (many, many_grads) = results
    assert torch.equal(one, many)
    assert torch.equal(one_grads[0], many_grads[0])  # per-row input gradients: bit for bit
    for a, b in zip(one_grads[1:], many_grads[1:], strict=True):
        assert torch.allclose(a, b, atol=1e-5)
