"""BPR training: negative sampling, the loss, one-stage training and CERP's two stages.

Training never looks at test data by itself: model selection and early stopping use the
``validate`` callable that the caller passes (validation metrics by default, see
:mod:`cerp_core.experiment`). Every loop is seeded per epoch, checkpoints atomically at epoch
ends, and resumes from its checkpoint, so an interrupted run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cerp_core.data import Interactions
from cerp_core.embeddings import PrunableEmbedding
from cerp_core.io import load_checkpoint, save_torch_atomic
from cerp_core.models import Recommender
from cerp_core.schema import STRICT

Validate = Callable[[Recommender], dict[str, float]]

T = TypeVar("T")


@dataclass
class TrainConfig:
    """Optimisation settings of one training stage.

    Args:
        epochs: Upper bound on epochs of the stage (pruning stops earlier once every target
            is reached; retraining stops earlier when validation stops improving).
        batch_size: Positive (user, item) pairs per step.
        num_negatives: Negatives per positive; the BPR loss sums over them (paper: 5).
        resample_negatives: Draw fresh negatives every epoch (the paper's code draws them once).
        lr: Adam learning rate of embeddings and backbone (suite default 1e-2 converges in tens
            of epochs on CPU; the paper's code uses 1e-3, which ``protocol="paper"`` sets).
        weight_decay: Adam weight decay of embeddings and backbone (paper: 1e-5).
        threshold_lr: Adam learning rate of pruning thresholds (``None``: ``lr``). A threshold
            far below zero moves by about this much per step, so 0.01 from the suite's init of
            -6 reaches CERP's Gowalla targets within 8 epochs at batch 8192 (the paper's 1e-3
            takes ~9e4 steps from -100). On Gowalla with MF, 0.01 keeps more accuracy than 0.1,
            which prunes before the model has learnt anything (see the README's results).
        threshold_weight_decay: Adam weight decay of pruning thresholds. With thresholds far
            below zero this decay, not the task loss, is what raises them and prunes.
        l2: Weight of ``0.5 * ||E_batch||^2 / batch`` on the batch's layer-0 embeddings.
        grad_clip: Max gradient norm (``None``: no clipping; paper: 100). Clipping reads every
            gradient each step, about half the cost of a full-table MF step on CPU.
        eval_every: Epochs between validations.
        patience: Validations without improvement before early stopping.
        selection_metric: Metric that selects the best epoch.
        seed: Seeds negative sampling and shuffling (per epoch, so resumes repeat exactly).
        progress: Show tqdm progress bars.
    """

    epochs: int = 30
    batch_size: int = 1024
    num_negatives: int = 1
    resample_negatives: bool = True
    lr: float = 1e-2
    weight_decay: float = 0.0
    threshold_lr: float | None = 0.01
    threshold_weight_decay: float = 1e-5
    l2: float = 1e-4
    grad_clip: float | None = None
    eval_every: int = 1
    patience: int = 5
    selection_metric: str = "ndcg@20"
    seed: int = 0
    progress: bool = True

    __pydantic_config__ = STRICT

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_negatives", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "threshold_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number > 0, got {value}")
        for name in ("weight_decay", "threshold_weight_decay", "l2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class TrainResult:
    """Outcome of one training stage: per-epoch history and the selected epoch."""

    history: pd.DataFrame
    best_epoch: int
    best_metrics: dict[str, float]
    seconds: float


@dataclass
class Snapshot:
    """The masks kept for one pruning target, and how they were obtained."""

    target: int
    masks: dict[str, torch.Tensor]
    num_nonzero: int
    step: int | None
    source: str  # "threshold": reached by pruning; "magnitude": completed by magnitude


@dataclass
class PruneResult:
    """Outcome of stage 1: a snapshot per target, per-epoch and per-step histories."""

    snapshots: list[Snapshot]
    history: pd.DataFrame
    steps: pd.DataFrame
    seconds: float
    initial_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def loss_before(self, snapshot: Snapshot) -> float:
        """Mean BPR loss of the :data:`LEARNT_WINDOW` steps up to ``snapshot``'s step (the last
        step for a magnitude snapshot): how far the model had learnt when the mask was chosen
        (``k ln 2`` for ``k`` negatives is chance)."""
        end = len(self.steps) if snapshot.step is None else snapshot.step + 1
        recent = recent_losses(self.steps["bpr_loss"].iloc[:end].tolist())
        return sum(recent) / len(recent) if recent else math.nan


# ----------------------------------------------------------------------------- sampling, loss


def sample_negatives(
    train: sp.csr_matrix, users: np.ndarray, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform items ``[len(users), num_negatives]``, none of them a training positive.

    Vectorised rejection sampling: draw all, look the (user, item) keys up in the sorted keys
    of the training matrix, redraw only the collisions.
    """
    if not train.has_canonical_format:  # the key lookup needs sorted, unique indices per row
        train = train.copy()
        train.sum_duplicates()
    num_items = train.shape[1]
    counts = np.diff(train.indptr)
    if len(users) and counts[users].max() >= num_items:
        raise ValueError("a user has interacted with every item; no negative can be drawn")
    positive_keys = np.repeat(np.arange(train.shape[0], dtype=np.int64), counts) * num_items
    positive_keys += train.indices
    negatives = rng.integers(0, num_items, size=(len(users), num_negatives))
    todo = np.arange(negatives.size)
    row_users = np.repeat(users.astype(np.int64), num_negatives)
    while len(todo):
        keys = row_users[todo] * num_items + negatives.flat[todo]
        at = np.searchsorted(positive_keys, keys).clip(max=len(positive_keys) - 1)
        todo = todo[positive_keys[at] == keys]
        negatives.flat[todo] = rng.integers(0, num_items, size=len(todo))
    return negatives


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``mean_u sum_j softplus(s_uj - s_ui)``: BPR summed over negatives, mean over positives.

    Args:
        positive: ``[B]`` scores of positive items.
        negative: ``[B, k]`` scores of sampled negatives.
    """
    return F.softplus(negative - positive[:, None]).sum(dim=1).mean()


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    save_torch_atomic(path, state)


def _resume(
    model: Recommender, optimizer: torch.optim.Optimizer, checkpoint: Path | None
) -> dict[str, Any] | None:
    """Restore model and optimiser from ``checkpoint``; the stage's own saved values, or None."""
    state = load_checkpoint(checkpoint)
    if state is not None:
        model.load_state_dict(state.pop("model"))
        optimizer.load_state_dict(state.pop("optimizer"))
    return state


def _save(
    checkpoint: Path | None,
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    **progress: Any,
) -> None:
    """Checkpoint model, optimiser and the stage's ``progress`` (nothing without a path)."""
    if checkpoint is not None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **progress}
        save_checkpoint(checkpoint, state)


class Progress(Generic[T]):
    """The items of a loop, counted on a tqdm bar (:func:`progress_bar`)."""

    def __init__(self, items: Iterable[T], bar: tqdm) -> None:
        self.items, self.bar = items, bar

    def __iter__(self) -> Iterator[T]:
        for item in self.items:
            yield item
            self.bar.update()

    def set_postfix(self, values: dict[str, Any]) -> None:
        """Show ``values`` after the bar (e.g. the last validation score)."""
        self.bar.set_postfix(values)


@contextlib.contextmanager
def progress_bar(items: Iterable[T], **options: Any) -> Iterator[Progress[T]]:
    """Iterate ``items`` on a tqdm bar that ends as *finished* when the loop stops early on
    purpose (targets reached, early stopping): its total becomes the count reached, so a
    notebook bar ends green and labelled, not red; an exception leaves it as it stands.

    The bar is advanced by hand, never by tqdm's own iterator, whose clean-up on ``break``
    closes a bar short of its total as failed before the total can be corrected."""
    bar = tqdm(**options)
    try:
        yield Progress(items, bar)
    except BaseException:
        bar.close()
        raise
    if not bar.disable and bar.total is not None and bar.n < bar.total:
        count, started = bar.n, bar.start_t
        bar.reset(total=count)  # the only way to move a notebook bar's end (its widget's max)
        bar.start_t = started  # keep the elapsed time
        bar.update(count)
    bar.close()


def _epoch_bar(start_epoch: int, config: TrainConfig, description: str):
    """The stage's epochs from ``start_epoch``, as a progress bar that counts resumed ones."""
    return progress_bar(
        range(start_epoch, config.epochs),
        desc=description,
        initial=start_epoch,
        total=config.epochs,
        disable=not config.progress,
    )


# ----------------------------------------------------------------------------- epochs


def make_optimizer(model: Recommender, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the pruning thresholds in their own group (own lr and weight decay)."""
    embedding = model.embedding
    thresholds = (
        embedding.threshold_parameters() if isinstance(embedding, PrunableEmbedding) else []
    )
    threshold_ids = {id(p) for p in thresholds}
    others = [p for p in model.parameters() if id(p) not in threshold_ids and p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": others, "lr": config.lr, "weight_decay": config.weight_decay}
    ]
    if thresholds:
        groups.append(
            {
                "params": thresholds,
                "lr": config.lr if config.threshold_lr is None else config.threshold_lr,
                "weight_decay": config.threshold_weight_decay,
            }
        )
    return torch.optim.Adam(groups)


def _epoch_batches(
    data: Interactions, config: TrainConfig, epoch: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (users ``[B]``, items ``[B, 1 + k]``) batches, positive item first."""
    users, items = data.train_pairs()
    rng = np.random.default_rng([config.seed, 0, epoch])
    negative_rng = np.random.default_rng(
        [config.seed, 1, epoch if config.resample_negatives else 0]
    )
    negatives = sample_negatives(data.train, users, config.num_negatives, negative_rng)
    order = rng.permutation(len(users))
    batch_users = torch.from_numpy(users[order]).to(device)
    batch_items = torch.from_numpy(np.column_stack([items, negatives])[order]).to(device)
    for start in range(0, len(order), config.batch_size):
        stop = start + config.batch_size
        yield batch_users[start:stop], batch_items[start:stop]


def _run_epoch(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    data: Interactions,
    config: TrainConfig,
    epoch: int,
    prune_epoch: int | None = None,
    on_step: Callable[[float], bool] | None = None,
) -> dict[str, float]:
    """One pass over the training pairs (until ``on_step(bpr_loss)`` returns True); returns
    mean losses.

    Raises on a non-finite loss.
    """
    model.train()
    device = model.device
    totals = torch.zeros(3, device=device)
    steps = 0
    batches = _epoch_batches(data, config, epoch, device)
    pairs = data.train.nnz
    total = -(-pairs // config.batch_size)
    shown = {"total": total, "desc": f"epoch {epoch + 1}", "leave": False}
    with progress_bar(batches, **shown, disable=not config.progress) as bar:
        for users, items in bar:
            scores, layer0 = model.score_batch(users, items)
            task = bpr_loss(scores[:, 0], scores[:, 1:])
            l2 = config.l2 * 0.5 * layer0.pow(2).sum() / len(users)
            if prune_epoch is not None:  # epochs of samples seen, fractional
                seen = prune_epoch + steps * config.batch_size / pairs
                prune = model.embedding.pruning_loss(layer0, seen)
            else:
                prune = torch.zeros((), device=device)
            loss = task + l2 + prune
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            totals += torch.stack([task.detach(), l2.detach(), prune.detach()])
            steps += 1
            if on_step is not None and on_step(float(task.detach())):
                break
    bpr, l2_mean, prune_mean = (totals / max(steps, 1)).tolist()
    if not np.isfinite([bpr, l2_mean, prune_mean]).all():
        raise FloatingPointError(
            f"loss became non-finite in epoch {epoch + 1} (bpr={bpr}, l2={l2_mean}, "
            f"pruning={prune_mean}); lower the learning rate or the regularizer weight"
        )
    return {"bpr_loss": bpr, "l2_loss": l2_mean, "pruning_loss": prune_mean}


# ----------------------------------------------------------------------------- stages


def train(
    model: Recommender,
    data: Interactions,
    config: TrainConfig,
    validate: Validate | None = None,
    checkpoint: Path | None = None,
    description: str = "train",
) -> TrainResult:
    """Train with BPR; keep the best epoch by ``validate`` and stop early without progress.

    Without ``validate`` every epoch runs and the last one is kept. With ``checkpoint`` the
    state is saved after each epoch and a rerun resumes from it.
    """
    optimizer = make_optimizer(model, config)
    state = _resume(model, optimizer, checkpoint)
    rows: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": -1, "metrics": {}, "model": None, "stale": 0}
    start_epoch, seconds = 0, 0.0
    if state is not None:
        rows, best, start_epoch, seconds = (
            state["rows"],
            state["best"],
            state["epoch"] + 1,
            state["seconds"],
        )
    with _epoch_bar(start_epoch, config, description) as epochs:
        for epoch in epochs:
            if best["stale"] >= config.patience:
                break
            began = time.perf_counter()
            row: dict[str, float] = {
                "epoch": epoch + 1,
                **_run_epoch(model, optimizer, data, config, epoch),
            }
            row["num_params"] = model.embedding.num_parameters()
            if validate is not None and (epoch + 1) % config.eval_every == 0:
                metrics = validate(model)
                row.update(metrics)
                score = metrics[config.selection_metric]
                if best["model"] is None or score > best["metrics"][config.selection_metric]:
                    best = {
                        "epoch": epoch + 1,
                        "metrics": metrics,
                        "stale": 0,
                        "model": copy.deepcopy(model.state_dict()),
                    }
                else:
                    best["stale"] += 1
                epochs.set_postfix(
                    {config.selection_metric: f"{score:.4f}", "loss": f"{row['bpr_loss']:.4f}"}
                )
            seconds += time.perf_counter() - began
            row["seconds"] = seconds
            rows.append(row)
            _save(checkpoint, model, optimizer, rows=rows, best=best, epoch=epoch, seconds=seconds)
    if best["model"] is not None:
        model.load_state_dict(best["model"])
    best_epoch = best["epoch"] if best["model"] is not None else len(rows)
    return TrainResult(pd.DataFrame(rows), best_epoch, best["metrics"], seconds)


LEARNT_WINDOW = 50
"""Stage-1 steps whose mean BPR loss tells whether the model has learnt when a mask is taken."""
LEARNT_MARGIN = 0.005
"""A mean BPR loss within this share of chance (``k ln 2`` for ``k`` negatives) has learnt
nothing: masks chosen then reflect the initialisation, not the data."""


def recent_losses(losses: list[float]) -> list[float]:
    """The measured (finite) step losses among the last :data:`LEARNT_WINDOW`."""
    return [loss for loss in losses[-LEARNT_WINDOW:] if math.isfinite(loss)]


def check_learnt(losses: list[float], chance: float, when: str) -> None:
    """Raise ``ValueError`` if the mean BPR loss of the last :data:`LEARNT_WINDOW` steps is
    still within :data:`LEARNT_MARGIN` of chance: a snapshot taken now would keep a mask chosen
    before the model learnt anything."""
    recent = recent_losses(losses)
    mean = sum(recent) / len(recent) if recent else -math.inf  # nothing measured: no verdict
    if mean >= (1 - LEARNT_MARGIN) * chance:
        raise ValueError(
            f"stage 1 has learnt nothing by {when}: the mean BPR loss of its last {len(recent)} "
            f"steps is {mean:.4f}, chance is {chance:.4f}; the mask would be chosen before "
            "training (lower threshold_lr or the regularizer weight, or train longer)"
        )


def prune(
    model: Recommender,
    data: Interactions,
    config: TrainConfig,
    checkpoint: Path | None = None,
) -> PruneResult:
    """Stage 1: train with soft thresholds (and CERP's regularizer) until each target is hit.

    After every optimiser step the exact non-zero count is read; the first time it is at or
    below a target the masks are kept, and the stage ends at the step that reaches the last.
    Targets still unreached after ``config.epochs`` epochs are completed by magnitude pruning of
    the effective weights (``source="magnitude"``).
    """
    embedding = model.embedding
    if not isinstance(embedding, PrunableEmbedding):
        raise TypeError(f"{type(embedding).__name__} is not prunable")
    optimizer = make_optimizer(model, config)
    initial = copy.deepcopy(model.state_dict())
    state = _resume(model, optimizer, checkpoint)
    if state is None:
        snapshots: list[Snapshot] = []
        rows: list[dict[str, float]] = []
        steps: list[tuple[int, int, int]] = [(0, 0, embedding.num_nonzero())]
        step_losses: list[float] = [math.nan]  # the BPR loss of each step (none before step 1)
        start_epoch, seconds = 0, 0.0
    else:
        initial, snapshots, rows, steps = (
            state["initial"],
            state["snapshots"],
            state["rows"],
            state["steps"],
        )
        step_losses = state.get("step_losses", [math.nan] * len(steps))  # checkpoints before losses
        start_epoch, seconds = state["epoch"] + 1, state["seconds"]
    chance = float(bpr_loss(torch.zeros(1), torch.zeros(1, config.num_negatives)))
    pending = [t for t in embedding.targets if t not in {s.target for s in snapshots}]
    if state is None and pending and steps[0][2] <= pending[0]:
        raise ValueError(
            f"the table starts with {steps[0][2]} non-zeros, at or below the target "
            f"{pending[0]}: its initial thresholds prune it before any training; lower "
            "threshold_init or enlarge the table (bucket_factor)"
        )

    def on_step(epoch: int, loss: float) -> bool:
        """Record the non-zeros, snapshot reached targets; True once none is left."""
        nonzero = embedding.num_nonzero()
        steps.append((len(steps), epoch + 1, nonzero))
        step_losses.append(loss)
        while pending and nonzero <= pending[0]:
            check_learnt(step_losses, chance, f"step {len(steps) - 1} (target {pending[0]})")
            snapshots.append(
                Snapshot(
                    pending.pop(0), embedding.current_masks(), nonzero, len(steps) - 1, "threshold"
                )
            )
        return not pending

    with _epoch_bar(start_epoch, config, "prune") as epochs:
        for epoch in epochs:
            if not pending:
                break
            began = time.perf_counter()
            losses = _run_epoch(
                model, optimizer, data, config, epoch, epoch, lambda x, e=epoch: on_step(e, x)
            )
            seconds += time.perf_counter() - began
            nonzero = steps[-1][2]
            rows.append({"epoch": epoch + 1, **losses, "num_nonzero": nonzero, "seconds": seconds})
            epochs.set_postfix({"nonzero": nonzero, "targets_left": len(pending)})
            _save(
                checkpoint,
                model,
                optimizer,
                initial=initial,
                snapshots=snapshots,
                rows=rows,
                steps=steps,
                step_losses=step_losses,
                epoch=epoch,
                seconds=seconds,
            )
    if pending:
        check_learnt(step_losses, chance, f"the end of stage 1 (magnitude snapshots for {pending})")
    for target in pending:
        masks = embedding.magnitude_masks(target)
        count = int(sum(int(m.sum()) for m in masks.values()))
        snapshots.append(Snapshot(target, masks, count, None, "magnitude"))
    empty = [s.target for s in snapshots if s.num_nonzero == 0]
    if empty:
        raise ValueError(
            f"pruning left no non-zero entry for the target(s) {empty}: a table without "
            "parameters cannot be retrained; the thresholds overshot (lower threshold_lr)"
        )
    snapshots.sort(key=lambda s: -s.target)
    return PruneResult(
        snapshots,
        pd.DataFrame(rows),
        pd.DataFrame(steps, columns=["step", "epoch", "num_nonzero"]).assign(bpr_loss=step_losses),
        seconds,
        initial,
    )


def retrain(
    model: Recommender,
    pruned: PruneResult,
    snapshot: Snapshot,
    data: Interactions,
    config: TrainConfig,
    validate: Validate | None = None,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Stage 2: rewind every weight to its initial value, fix the snapshot's mask, train."""
    model.load_state_dict(pruned.initial_state)
    model.embedding.rewind(snapshot.masks)
    return train(
        model, data, config, validate, checkpoint, description=f"retrain {snapshot.target}"
    )
