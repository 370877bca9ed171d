"""PReLU over the last axis (DIN eq. 8): the compiled kernel against torch's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctrbench.nn import native
from ctrbench.nn.activation import NativePReLU, PReLU


@pytest.mark.parametrize("shape", [(1000, 7), (3, 5, 4), (0, 4)])
def test_prelu_values_and_gradients_equal_torch(shape) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    act = PReLU(shape[-1])
    with torch.no_grad():
        act.weight.uniform_(-0.5, 0.5)
    grad = torch.randn(*shape)
    got = act(x)
    want = F.prelu(x.reshape(-1, shape[-1]), act.weight).reshape(shape)
    assert torch.equal(got, want)
    g_got = torch.autograd.grad(got, (x, act.weight), grad)
    g_want = torch.autograd.grad(want, (x, act.weight), grad)
    assert torch.equal(g_got[0], g_want[0])
    assert torch.allclose(g_got[1], g_want[1], atol=1e-4)  # a sum over rows, in another order


def test_negative_inputs_are_scaled_by_the_slope_of_their_channel() -> None:
    act = PReLU(2)
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.5, -2.0]))
    x = torch.tensor([[-2.0, -1.0], [3.0, 4.0]])
    assert torch.equal(act(x), torch.tensor([[-1.0, 2.0], [3.0, 4.0]]))


def test_kernel_is_built_where_a_compiler_exists() -> None:
    if native.shutil.which("cc") is None and native.shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert native.kernel() is not None


def test_rows_split_over_threads_give_the_single_thread_result(monkeypatch) -> None:
    if native.kernel() is None:
        pytest.skip("no C compiler: the kernel cannot be built")
    monkeypatch.setattr(NativePReLU, "THREADED", 64)  # split even this small array
    torch.manual_seed(0)
    x, weight, grad = torch.randn(301, 8), torch.rand(8) - 0.5, torch.randn(301, 8)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            assert native.parts(301, 8) == threads
            xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
            out = NativePReLU.apply(xs, ws)
            results.append((out, *torch.autograd.grad(out, (xs, ws), grad)))
    finally:
        torch.set_num_threads(before)
    (y1, gx1, gw1), (y3, gx3, gw3) = results
    assert torch.equal(y1, y3) and torch.equal(gx1, gx3)
    assert torch.allclose(gw1, gw3, atol=1e-5)
    assert torch.allclose(gw3, ((x < 0) * x * grad).sum(0), atol=1e-4)
