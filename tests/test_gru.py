"""DIEN's GRUs (ctrbench.nn.gru) against the paper's equations written out by hand."""

from __future__ import annotations

import pytest
import torch

from ctrbench.nn.gru import InterestEvolution, InterestExtractor, last_state

H, IN = 3, 4  # hidden and input widths of the hand-checked layers


def _x_att(b: int = 2, t: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, IN, generator=g), torch.rand(b, t, generator=g)


def _full(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), x.shape[1])


def _sig(v: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-v))


def _gru_gates(x, h, w_ih, w_hh, b_ih, b_hh):
    """DIEN eq. 3–5 (torch.nn.GRU's row order r, z, n): reset r, update u, candidate h̃."""
    w_ir, w_iz, w_in = w_ih.chunk(3)
    w_hr, w_hz, w_hn = w_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = _sig(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    u = _sig(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    cand = torch.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    return r, u, cand


@pytest.mark.parametrize("gate", ["paper", "official"])
def test_augru_steps_match_the_equations(gate: str) -> None:
    layer = InterestEvolution(IN, H, kind="augru", gate=gate)
    x, att = _x_att()
    states, final = layer(x, att, _full(x))
    p = (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh)
    h = torch.zeros(2, H)
    for t in range(2):  # the second step starts from a non-zero state
        _, u, cand = _gru_gates(x[:, t], h, *p)
        a = att[:, t : t + 1]
        if gate == "paper":  # eq. 12–13
            u_att = a * u
            h = (1 - u_att) * h + u_att * cand
        else:  # official VecAttGRUCell: u gates the previous state
            u_att = (1 - a) * u
            h = u_att * h + (1 - u_att) * cand
        torch.testing.assert_close(states[:, t], h)
    torch.testing.assert_close(final, h)


def test_agru_step_matches_eq_11() -> None:
    layer = InterestEvolution(IN, H, kind="agru")
    x, att = _x_att()
    states, _ = layer(x, att, _full(x))
    w_ir, w_in = layer.weight_ih.chunk(2)
    w_hr, w_hn = layer.weight_hh.chunk(2)
    b_ir, b_in = layer.bias_ih.chunk(2)
    b_hr, b_hn = layer.bias_hh.chunk(2)
    h = torch.zeros(2, H)
    for t in range(2):
        r = _sig(x[:, t] @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        cand = torch.tanh(x[:, t] @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
        a = att[:, t : t + 1]
        h = (1 - a) * h + a * cand
        torch.testing.assert_close(states[:, t], h)


def test_aigru_step_is_a_gru_on_scaled_inputs() -> None:
    layer = InterestEvolution(IN, H, kind="aigru")
    x, att = _x_att()
    states, _ = layer(x, att, _full(x))
    g = layer.gru
    p = (g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
    h = torch.zeros(2, H)
    for t in range(2):
        _, u, cand = _gru_gates(x[:, t] * att[:, t : t + 1], h, *p)  # i'_t = h_t · a_t (eq. 10)
        h = (1 - u) * cand + u * h  # torch's z gates the previous state (u ↔ 1 − u of eq. 6)
        torch.testing.assert_close(states[:, t], h)


def test_gate_forms_at_the_attention_extremes() -> None:
    x, _ = _x_att(t=3)
    paper = InterestEvolution(IN, H, kind="augru", gate="paper")
    official = InterestEvolution(IN, H, kind="augru", gate="official")
    official.load_state_dict(paper.state_dict())
    zero = torch.zeros(x.shape[:2])
    # paper: a = 0 never updates the (zero) state; official: a = 0 is a plain GRU
    assert paper(x, zero, _full(x))[0].abs().max() == 0
    gru = torch.nn.GRU(IN, H, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(gru, f"{name}_l0").copy_(getattr(paper, name))
    torch.testing.assert_close(official(x, zero, _full(x))[0], gru(x)[0])


@pytest.mark.parametrize("kind", ["agru", "augru"])
@pytest.mark.parametrize("gate", ["paper", "official"])
def test_eager_and_scripted_loops_agree(kind: str, gate: str) -> None:
    x, att = _x_att(b=5, t=7, seed=1)
    lengths = torch.tensor([7, 3, 0, 1, 5])
    eager = InterestEvolution(IN, H, kind=kind, gate=gate, loop="eager")
    script = InterestEvolution(IN, H, kind=kind, gate=gate, loop="script")
    script.load_state_dict(eager.state_dict())
    xe, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_e, out_s = eager(xe, att, lengths), script(xs, att, lengths)
    for a, b in zip(out_e, out_s, strict=True):
        torch.testing.assert_close(a, b)
    (out_e[0].sum() + out_e[1].sum()).backward()
    (out_s[0].sum() + out_s[1].sum()).backward()
    torch.testing.assert_close(xe.grad, xs.grad)
    torch.testing.assert_close(eager.weight_hh.grad, script.weight_hh.grad)


@pytest.mark.parametrize(("kind", "gate"), [("aigru", "paper"), ("agru", "paper"), ("augru", "official")])
def test_padded_batch_equals_unpadded_samples(kind: str, gate: str) -> None:
    # the official gate keeps updating the state on padding (a = 0 is a plain GRU step there):
    # the final state must still be the one at the last valid position
    x, att = _x_att(b=4, t=6, seed=2)
    lengths = torch.tensor([6, 2, 4, 1])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    x = x * mask[..., None]
    layer = InterestEvolution(IN, H, kind=kind, gate=gate)
    states, final = layer(x, att * mask, lengths)
    assert states.shape == (4, 6, H)
    assert states[~mask].abs().max() == 0
    torch.testing.assert_close(final, last_state(states, lengths))
    for i, n in enumerate(lengths.tolist()):
        alone, alone_final = layer(x[i : i + 1, :n], att[i : i + 1, :n], lengths[i : i + 1])
        torch.testing.assert_close(states[i, :n], alone[0])
        torch.testing.assert_close(final[i], alone_final[0])
        torch.testing.assert_close(final[i], alone[0, n - 1])


@pytest.mark.parametrize("pack", [False, True])
def test_extractor_padded_equals_unpadded(pack: bool) -> None:
    x, _ = _x_att(b=4, t=6, seed=3)
    lengths = torch.tensor([6, 2, 0, 3])
    extractor = InterestExtractor(IN, H, pack=pack)
    states = extractor(x, lengths)
    assert states.shape == (4, 6, H)
    assert states[2].abs().max() == 0 and states[1, 2:].abs().max() == 0
    for i, n in enumerate(lengths.tolist()):
        if n:
            torch.testing.assert_close(states[i, :n], extractor.gru(x[i : i + 1, :n])[0][0])


@pytest.mark.parametrize("kind", ["aigru", "agru", "augru"])
def test_zero_length_rows_give_zero_states_and_finite_gradients(kind: str) -> None:
    x, att = _x_att(b=3, t=4, seed=4)
    x.requires_grad_()
    layer = InterestEvolution(IN, H, kind=kind, gate="official")
    states, final = layer(x, att, torch.tensor([0, 4, 0]))
    assert final[0].abs().max() == 0 and final[2].abs().max() == 0 and final[1].abs().max() > 0
    assert states[0].abs().max() == 0
    final.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().max() == 0
    empty_states, empty_final = layer(x, att, torch.zeros(3, dtype=torch.long))  # no valid step at all
    assert empty_states.shape == (3, 4, H) and empty_final.abs().max() == 0


def test_unknown_options_fail() -> None:
    with pytest.raises(ValueError, match="kind"):
        InterestEvolution(IN, H, kind="lstm")
    with pytest.raises(ValueError, match="gate"):
        InterestEvolution(IN, H, gate="sideways")
    with pytest.raises(ValueError, match="loop"):
        InterestEvolution(IN, H, loop="cuda")


def test_whole_sequence_graph_equals_the_kernel() -> None:
    # the CUDA path (one compiled graph for all steps) checked on the CPU against the C kernel: values
    # and gradients; 5 steps are padded to 8 inside, past every row's length. One case: compiling the
    # unrolled loop takes ~20 s a case on 2 cores (the modes share the loop and are checked above)
    from ctrbench.nn import recurrence

    if not recurrence.native_ok(torch.zeros(1)):
        pytest.skip("the C kernel is not available here (no C compiler)")
    kind, gate = "augru", "paper"
    x, att = _x_att(b=5, t=5, seed=4)
    lengths = torch.tensor([5, 3, 0, 1, 4])
    native = InterestEvolution(IN, H, kind=kind, gate=gate, loop="native")
    graph = InterestEvolution(IN, H, kind=kind, gate=gate, loop="graph")
    graph.load_state_dict(native.state_dict())
    grads = []
    for module in (native, graph):
        xi, ai = x.clone().requires_grad_(), att.detach().clone().requires_grad_()
        states, final = module(xi, ai, lengths)
        (states.square().sum() + final.sum()).backward()
        grads.append((states, final, xi.grad, ai.grad, *(p.grad for p in module.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
