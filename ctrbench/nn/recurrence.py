"""GRU-family recurrences in the compiled kernel, with a hand-written backward pass (BPTT).

Every recurrence of DIEN is ``h_t = h_{t−1} + g_t ∘ (ñ_t − h_{t−1})`` with the GRU candidate
``ñ_t = tanh(x_n + r_t ∘ (U_n h_{t−1} + b_hn))``, ``r_t = σ(x_r + U_r h_{t−1} + b_hr)``; only the
update weight g_t differs:

* ``GRU``             g = 1 − z,            z = σ(x_z + U_z h + b_hz) (``torch.nn.GRU``; DIEN eq. 3–6)
* ``AGRU``            g = a_t                                       (DIEN eq. 11, no update gate)
* ``AUGRU_PAPER``     g = a_t·u,            u = σ(x_u + U_u h + b_hu) (DIEN eq. 12–13)
* ``AUGRU_OFFICIAL``  g = 1 − (1 − a_t)·u                           (the official code's cell)

where W·i_t is one matmul over all steps (:func:`recurrence`) and the kernel adds b_i. Autograd would
record ~10 tiny operations per step and ~20 in its backward, each with its own bookkeeping; at DIEN's
sizes (B·H ≈ 10^4 numbers per step) that bookkeeping, not arithmetic, is the cost. The kernel
(``kernels/recurrence.c``) runs each row's valid steps in one call, forward and backward; the
weight gradient of U is one GEMM over all steps here. Callers check :func:`native_ok` and
otherwise use their PyTorch loops (:mod:`ctrbench.nn.gru`); tests/test_recurrence.py compares
values and gradients with autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctrbench.nn import native

GRU, AGRU, AUGRU_PAPER, AUGRU_OFFICIAL = 0, 1, 2, 3


def gates(mode: int) -> int:
    """Rows of the gate weights: 2 (r, n) for AGRU, 3 (r, z/u, n) otherwise."""
    return 2 if mode == AGRU else 3


class NativeRecurrence(torch.autograd.Function):
    """The recurrence ``mode`` in the compiled kernel (:mod:`ctrbench.nn.native`), batch-major and
    valid steps only: ``apply(gi (B, T, G·H), att (B, T) or None, w_hh, b_hh, lengths, mode, b_ih)``
    → states (B, T, H), zero past each row's length. ``gi`` = W_i·i_t without its bias ``b_ih``
    (added in the kernel: a bias inside the projection GEMM costs a copy of the whole output)."""

    @staticmethod
    def forward(ctx, gi, att, w_hh, b_hh, lengths, mode: int, b_ih):  # type: ignore[override]
        lib = native.kernel()
        batch, steps, _ = gi.shape
        hidden = w_hh.shape[1]
        gi, w_t, b_hh = gi.contiguous(), w_hh.t().contiguous(), b_hh.contiguous()
        att = None if att is None else att.contiguous()
        lengths = lengths.to(torch.int64).contiguous()
        states, r_s, n_s, ghn_s = (gi.new_empty(batch, steps, hidden) for _ in range(4))
        u_s = gi.new_empty(batch, steps, hidden) if mode != AGRU else gi.new_empty(0)
        args = [gi, b_ih.contiguous(), att, w_t, b_hh, lengths]
        outs = [states, r_s, u_s, n_s, ghn_s]
        threads = native.parts(batch, 8)
        _check(
            lib.rec_forward_all(
                *map(native.ptr, args), mode, steps, batch, hidden, threads, *map(native.ptr, outs)
            )
        )
        ctx.mode = mode
        ctx.save_for_backward(att, w_hh, lengths, states, r_s, u_s, n_s, ghn_s)
        return states

    @staticmethod
    def backward(ctx, grad_states):  # type: ignore[override]
        lib = native.kernel()
        att, w_hh, lengths, states, r_s, u_s, n_s, ghn_s = ctx.saved_tensors
        mode = ctx.mode
        batch, steps, hidden = states.shape
        g = gates(mode)
        grad_states = grad_states.contiguous()
        d_gi = grad_states.new_empty(batch, steps, g * hidden)
        d_ghn = grad_states.new_empty(batch, steps, hidden)
        d_att = None if att is None else grad_states.new_empty(batch, steps)
        args = [grad_states, att, w_hh.contiguous(), lengths]
        outs = [states, r_s, u_s, n_s, ghn_s, d_gi, d_ghn, d_att]
        threads = native.parts(batch, 8)
        _check(
            lib.rec_backward_all(
                *map(native.ptr, args), mode, steps, batch, hidden, threads, *map(native.ptr, outs)
            )
        )
        # gradients of U_h and b_h: GEMMs over all steps, h_{t−1} = the states shifted by one
        # (the r and z|u rows of dL/d(U h + b_h) equal those of d_gi, the n rows are d_ghn)
        prev = F.pad(states[:, :-1], (0, 0, 1, 0)).reshape(batch * steps, hidden)
        head = d_gi[..., : (g - 1) * hidden].reshape(batch * steps, (g - 1) * hidden)
        tail = d_ghn.reshape(batch * steps, hidden)
        d_w = torch.cat([head.t().mm(prev), tail.t().mm(prev)])
        d_b_ih = d_gi.sum((0, 1))
        d_b = torch.cat([d_b_ih[: (g - 1) * hidden], tail.sum(0)])
        return d_gi, d_att, d_w, d_b, None, None, d_b_ih


def _check(status: int) -> None:
    if status:
        raise RuntimeError("recurrence kernel: hidden size above its limit of 512")


def native_ok(*tensors: torch.Tensor | None) -> bool:
    """Whether the compiled kernel can run on these tensors (float32 on the CPU, kernel built)."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and (
        native.kernel() is not None
    )


def recurrence(
    x: torch.Tensor,
    att: torch.Tensor | None,
    w_ih: torch.Tensor,
    b_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    mode: int,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """States (B, T, H) of the recurrence ``mode`` over inputs ``x`` (B, T, I) with input weights
    ``w_ih`` (G·H, I), ``b_ih`` and attention scores ``att`` (B, T): the input projections of all
    steps are one matmul (its bias is added in the kernel: a bias inside the GEMM costs a copy of
    the whole output); only valid steps are computed and states past a row's length are zero.
    Needs :func:`native_ok`."""
    return NativeRecurrence.apply(F.linear(x, w_ih), att, w_hh, b_hh, lengths, mode, b_ih)
