"""The GRUs of DIEN: the interest extractor (eq. 3–6) and the interest evolving layer (eq. 10–13).

Behaviour sequences are padded after their valid positions, so a recurrence run over the padded
batch is exact at every valid position; states at padded positions are zeroed and the final state
of a row is read at its last valid position (:func:`last_state`), whatever the gate form does
past it. Gate weights follow ``torch.nn.GRU``'s layout (rows r, z, n; ``u = σ(W_z i + b_iz +
U_z h + b_hz)``; the candidate is ``h̃ = tanh(W_n i + b_in + r ∘ (U_n h + b_hn))``, eq. 5).

Speed: the recurrences run by default in a compiled C kernel with a hand-written backward
(:mod:`ctrbench.nn.recurrence`, :mod:`ctrbench.nn.native`), valid steps only, rows split over
torch's OpenMP threads. CPU, batch 256, L = 50, H = 32, AUGRU forward + backward: kernel 12 ms on
one thread (~5 ms on two inside a DIEN training step), the eager loop below 22–35 ms,
``torch.nn.GRU`` 21–26 ms (2-core machine). The eager, scripted and compiled Python loops stay
selectable (``loop=``) and are the fallback where the kernel cannot run (no C compiler, float64). On
CUDA the extractor GRU and AIGRU run in ``torch.nn.GRU`` (one cuDNN call for the whole sequence) and
AGRU/AUGRU in :func:`graph_loop`: the unrolled loop compiled once, replayed as CUDA graphs.
Iterating over ``unbind`` of a time-major projection matters in the eager loop:
indexing ``gi[:, t]`` per step made the backward O(T²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ctrbench.nn import recurrence as rec

KINDS = ("aigru", "agru", "augru")
GATES = ("paper", "official")
LOOPS = ("native", "eager", "script", "compile", "graph")
STEP_BUCKET = 8  # "graph" runs the time axis padded to a multiple of this: one compiled graph per bucket

# modes of the attentional recurrence (literals in the loop: TorchScript reads no globals)
_AGRU, _AUGRU_PAPER, _AUGRU_OFFICIAL = 0, 1, 2


def last_state(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The state at each row's last valid position: (B, T, H), (B,) → (B, H); zeros where length 0."""
    b, _, h = states.shape
    idx = (lengths - 1).clamp(min=0).view(b, 1, 1).expand(b, 1, h)
    return states.gather(1, idx).squeeze(1) * (lengths > 0).unsqueeze(1).to(states.dtype)


def _steps(lengths: torch.Tensor, width: int) -> int:
    """Number of time steps to run: the batch's longest valid length (at most ``width``)."""
    return min(int(lengths.max()), width) if lengths.numel() else 0


def _finish(states: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Zero the padded positions and pad the time axis back to ``width``."""
    mask = torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]
    return _pad(states * mask.unsqueeze(-1).to(states.dtype), width)


def _pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """Pad the time axis back to ``width`` (the kernel's states are already zero past each length)."""
    return F.pad(states, (0, 0, 0, width - states.shape[1])) if states.shape[1] < width else states


def attention_gru_loop(
    gi: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, mode: int
) -> torch.Tensor:
    """The recurrence of AGRU / AUGRU over precomputed input projections.

    gi: (T, B, G·H) time-major W·i'_t + b_i for all steps; att: (T, B, 1) attention scores a_t.
    mode 0, AGRU (eq. 11):          h'_t = (1 − a_t)·h'_{t−1} + a_t·h̃'_t
    mode 1, AUGRU (eq. 12–13):      ũ'_t = a_t·u'_t,  h'_t = (1 − ũ'_t)∘h'_{t−1} + ũ'_t∘h̃'_t
    mode 2, AUGRU, official code:   u ← (1 − a_t)·u,  h'_t = u∘h'_{t−1} + (1 − u)∘h̃'_t
    AGRU has no update gate (G = 2: r, n); AUGRU has G = 3 (r, z, n). Returns states (B, T, H).
    """
    hidden = w_hh.shape[1]
    h = gi.new_zeros(gi.shape[1], hidden)
    w_t = w_hh.t()
    xs, atts = gi.unbind(0), att.unbind(0)  # per-step views whose backward is one stack
    out: list[torch.Tensor] = []
    for t in range(len(xs)):
        h = _cell(xs[t], atts[t], h, w_t, b_hh, mode)
        out.append(h)
    return torch.stack(out, 1)


def _cell(
    x: torch.Tensor, a: torch.Tensor, h: torch.Tensor, w_t: torch.Tensor, b_hh: torch.Tensor, mode: int
) -> torch.Tensor:
    """One step of :func:`attention_gru_loop`: x = W·i'_t + b_i, a = a_t (B, 1), h = h'_{t−1}."""
    hidden = h.shape[1]
    gh = torch.addmm(b_hh, h, w_t)
    if mode == 0:  # AGRU
        r = torch.sigmoid(x[:, :hidden] + gh[:, :hidden])
        n = torch.tanh(x[:, hidden:] + r * gh[:, hidden:])
        return h + a * (n - h)
    rz = torch.sigmoid(x[:, : 2 * hidden] + gh[:, : 2 * hidden])
    r, u = rz[:, :hidden], rz[:, hidden:]
    n = torch.tanh(x[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
    if mode == 1:  # AUGRU, paper
        return h + (a * u) * (n - h)
    u = (1.0 - a) * u  # AUGRU, official code
    return n + u * (h - n)


_scripted_loop = None
_compiled_cell = None


def scripted_loop(
    gi: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, mode: int
) -> torch.Tensor:
    """:func:`attention_gru_loop` compiled by ``torch.jit.script`` (on first use)."""
    global _scripted_loop
    if _scripted_loop is None:
        _scripted_loop = torch.jit.script(attention_gru_loop)
    return _scripted_loop(gi, att, w_hh, b_hh, mode)


def compiled_loop(
    gi: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, mode: int
) -> torch.Tensor:
    """:func:`attention_gru_loop` with the step compiled by ``torch.compile`` (on first use)."""
    global _compiled_cell
    if _compiled_cell is None:
        _compiled_cell = torch.compile(_cell, dynamic=False)
    h = gi.new_zeros(gi.shape[1], w_hh.shape[1])
    w_t = w_hh.t()
    out = []
    for x, a in zip(gi.unbind(0), att.unbind(0), strict=True):
        h = _compiled_cell(x, a, h, w_t, b_hh, mode)
        out.append(h)
    return torch.stack(out, 1)


_graph_loops: dict[tuple[str, int], object] = {}


def graph_loop(
    gi: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, mode: int
) -> torch.Tensor:
    """:func:`attention_gru_loop` over the whole sequence as one ``torch.compile`` graph (the GPU path).

    The loop is unrolled and compiled once per (device, mode, step bucket): inductor fuses each step's
    gate arithmetic into one kernel beside the U·h' product, and on CUDA ``mode="reduce-overhead"``
    replays forward and backward as CUDA graphs, one launch each instead of ~10 kernels per time step.
    The time axis is padded to a multiple of :data:`STEP_BUCKET` with zero inputs and scores (steps past
    every row's length, whose states the caller masks), so at most ``width / 8`` graphs are built.
    """
    steps = gi.shape[0]
    padded = -(-steps // STEP_BUCKET) * STEP_BUCKET
    if padded != steps:
        gi = F.pad(gi, (0, 0, 0, 0, 0, padded - steps))
        att = F.pad(att, (0, 0, 0, 0, 0, padded - steps))
    key = (gi.device.type, mode)
    if key not in _graph_loops:
        options = {"mode": "reduce-overhead"} if gi.is_cuda else {}
        _graph_loops[key] = torch.compile(attention_gru_loop, dynamic=False, fullgraph=True, **options)
    return _graph_loops[key](gi, att, w_hh, b_hh, mode)[:, :steps]


LOOP_FNS = {
    "script": scripted_loop,
    "eager": attention_gru_loop,
    "compile": compiled_loop,
    "graph": graph_loop,
}
NATIVE_MODES = {_AGRU: rec.AGRU, _AUGRU_PAPER: rec.AUGRU_PAPER, _AUGRU_OFFICIAL: rec.AUGRU_OFFICIAL}


def _kernel_gru(g: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The one-layer ``torch.nn.GRU`` ``g`` over ``x`` (B, T, I) in the compiled kernel."""
    weights = (g.weight_ih_l0, g.bias_ih_l0, g.weight_hh_l0, g.bias_hh_l0)
    return rec.recurrence(x, None, *weights, rec.GRU, lengths)


class InterestExtractor(nn.Module):
    """Interest extractor layer (DIEN eq. 3–6): a GRU over the behaviours e_1..e_T.

    ``forward(x (B, L, I), lengths (B,))`` → states h_t (B, L, H), zero at padded positions.
    The input projections of all steps are one matmul; the recurrence runs in the compiled kernel
    (:mod:`ctrbench.nn.recurrence`, valid steps only) when it is available for the inputs, else
    in ``torch.nn.GRU`` over the padded batch (``pack=True``: on packed sequences; same result).
    ``torch.nn.GRU``'s z gates the previous state, h_t = (1 − z)∘h̃_t + z∘h_{t−1}: eq. 6
    with u_t = 1 − z_t, the same family. Also the two GRUs of the "two layer GRU attention" model.
    """

    def __init__(self, input_dim: int, hidden: int, pack: bool = False, native: bool = True) -> None:
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden, batch_first=True)
        self.pack, self.native = pack, native

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        width = x.shape[1]
        steps = _steps(lengths, width)
        if steps == 0:
            return x.new_zeros(x.shape[0], width, self.gru.hidden_size)
        g = self.gru
        if self.native and not self.pack and rec.native_ok(x, g.weight_hh_l0):
            return _pad(_kernel_gru(g, x[:, :steps], lengths), width)
        if self.pack:
            packed = nn.utils.rnn.pack_padded_sequence(
                x[:, :steps], lengths.clamp(1, steps).cpu(), batch_first=True, enforce_sorted=False
            )
            states = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True)[0]
        else:
            states = self.gru(x[:, :steps])[0]
        return _finish(states, lengths, width)


class InterestEvolution(nn.Module):
    """Interest evolving layer (DIEN eq. 10–13), ``kind`` one of:

    * ``aigru`` — a plain GRU on the attention-scaled inputs i'_t = a_t·h_t (eq. 10; in the kernel
      with ``loop=native``, else ``torch.nn.GRU``);
    * ``agru``  — the attention score replaces the update gate (eq. 11);
    * ``augru`` — the attention score scales the update gate (eq. 12–13). ``gate="official"``
      follows the official code instead: there u gates the previous state, ``u ← (1 − a)·u`` and
      ``h' = u·h + (1 − u)·h̃`` (a = 0 is a plain GRU step, a = 1 takes the candidate).

    Input projections of all steps are one matmul; only U·h' runs inside the time loop, for the
    batch's longest length. ``loop`` picks the loop implementation: ``native`` (the compiled
    kernel of :mod:`ctrbench.nn.recurrence`, valid steps only; ``eager`` where it cannot run),
    ``eager``, ``script`` or ``compile`` (identical results up to rounding).
    ``forward(x (B, L, I), att (B, L), lengths (B,))`` →
    (states (B, L, H) zero at padding, final state h'_T (B, H), zeros for empty rows).
    """

    def __init__(
        self, input_dim: int, hidden: int, kind: str = "augru", gate: str = "paper", loop: str = "native"
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"evolving layer kind {kind!r} is unknown (choices: {', '.join(KINDS)})")
        if gate not in GATES:
            raise ValueError(f"AUGRU gate {gate!r} is unknown (choices: {', '.join(GATES)})")
        if loop not in LOOPS:
            raise ValueError(f"GRU loop {loop!r} is unknown (choices: {', '.join(LOOPS)})")
        self.kind, self.gate, self.loop, self.hidden = kind, gate, loop, hidden
        if kind == "aigru":
            self.gru = nn.GRU(input_dim, hidden, batch_first=True)
            return
        gates = 2 if kind == "agru" else 3
        bound = 1.0 / math.sqrt(hidden)
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden, input_dim).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden, hidden).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden).uniform_(-bound, bound))
        self.mode = _AGRU if kind == "agru" else _AUGRU_PAPER if gate == "paper" else _AUGRU_OFFICIAL

    def forward(
        self, x: torch.Tensor, att: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = x.shape[1]
        steps = _steps(lengths, width)
        if steps == 0:
            states = x.new_zeros(x.shape[0], width, self.hidden)
            return states, states[:, 0]
        x, att = x[:, :steps], att[:, :steps]
        if self.kind == "aigru" and self.loop == "native" and rec.native_ok(x, att, self.gru.weight_hh_l0):
            states = _kernel_gru(self.gru, x * att.unsqueeze(-1), lengths)  # a GRU over i'_t = a_t·h_t
            return _pad(states, width), last_state(states, lengths.clamp(max=steps))
        if self.kind == "aigru":
            states = self.gru(x * att.unsqueeze(-1))[0]
        elif self.loop == "native" and rec.native_ok(x, att, self.weight_hh):
            weights = (self.weight_ih, self.bias_ih, self.weight_hh, self.bias_hh)
            states = rec.recurrence(x, att, *weights, NATIVE_MODES[self.mode], lengths)
            return _pad(states, width), last_state(states, lengths.clamp(max=steps))
        else:  # native unavailable: on CUDA the compiled graph, elsewhere (no compiler, float64) eager
            gi = F.linear(x.transpose(0, 1), self.weight_ih, self.bias_ih)  # all steps in one matmul
            loop = self.loop
            if loop == "native":
                loop = "graph" if x.is_cuda else "eager"
            states = LOOP_FNS[loop](gi, att.t().unsqueeze(-1), self.weight_hh, self.bias_hh, self.mode)
        return _finish(states, lengths, width), last_state(states, lengths.clamp(max=steps))
