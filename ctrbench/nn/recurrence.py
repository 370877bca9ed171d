"""GRU-family recurrences with a hand-written backward pass (backpropagation through time).

Every recurrence of DIEN is ``h_t = h_{t−1} + g_t ∘ (ñ_t − h_{t−1})`` with the GRU candidate
``ñ_t = tanh(x_n + r_t ∘ (U_n h_{t−1} + b_hn))``, ``r_t = σ(x_r + U_r h_{t−1} + b_hr)``; only the
update weight g_t differs:

* ``GRU``             g = 1 − z,            z = σ(x_z + U_z h + b_hz) (``torch.nn.GRU``; DIEN eq. 3–6)
* ``AGRU``            g = a_t                                       (DIEN eq. 11, no update gate)
* ``AUGRU_PAPER``     g = a_t·u,            u = σ(x_u + U_u h + b_hu) (DIEN eq. 12–13)
* ``AUGRU_OFFICIAL``  g = 1 − (1 − a_t)·u                           (the official code's cell)

where x = W·i_t + b_i is precomputed for all steps by one matmul outside. Autograd would record
~10 tiny operations per step and ~20 in its backward, each with its own bookkeeping; at DIEN's
sizes (B·H ≈ 10^4 numbers per step) that bookkeeping, not arithmetic, is the cost. Here the
forward runs without a graph and keeps r, g-gate, ñ and U_n h per step; the backward walks the
steps once in reverse with one matmul per step for dh_{t−1}, and the weight gradient of U is one
GEMM over all steps. torch has no fused kernel for the attentional cells (and its own GRU on
CPU is the per-step autograd loop), hence this module. Results equal autograd's to rounding
(tests/test_gru.py compares values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctrbench.nn import native

GRU, AGRU, AUGRU_PAPER, AUGRU_OFFICIAL = 0, 1, 2, 3


def gates(mode: int) -> int:
    """Rows of the gate weights: 2 (r, n) for AGRU, 3 (r, z/u, n) otherwise."""
    return 2 if mode == AGRU else 3


class Recurrence(torch.autograd.Function):
    """``apply(gi (T, B, G·H), att (T, B, 1) or None, w_hh (G·H, H), b_hh (G·H,), mode)`` →
    states (T, B, H), starting from h_0 = 0."""

    @staticmethod
    def forward(ctx, gi, att, w_hh, b_hh, mode: int):  # type: ignore[override]
        steps, batch, _ = gi.shape
        hidden = w_hh.shape[1]
        w_t = w_hh.t()
        states = gi.new_empty(steps, batch, hidden)
        prev = gi.new_empty(steps, batch, hidden)  # h_{t−1}
        r_all = gi.new_empty(steps, batch, hidden)
        u_all = gi.new_empty(steps, batch, hidden) if mode != AGRU else None  # z or u
        n_all = gi.new_empty(steps, batch, hidden)
        ghn_all = gi.new_empty(steps, batch, hidden)  # U_n h + b_hn
        h = gi.new_zeros(batch, hidden)
        for t in range(steps):
            x = gi[t]
            prev[t] = h
            gh = torch.addmm(b_hh, h, w_t)
            if mode == AGRU:
                r = torch.sigmoid(x[:, :hidden] + gh[:, :hidden])
                ghn, xn = gh[:, hidden:], x[:, hidden:]
            else:
                rz = torch.sigmoid(x[:, : 2 * hidden] + gh[:, : 2 * hidden])
                r, u = rz[:, :hidden], rz[:, hidden:]
                u_all[t] = u  # type: ignore[index]
                ghn, xn = gh[:, 2 * hidden :], x[:, 2 * hidden :]
            n = torch.tanh(torch.addcmul(xn, r, ghn))
            if mode == GRU:
                h = n + u * (h - n)  # g = 1 − z
            elif mode == AGRU:
                h = h + att[t] * (n - h)
            elif mode == AUGRU_PAPER:
                h = h + (att[t] * u) * (n - h)
            else:
                h = n + ((1.0 - att[t]) * u) * (h - n)
            r_all[t], n_all[t], ghn_all[t], states[t] = r, n, ghn, h
        ctx.mode = mode
        ctx.save_for_backward(att, w_hh, prev, r_all, u_all, n_all, ghn_all)
        return states

    @staticmethod
    def backward(ctx, grad_states):  # type: ignore[override]
        att, w_hh, prev, r_all, u_all, n_all, ghn_all = ctx.saved_tensors
        mode = ctx.mode
        steps, batch, hidden = prev.shape
        g = 2 if mode == AGRU else 3
        d_gi = grad_states.new_empty(steps, batch, g * hidden)
        d_gh = grad_states.new_empty(steps, batch, g * hidden)
        d_att = grad_states.new_empty(steps, batch, 1) if att is not None else None
        dh = grad_states.new_zeros(batch, hidden)
        for t in range(steps - 1, -1, -1):
            dh = dh + grad_states[t]
            h, r, n, ghn = prev[t], r_all[t], n_all[t], ghn_all[t]
            diff = n - h
            if mode == GRU:
                z = u_all[t]
                weight = 1.0 - z
                d_gate = -(dh * diff) * z * (1.0 - z)  # d pre-activation of z
            elif mode == AGRU:
                a = att[t]
                weight = a
                d_att[t] = (dh * diff).sum(1, keepdim=True)
            elif mode == AUGRU_PAPER:
                a, u = att[t], u_all[t]
                weight = a * u
                dgu = dh * diff
                d_att[t] = (dgu * u).sum(1, keepdim=True)
                d_gate = dgu * a * u * (1.0 - u)
            else:
                a, u = att[t], u_all[t]
                weight = 1.0 - (1.0 - a) * u
                dgu = dh * diff
                d_att[t] = (dgu * u).sum(1, keepdim=True)
                d_gate = -dgu * (1.0 - a) * u * (1.0 - u)
            d_pre_n = dh * weight * (1.0 - n * n)
            d_pre_r = d_pre_n * ghn * r * (1.0 - r)
            gi_t, gh_t = d_gi[t], d_gh[t]
            gi_t[:, :hidden] = d_pre_r
            gh_t[:, :hidden] = d_pre_r
            if mode == AGRU:
                gi_t[:, hidden:] = d_pre_n
                gh_t[:, hidden:] = d_pre_n * r
            else:
                gi_t[:, hidden : 2 * hidden] = d_gate
                gh_t[:, hidden : 2 * hidden] = d_gate
                gi_t[:, 2 * hidden :] = d_pre_n
                gh_t[:, 2 * hidden :] = d_pre_n * r
            dh = torch.addmm(dh * (1.0 - weight), gh_t, w_hh)
        flat_gh = d_gh.reshape(steps * batch, g * hidden)
        d_w = flat_gh.t().mm(prev.reshape(steps * batch, hidden))
        return d_gi, d_att, d_w, flat_gh.sum(0), None


class NativeRecurrence(torch.autograd.Function):
    """:class:`Recurrence` in the compiled kernel (:mod:`ctrbench.nn.native`), batch-major and
    valid steps only: ``apply(gi (B, T, G·H), att (B, T) or None, w_hh, b_hh, lengths, mode)`` →
    states (B, T, H), zero past each row's length."""

    @staticmethod
    def forward(ctx, gi, att, w_hh, b_hh, lengths, mode: int):  # type: ignore[override]
        lib = native.kernel()
        batch, steps, _ = gi.shape
        hidden = w_hh.shape[1]
        gi, w_t, b_hh = gi.contiguous(), w_hh.t().contiguous(), b_hh.contiguous()
        att = None if att is None else att.contiguous()
        lengths = lengths.to(torch.int64).contiguous()
        states, r_s, n_s, ghn_s = (gi.new_empty(batch, steps, hidden) for _ in range(4))
        u_s = gi.new_empty(batch, steps, hidden) if mode != AGRU else gi.new_empty(0)
        args = [gi, att, w_t, b_hh, lengths]
        outs = [states, r_s, u_s, n_s, ghn_s]
        _check(
            native.run_rows(
                lambda r0, r1: lib.rec_forward(  # type: ignore[union-attr]
                    *map(native.ptr, args), mode, steps, batch, hidden, r0, r1, *map(native.ptr, outs)
                ),
                batch,
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
        _check(
            native.run_rows(
                lambda r0, r1: lib.rec_backward(  # type: ignore[union-attr]
                    *map(native.ptr, args), mode, steps, batch, hidden, r0, r1, *map(native.ptr, outs)
                ),
                batch,
            )
        )
        # gradients of U_h and b_h: GEMMs over all steps, h_{t−1} = the states shifted by one
        # (the r and z|u rows of dL/d(U h + b_h) equal those of d_gi, the n rows are d_ghn)
        prev = F.pad(states[:, :-1], (0, 0, 1, 0)).reshape(batch * steps, hidden)
        head = d_gi[..., : (g - 1) * hidden].reshape(batch * steps, (g - 1) * hidden)
        tail = d_ghn.reshape(batch * steps, hidden)
        d_w = torch.cat([head.t().mm(prev), tail.t().mm(prev)])
        d_b = torch.cat([head.sum(0), tail.sum(0)])
        return d_gi, d_att, d_w, d_b, None, None


def _check(statuses: list[int]) -> None:
    if any(statuses):
        raise RuntimeError("recurrence kernel: hidden size above its limit of 512")


def native_ok(*tensors: torch.Tensor | None) -> bool:
    """Whether the compiled kernel can run on these tensors (float32 on the CPU, kernel built)."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and (
        native.kernel() is not None
    )


def recurrence(
    gi: torch.Tensor,
    att: torch.Tensor | None,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    mode: int,
    lengths: torch.Tensor | None = None,
    use_native: bool = True,
) -> torch.Tensor:
    """States (B, T, H) of the recurrence ``mode`` over batch-major input projections
    ``gi`` (B, T, G·H) and attention scores ``att`` (B, T).

    With ``lengths`` and the compiled kernel available (float32 CPU tensors), only valid steps
    are computed and states past a row's length are zero; otherwise every step of every row is
    computed by :class:`Recurrence` (the caller masks padded positions either way).
    """
    if use_native and lengths is not None and native_ok(gi, att, w_hh):
        return NativeRecurrence.apply(gi, att, w_hh, b_hh, lengths, mode)
    att_t = None if att is None else att.t().unsqueeze(-1)
    return Recurrence.apply(gi.transpose(0, 1), att_t, w_hh, b_hh, mode).transpose(0, 1)
