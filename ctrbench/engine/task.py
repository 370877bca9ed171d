"""The one LightningModule every model trains in.

Loss = BCE(logit, label) + Σ_k weight_k · aux_k (named auxiliary losses a model returns, e.g.
DIEN eq. 8) + the regularizer's penalty. Validation and test are evaluated every epoch (AUC,
GAUC of DIN eq. 10, logloss); the per-epoch history feeds the run record.

On several processes each rank trains on its share of every global batch with the loss weighted
so that DDP's averaged gradient is the global batch's, and the evaluation outputs of every rank are
gathered before the metrics, so every rank holds the same history (:mod:`ctrbench.engine.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from ctrbench.engine.distributed import ROW, WEIGHT, all_sum, gather, same_everywhere, strip, unique_rows
from ctrbench.engine.optim import OptimConfig, build_optimizer
from ctrbench.engine.schedules import lightning_scheduler
from ctrbench.metrics import evaluate
from ctrbench.schema import Schema

Batch = dict[str, torch.Tensor]

EVAL_SPLITS = ("val", "test")  # dataloader_idx 0 and 1 of the validation loop
PROGRESS_BAR = ("val_gauc",)  # epoch metrics shown on the progress bar


class NonFiniteLossError(RuntimeError):
    pass


def split_output(out: torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]):
    """A model returns logits, or (logits, {aux_name: loss})."""
    if isinstance(out, tuple):
        return out[0], dict(out[1])
    return out, {}


class CTRTask(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        schema: Schema,
        regularizer: object | None = None,
        optim: OptimConfig | None = None,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.schema = schema
        self.regularizer = regularizer
        self.optim = optim or OptimConfig()
        # regularizer hooks (all optional): encode every batch, transform training batches, penalty
        self._encode = getattr(regularizer, "encode", None)
        self._transform = getattr(regularizer, "transform", None)
        self._penalty = getattr(regularizer, "penalty", None)
        # weights of named auxiliary losses: the model's own defaults (e.g. DIEN's aux_alpha),
        # overridden by the config's loss_weights
        self.loss_weights = {**getattr(model, "loss_weights", {}), **dict(loss_weights or {})}
        self.history: list[dict[str, float]] = []
        self._step_lr: float | None = None
        # this epoch's evaluation outputs per split: (label, logit, group, row), ordered by row (the
        # row's index in its split), gathered from every rank
        self.epoch_outputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._outputs: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        self._seen: dict[int, int] = {}  # rows evaluated so far per split (one process: rows in order)
        self._sums: dict[str, torch.Tensor] = {}  # per-epoch sums of the (weighted) training loss terms
        self._steps = 0
        # wall time of the training loop (batch loading, step, hooks; evaluation excluded) and of
        # evaluation (val + test forward passes and their metrics)
        self.train_seconds = 0.0
        self.train_samples = 0
        self.eval_seconds = 0.0
        self._t0 = 0.0

    def forward(self, batch: Batch) -> torch.Tensor:
        """Click logits of an evaluation batch (the regularizer's ``encode`` applied, if any)."""
        batch = strip(batch)
        if self._encode is not None:
            batch = self._encode(batch)
        return split_output(self.model(batch))[0]

    # ---- training -------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()  # the per-epoch re-draw of negatives counts as training
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "resample"):
            datamodule.resample(self.current_epoch)

    def on_train_batch_end(self, outputs, batch: Batch, batch_idx: int) -> None:
        # from the previous batch's end (or the epoch's start): loading this batch counts too
        now = time.perf_counter()
        self.train_seconds += now - self._t0
        n = len(batch[self.schema.label])
        weight = batch.get(WEIGHT)
        if weight is not None:  # several processes: count the global batch (rank 0 holds a share of each)
            n = round(n * self.trainer.world_size / float(weight)) if float(weight) > 0 else 0
        self.train_samples += n
        self._t0 = now

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.optim.scheduler.active:  # the rate this step uses (the history's lr)
            self._step_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        weight = batch.get(WEIGHT)  # this rank's share of the global batch (several processes only)
        batch = strip(batch)
        if self._encode is not None:
            batch = self._encode(batch)
        if self._transform is not None:
            batch = self._transform(batch)
        label = batch[self.schema.label]
        n = len(label)
        logits, aux = split_output(self.model(batch))
        terms = {"ctr_loss": F.binary_cross_entropy_with_logits(logits, label.float())}
        loss = terms["ctr_loss"]
        for name, value in aux.items():
            loss = loss + self.loss_weights.get(name, 1.0) * value
            terms[name] = value
        penalty = self._penalty(self.model, batch) if self._penalty is not None else None
        if penalty is not None:
            loss = loss + penalty
            terms["penalty"] = penalty
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at epoch {self.current_epoch + 1} step {batch_idx + 1}"
            )
        if weight is not None:
            # DDP averages the ranks' gradients: with W · n_r / n per rank that mean is the gradient
            # of the global batch's mean loss (and of its mean auxiliary losses)
            terms = {name: value * weight for name, value in terms.items()}
            loss = loss * weight
        terms["loss"] = loss
        # Lightning's self.log costs ~1 ms per step here (its result collection is walked on every
        # step it is used), a tenth of a DIN step: the loggers and the progress bar get the step's
        # terms every log_every_n_steps steps; epoch means come from the sums below.
        every = getattr(self._trainer, "log_every_n_steps", 1) if self._trainer is not None else 1
        log_now = batch_idx % max(every, 1) == 0
        for name, value in terms.items():
            if log_now:
                self.log(f"train_{name}", value, batch_size=n, prog_bar=name == "loss")
            value = value.detach()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._steps += 1
        return loss

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch)
        label = batch[self.schema.label]
        rows = batch.get(ROW)
        if rows is None:  # one process: evaluation batches come in row order
            start = self._seen.get(dataloader_idx, 0)
            rows = torch.arange(start, start + len(label))
        self._seen[dataloader_idx] = self._seen.get(dataloader_idx, 0) + len(label)
        out = (label, logits, batch[self.schema.group], rows)
        self._outputs.setdefault(dataloader_idx, []).append(tuple(t.detach().cpu() for t in out))

    def _split_outputs(self, rows: list[tuple[torch.Tensor, ...]]) -> tuple[np.ndarray, ...]:
        """(label, logit, group, row) of a split over every rank, ordered by row, duplicates dropped."""
        local = [torch.cat(parts) for parts in zip(*rows, strict=True)]
        label, logits, group, row = (t.numpy() for t in gather(local, self.device))
        if self.trainer.world_size > 1:
            row, label, logits, group = unique_rows(row, label, logits, group)
        return label, logits, group, row

    def on_validation_epoch_start(self) -> None:
        self._eval_t0 = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        outputs, self._outputs, self._seen = self._outputs, {}, {}
        if self.trainer.sanity_checking:
            return
        record: dict[str, float] = {"epoch": self.current_epoch}
        if self.optim.scheduler.active and self._step_lr is not None:
            record["lr"] = self._step_lr  # the rate of the epoch's last training step
        world = self.trainer.world_size
        names = sorted(self._sums)  # the same terms on every rank
        # epoch means over every rank: train_loss, train_ctr_loss, train_aux, ... (the ranks' weighted
        # terms of a batch sum to W times the global batch's mean)
        local = torch.tensor([float(self._sums[name]) for name in names], dtype=torch.float64)
        totals = all_sum(local, self.device)
        for name, total in zip(names, totals.tolist(), strict=True):
            record[f"train_{name}"] = total / (self._steps * world)
        self._sums, self._steps = {}, 0
        self.epoch_outputs = {}
        for idx, rows in sorted(outputs.items()):
            label, logits, group, row = self._split_outputs(rows)
            self.epoch_outputs[EVAL_SPLITS[idx]] = (label, logits, group, row)
            metrics = evaluate(label, logits.astype(np.float64), group)
            for key, value in metrics.items():
                record[f"{EVAL_SPLITS[idx]}_{key}"] = value
        if world > 1:  # model selection and stopping must agree: one line on every rank, never a hang
            same_everywhere(repr(sorted(record.items())), "the epoch's metrics", self.device)
        record["eval_s"] = time.perf_counter() - self._eval_t0
        self.eval_seconds += record["eval_s"]
        self.history.append(record)
        # An undefined metric (e.g. the GAUC of a split with no user having both classes) is not
        # logged; the checkpoint does not read logged values (ctrbench.engine.selection).
        loggable = {k: v for k, v in record.items() if k != "epoch" and not math.isnan(v)}
        shown = {k: loggable.pop(k) for k in PROGRESS_BAR if k in loggable}
        self.log_dict(loggable, add_dataloader_idx=False)
        if shown:
            self.log_dict(shown, prog_bar=True, add_dataloader_idx=False)

    # ---- resuming an interrupted job (checkpoints/last.ckpt) -------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The per-epoch history and the timing counters travel with the weights (plain types, so
        the file loads with ``weights_only=True``)."""
        checkpoint["ctrbench"] = {
            "history": [dict(h) for h in self.history],
            "train_seconds": self.train_seconds,
            "train_samples": self.train_samples,
            "eval_seconds": self.eval_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("ctrbench") or {}
        self.history[:] = [dict(h) for h in state.get("history", [])]  # the same list object
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.train_samples = int(state.get("train_samples", 0))
        self.eval_seconds = float(state.get("eval_seconds", 0.0))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, object]:
        """The optimizer, with its ``optim.scheduler`` when one is set (stepped per step or epoch)."""
        optimizer = build_optimizer(self.model, self.optim)
        scheduler = lightning_scheduler(optimizer, self.optim.scheduler)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
