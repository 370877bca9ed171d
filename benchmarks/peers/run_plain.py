"""The reference: DIN and DIEN written plainly in PyTorch, as a user would without a framework.

    python benchmarks/peers/run_plain.py --data benchmarks/peers/data --model din --out out/plain_din.json

Same data, dimensions and optimizer as the peers (see ``peer_io``). Batches are slices of the
pre-padded arrays (width 50) in a shuffled order; every position, padding included, goes
through the attention unit, whose input is [q, k, q − k, q ⊙ k] (DIN's official code, DeepCTR,
FuxiCTR). DIEN: a GRU extractor, the auxiliary loss (DIEN eq. 7) with the official code's
MLP head (100-50) on [h_t, e], the official MLP attention with a softmax over valid positions,
and an AUGRU cell (eq. 12–13) stepped in Python over all 50 positions. The timed part is the
training loop: batch slicing, forward, loss, backward and the Adam step.
"""

from __future__ import annotations

import numpy as np
import peer_io
import torch
import torch.nn.functional as F
from torch import nn


def act(kind: str, width: int) -> nn.Module:
    return nn.PReLU(width) if kind == "prelu" else Dice(width)


class Dice(nn.Module):
    """DIN eq. (8) on (N, width) inputs, batch statistics in training."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(width, affine=False, eps=1e-9)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return p * x + (1 - p) * self.alpha * x


def mlp(widths: list[int], kind: str, out: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=False):
        layers += [nn.Linear(a, b), act(kind, b)]
    if out:
        layers.append(nn.Linear(widths[-1], 1))
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Local activation unit over [q, k, q − k, q ⊙ k] for every position; returns raw scores."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        self.net = mlp([4 * dim, *peer_io.ATT_HIDDEN], kind)

    def forward(self, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q = q.unsqueeze(1).expand_as(keys)
        x = torch.cat([q, keys, q - keys, q * keys], dim=-1)
        return self.net(x.reshape(-1, x.shape[-1])).reshape(keys.shape[:2])


class PlainDIN(nn.Module):
    def __init__(self, n_items: int, n_cats: int, kind: str) -> None:
        super().__init__()
        d = peer_io.EMB_DIM
        self.item = nn.Embedding(n_items, d, padding_idx=0)
        self.cat = nn.Embedding(n_cats, d, padding_idx=0)
        for table in (self.item, self.cat):  # small initial embeddings, as the peers have
            nn.init.normal_(table.weight, std=0.01)
            table.weight.data[0] = 0
        self.att = Attention(2 * d, kind)
        self.mlp = mlp([4 * d, *peer_io.MLP_HIDDEN], kind)

    def embed(self, b: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
        return torch.cat([self.item(b[prefix + "hist_item"]), self.cat(b[prefix + "hist_cat"])], -1)

    def forward(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.cat([self.item(b["item"]), self.cat(b["cat"])], -1)
        keys = self.embed(b)
        mask = b["hist_item"] != 0
        w = self.att(q, keys) * mask
        pooled = (w.unsqueeze(-1) * keys).sum(1)
        return self.mlp(torch.cat([q, pooled], -1)).squeeze(-1), torch.zeros(())


class AUGRUCell(nn.Module):
    """DIEN eq. 12–13: the attention score scales the update gate."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ih = nn.Linear(dim, 3 * hidden)
        self.hh = nn.Linear(hidden, 3 * hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        xr, xu, xn = self.ih(x).chunk(3, -1)
        hr, hu, hn = self.hh(h).chunk(3, -1)
        r, u = torch.sigmoid(xr + hr), torch.sigmoid(xu + hu)
        n = torch.tanh(xn + r * hn)
        u = a.unsqueeze(-1) * u
        return (1 - u) * h + u * n


class PlainDIEN(PlainDIN):
    def __init__(self, n_items: int, n_cats: int, kind: str) -> None:
        super().__init__(n_items, n_cats, kind)
        d, h = 2 * peer_io.EMB_DIM, 2 * peer_io.EMB_DIM
        self.gru = nn.GRU(d, h, batch_first=True)
        self.att = Attention(d, kind)
        self.augru = AUGRUCell(h, h)
        self.aux = nn.Sequential(
            nn.Linear(h + d, 100), nn.Sigmoid(), nn.Linear(100, 50), nn.Sigmoid(), nn.Linear(50, 1)
        )
        self.mlp = mlp([2 * d + h, *peer_io.MLP_HIDDEN], kind)

    def forward(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.cat([self.item(b["item"]), self.cat(b["cat"])], -1)
        keys = self.embed(b)
        mask = b["hist_item"] != 0
        states = self.gru(keys)[0]
        att = torch.softmax(self.att(q, states).masked_fill(~mask, -1e9), 1) * mask
        h = states.new_zeros(states.shape[0], states.shape[2])
        outs = []
        for t in range(states.shape[1]):
            h = torch.where(mask[:, t : t + 1], self.augru(states[:, t], h, att[:, t]), h)
            outs.append(h)
        final = outs[-1]
        aux = torch.zeros(())
        if self.training:
            neg = self.embed(b, "neg_")
            step = mask[:, 1:].float()
            hs = states[:, :-1]
            pos_s = self.aux(torch.cat([hs, keys[:, 1:]], -1)).squeeze(-1)
            neg_s = self.aux(torch.cat([hs, neg[:, 1:]], -1)).squeeze(-1)
            loss = F.softplus(-pos_s) + F.softplus(neg_s)
            aux = (loss * step).sum() / step.sum().clamp(min=1)
        return self.mlp(torch.cat([q, keys.sum(1), final], -1)).squeeze(-1), aux


def main(args, clock: peer_io.Clock) -> np.ndarray:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, test, meta = peer_io.load(args.data)
    cls = PlainDIN if args.model == "din" else PlainDIEN
    model = cls(meta["n_items"], meta["n_cats"], args.activation)
    opt = torch.optim.Adam(model.parameters(), lr=peer_io.LR)
    tensors = {k: torch.from_numpy(v) for k, v in train.items()}
    gen = torch.Generator().manual_seed(args.seed)
    first = {k: v[: args.batch_size] for k, v in tensors.items()}

    def step() -> None:
        logits, aux = model(first)
        (F.binary_cross_entropy_with_logits(logits, first["label"]) + aux).backward()

    clock.extra["flops_per_sample"] = peer_io.step_flops(step, args.batch_size)
    opt.zero_grad()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(tensors["label"]), generator=gen)
        for i, idx in enumerate(order.split(args.batch_size)):
            if args.max_batches and i >= args.max_batches:
                break
            with clock.train(len(idx)):
                b = {k: v[idx] for k, v in tensors.items()}
                logits, aux = model(b)
                loss = F.binary_cross_entropy_with_logits(logits, b["label"]) + aux
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    test_t = {k: torch.from_numpy(v) for k, v in test.items()}
    with torch.no_grad():
        preds = [
            torch.sigmoid(model({k: v[i : i + 4096] for k, v in test_t.items()})[0])
            for i in range(0, len(test_t["label"]), 4096)
        ]
    return torch.cat(preds).numpy()


if __name__ == "__main__":
    args = peer_io.parser(__doc__.splitlines()[0]).parse_args()
    peer_io.run(main, f"plain PyTorch {torch.__version__}", args)
