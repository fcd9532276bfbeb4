"""BPR training: negative sampling, the loss, one-stage training and CERP's two stages.

Training never looks at test data by itself: model selection and early stopping use the
``validate`` callable that the caller passes (validation metrics by default, see
:mod:`cerp_core.experiment`). Every loop is seeded per epoch, checkpoints atomically at epoch
ends, and resumes from its checkpoint, so an interrupted run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
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
from cerp_core.schema import STRICT, setting

Validate = Callable[[Recommender], dict[str, float]]

T = TypeVar("T")


THRESHOLD_SCHEDULES = ("epoch", "step")


@dataclass
class TrainConfig:
    """Optimization settings of one training stage.

    Args:
        epochs: Upper bound on epochs of the stage (pruning stops earlier once every target
            is reached; retraining stops earlier when validation stops improving).
        batch_size: Positive (user, item) pairs per step.
        num_negatives: Negatives per positive; the BPR loss sums over them (paper: 5).
        resample_negatives: Draw fresh negatives every epoch (the paper's code draws them once).
        lr: Adam learning rate of embeddings and backbone (suite default 1e-2 converges in tens
            of epochs on CPU; the paper's code uses 1e-3, which ``protocol="paper"`` sets).
        weight_decay: Adam weight decay of embeddings and backbone (paper: 1e-5).
        threshold_lr: How fast pruning thresholds move, read by ``threshold_schedule``: with
            the suite's default 1.0 per epoch and :func:`~cerp_core.embeddings.make_embedding`'s
            CERP tables, the thresholds take every snapshot within 10 epochs on the synthetic
            data (``docs/method.md``).
        threshold_schedule: ``"epoch"`` (default): ``threshold_lr`` is the Adam learning rate
            of the thresholds per *epoch*: each step gets ``threshold_lr / steps_per_epoch``,
            so the thresholds travel the same distance per epoch of training samples at any
            batch size (a threshold far below the weights moves by about its learning rate per
            Adam step, whatever its tiny gradient). ``"step"``: the authors' form,
            ``threshold_lr`` per step (``None``: ``lr``), which at batch 8,192 travels ~1/30 of
            what it does at 256.
        threshold_weight_decay: Adam weight decay of pruning thresholds. With thresholds far
            below zero this decay, not the task loss, is what raises them and prunes.
        decay_ramp: Factor by which stage 1 multiplies the tables' decay (``pruning_l2``)
            after each epoch that :func:`stalled`: the thresholds have stopped rising (near
            ``sigmoid(0) = 0.5``, where their own decay holds them) and the non-zeros fall too
            slowly to reach the next target. ``1.0`` keeps the decay fixed.
        l2: Weight of ``0.5 * ||E_batch||^2 / batch`` on the batch's layer-0 embeddings.
        grad_clip: Max gradient norm (``None``: no clipping; paper: 100). Clipping reads every
            gradient each step, about half the cost of a full-table MF step on CPU.
        eval_every: Epochs between validations.
        patience: Validations without improvement before early stopping.
        selection_metric: Metric that selects the best epoch.
        seed: Seeds negative sampling and shuffling (per epoch, so resumes repeat exactly).
        progress: Show tqdm progress bars.
    """

    epochs: int = setting(30, help="bound of each stage")
    batch_size: int = setting(1024, help="positive pairs per step")
    num_negatives: int = setting(1, help="negatives per positive")
    resample_negatives: bool = setting(True, help="draw fresh negatives every epoch")
    lr: float = setting(1e-2, help="Adam lr of the weights")
    weight_decay: float = setting(0.0, help="Adam weight decay of the weights")
    threshold_lr: float | None = setting(1.0, help="Adam lr of pruning thresholds")
    threshold_schedule: str = setting(
        "epoch",
        choices=THRESHOLD_SCHEDULES,
        help="epoch: --threshold-lr per epoch of samples (batch-invariant); step: per optimizer "
        "step (the authors' form)",
    )
    threshold_weight_decay: float = setting(1e-5, help="Adam weight decay of pruning thresholds")
    decay_ramp: float = setting(
        2.0, help="factor on the stage-1 decay after each epoch that stalls short of a target "
        "(1: a fixed decay)"
    )  # fmt: skip
    l2: float = setting(1e-4, help="weight of the L2 penalty on the batch's layer-0 embeddings")
    grad_clip: float | None = setting(None, help="max gradient norm (none: no clipping)")
    eval_every: int = setting(1, help="epochs between validations")
    patience: int = setting(5, help="validations without progress before a stage stops")
    selection_metric: str = setting("ndcg@20", help="metric that selects the best epoch")
    seed: int = setting(0, flag="", help="seeds sampling and shuffling (set by --seed)")
    progress: bool = setting(True, changes_results=False, help="show progress bars")

    __pydantic_config__ = STRICT

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_negatives", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "threshold_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number > 0, got {value}")
        if self.threshold_schedule not in THRESHOLD_SCHEDULES:
            raise ValueError(
                f"TrainConfig.threshold_schedule must be one of {THRESHOLD_SCHEDULES}, got "
                f"{self.threshold_schedule!r}"
            )
        if self.threshold_schedule == "epoch" and self.threshold_lr is None:
            raise ValueError(
                "TrainConfig.threshold_lr must be a number under threshold_schedule 'epoch' "
                "(None, the weights' lr, is a per-step rate: use threshold_schedule 'step')"
            )
        for name in ("weight_decay", "threshold_weight_decay", "l2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.decay_ramp) and self.decay_ramp >= 1):
            raise ValueError(
                f"TrainConfig.decay_ramp must be a finite number >= 1, got {self.decay_ramp}"
            )


@dataclass
class TrainResult:
    """Outcome of one training stage: per-epoch history and the selected epoch."""

    history: pd.DataFrame
    best_epoch: int
    best_metrics: dict[str, float]
    seconds: float
    stopped_early: bool = False  # validation stopped improving before the epoch bound


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

    def epoch_of(self, snapshot: Snapshot) -> int:
        """The stage-1 epoch (from 1) in which ``snapshot``'s mask was taken; a magnitude
        snapshot is taken after the last one."""
        if snapshot.step is None:
            return len(self.history)
        return int(self.steps["epoch"].iloc[snapshot.step])


# ----------------------------------------------------------------------------- sampling, loss


def sample_negatives(
    train: sp.csr_matrix, users: np.ndarray, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform items ``[len(users), num_negatives]``, none of them a training positive.

    Vectorized rejection sampling: draw all, look the (user, item) keys up in the sorted keys
    of the training matrix, redraw only the collisions.
    """
    if not train.has_canonical_format:  # the key lookup needs sorted, unique indices per row
        train = train.copy()
        train.sum_duplicates()
    num_items = train.shape[1]
    counts = np.diff(train.indptr)
    if len(users) and counts[users].max() >= num_items:
        user = int(users[np.argmax(counts[users])])
        raise ValueError(
            f"user {user} has interacted with every one of the {num_items:,} training items, "
            "so no negative can be drawn for it; remove the user or add items"
        )
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


S = TypeVar("S")


def _resume(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    checkpoint: Path | None,
    kind: type[S],
) -> S | None:
    """Restore model and optimizer from ``checkpoint``; the stage's saved ``kind``, or None.

    A checkpoint of another stage or an older layout is refused with its path: resuming from
    it would silently restart or mix two runs."""
    state = load_checkpoint(checkpoint)
    if state is None:
        return None
    if not isinstance(state.get("stage"), kind):
        raise ValueError(
            f"checkpoint {checkpoint} does not hold a {kind.__name__} (another stage, or written "
            "by an older version of cerp-suite); delete it to restart this stage"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["stage"]


def _save(
    checkpoint: Path | None,
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    stage: Any,
) -> None:
    """Checkpoint model, optimizer and the stage's own dataclass, atomically (nothing without a
    path): a kill mid-write leaves the previous checkpoint intact."""
    if checkpoint is not None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "stage": stage}
        save_torch_atomic(checkpoint, state)


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


def threshold_step_lr(config: TrainConfig, num_pairs: int) -> float:
    """The thresholds' Adam learning rate per step under ``config.threshold_schedule``."""
    if config.threshold_schedule == "step":
        return config.lr if config.threshold_lr is None else config.threshold_lr
    assert config.threshold_lr is not None  # checked by TrainConfig
    return config.threshold_lr / math.ceil(num_pairs / config.batch_size)


def make_optimizer(
    model: Recommender, config: TrainConfig, num_pairs: int
) -> torch.optim.Optimizer:
    """Adam with the pruning thresholds in their own group: own weight decay, and the lr of
    ``config.threshold_schedule`` for an epoch of ``num_pairs`` training pairs."""
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
                "lr": threshold_step_lr(config, num_pairs),
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
    decay_scale: float = 1.0,
) -> dict[str, float]:
    """One pass over the training pairs (until ``on_step(bpr_loss)`` returns True); returns
    mean losses. With ``prune_epoch`` it adds the table's stage-1 loss, its decay scaled by
    ``decay_scale``.

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
                prune = model.embedding.pruning_loss(layer0, seen, decay_scale)
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


def early_stopping(
    score: float, best: float | None, stale: int, patience: int
) -> tuple[bool, int, bool]:
    """One validation's verdict: ``(improved, stale, stop)``.

    ``improved`` when ``score`` beats ``best`` (any score beats ``None``); ``stale`` counts the
    validations since the last improvement; ``stop`` once it reaches ``patience``.
    """
    improved = best is None or score > best
    stale = 0 if improved else stale + 1
    return improved, stale, stale >= patience


@dataclass
class TrainCheckpoint:
    """What a training stage needs to resume: its rows, the best epoch so far, its clock."""

    rows: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0  # epochs finished
    seconds: float = 0.0
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_model: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    stale: int = 0
    stopped: bool = False


def train(
    model: Recommender,
    data: Interactions,
    config: TrainConfig,
    validate: Validate | None = None,
    checkpoint: Path | None = None,
    description: str = "train",
) -> TrainResult:
    """Train with BPR; keep the best epoch by ``validate`` and stop early without progress
    (:func:`early_stopping`).

    Without ``validate`` every epoch runs and the last one is kept. With ``checkpoint`` the
    state is saved after each epoch and a rerun resumes from it.
    """
    optimizer = make_optimizer(model, config, data.train.nnz)
    state = _resume(model, optimizer, checkpoint, TrainCheckpoint) or TrainCheckpoint()
    with _epoch_bar(state.epoch, config, description) as epochs:
        for epoch in epochs:
            if state.stopped:
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
                best = state.best_metrics.get(config.selection_metric)
                improved, state.stale, state.stopped = early_stopping(
                    score, best, state.stale, config.patience
                )
                if improved:
                    state.best_epoch, state.best_metrics = epoch + 1, metrics
                    state.best_model = copy.deepcopy(model.state_dict())
                epochs.set_postfix(
                    {config.selection_metric: f"{score:.4f}", "loss": f"{row['bpr_loss']:.4f}"}
                )
            state.seconds += time.perf_counter() - began
            row["seconds"] = state.seconds
            state.rows.append(row)
            state.epoch = epoch + 1
            _save(checkpoint, model, optimizer, state)
    if state.best_model is not None:
        model.load_state_dict(state.best_model)
    best_epoch = state.best_epoch if state.best_model is not None else len(state.rows)
    return TrainResult(
        pd.DataFrame(state.rows), best_epoch, state.best_metrics, state.seconds, state.stopped
    )


LEARNT_WINDOW = 50
"""Stage-1 steps whose mean BPR loss tells whether the model has learnt when a mask is taken."""
LEARNT_MARGIN = 0.005
"""A mean BPR loss within this share of chance (``k ln 2`` for ``k`` negatives) has learnt
nothing: masks chosen then reflect the initialization, not the data."""


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
            "training (lower threshold_lr, pruning_l2 or the regularizer weight, or train longer)"
        )


SETTLED_TRAVEL = 0.01
"""Mean raw threshold travel per epoch below which the thresholds have settled."""
RAMP_HORIZON = 10
"""Epochs within which, at an epoch's pace, stage 1 should reach its next target; slower and
with settled thresholds, the epoch has :func:`stalled`."""


@dataclass
class PruneStep:
    """What stage 1 reads after one optimizer step (step 0: the initialization)."""

    step: int
    epoch: int
    num_nonzero: int
    bpr_loss: float  # NaN for step 0
    threshold: float  # mean raw threshold over every entry; NaN for a table without thresholds


Masks = dict[str, torch.Tensor]


def stalled(start: PruneStep, end: PruneStep, target: int) -> bool:
    """Whether the epoch from ``start`` to ``end`` left stage 1 stuck above ``target``.

    Stuck: the mean raw threshold moved less than :data:`SETTLED_TRAVEL` (the thresholds have
    stopped rising, so only the tables' decay still prunes) and the non-zeros fell by less than
    ``1 / RAMP_HORIZON`` of their distance to ``target``. Tables without thresholds (NaN) never
    stall. Stage 1 answers a stalled epoch by raising the decay (``TrainConfig.decay_ramp``).
    """
    settled = abs(end.threshold - start.threshold) < SETTLED_TRAVEL
    pace = start.num_nonzero - end.num_nonzero
    return settled and pace * RAMP_HORIZON < end.num_nonzero - target


@dataclass
class SnapshotTracker:
    """Stage 1's decisions: fed one :class:`PruneStep` per optimizer step, it logs the steps
    and takes a snapshot for every target the non-zero count reaches, after checking that the
    model has learnt (:func:`check_learnt`). Plain data, so it travels in a checkpoint.

    Args:
        pending: Targets not reached yet, descending.
        chance: BPR loss of a model that learnt nothing (``k ln 2``).
        steps: Every step so far, the initialization first.
        snapshots: The snapshots taken, largest target first.
    """

    pending: list[int]
    chance: float
    steps: list[PruneStep] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Every target has its snapshot."""
        return not self.pending

    def observe(self, step: PruneStep, masks: Callable[[], Masks]) -> bool:
        """Log ``step``; snapshot (``masks()``, read only then) each target it reaches. Returns
        whether every target is reached."""
        self.steps.append(step)
        while self.pending and step.num_nonzero <= self.pending[0]:
            losses = [s.bpr_loss for s in self.steps]
            check_learnt(losses, self.chance, f"step {step.step} (target {self.pending[0]})")
            target = self.pending.pop(0)
            self.snapshots.append(
                Snapshot(target, masks(), step.num_nonzero, step.step, "threshold")
            )
        return self.done

    def complete_by_magnitude(self, magnitude_masks: Callable[[int], Masks]) -> None:
        """Snapshot every target left by ``magnitude_masks(target)`` (``source="magnitude"``)."""
        if self.pending:
            losses = [s.bpr_loss for s in self.steps]
            check_learnt(
                losses, self.chance, f"the end of stage 1 (magnitude snapshots for {self.pending})"
            )
        for target in self.pending:
            masks = magnitude_masks(target)
            count = int(sum(int(m.sum()) for m in masks.values()))
            self.snapshots.append(Snapshot(target, masks, count, None, "magnitude"))
        self.pending = []


@dataclass
class PruneCheckpoint:
    """What stage 1 needs to resume: the initial state, the tracker, epoch rows, its clock,
    and the factor its decay ramp has reached."""

    initial: dict[str, torch.Tensor] = field(repr=False)
    tracker: SnapshotTracker
    rows: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0  # epochs finished
    seconds: float = 0.0
    decay_scale: float = 1.0


def mean_threshold(embedding: PrunableEmbedding) -> float:
    """Mean raw threshold over every entry of every table (NaN without thresholds)."""
    raws = embedding.threshold_parameters()
    if not raws:
        return math.nan
    total = sum(float(raw.detach().sum()) for raw in raws)
    return total / sum(raw.numel() for raw in raws)


def prune(
    model: Recommender,
    data: Interactions,
    config: TrainConfig,
    checkpoint: Path | None = None,
) -> PruneResult:
    """Stage 1: train with soft thresholds (and CERP's regularizer) until each target is hit.

    After every optimizer step the exact non-zero count goes to a :class:`SnapshotTracker`,
    which keeps the masks the first time the count is at or below a target; the stage ends at
    the step that reaches the last. After each epoch that :func:`stalled`, the tables' decay is
    multiplied by ``config.decay_ramp``. Targets still unreached after ``config.epochs`` epochs
    are completed by magnitude pruning of the effective weights (``source="magnitude"``).
    """
    embedding = model.embedding
    if not isinstance(embedding, PrunableEmbedding):
        raise TypeError(f"{type(embedding).__name__} is not prunable")
    optimizer = make_optimizer(model, config, data.train.nnz)
    initial = copy.deepcopy(model.state_dict())
    state = _resume(model, optimizer, checkpoint, PruneCheckpoint)
    if state is None:
        state = _first_prune_state(embedding, config, initial)
    tracker = state.tracker

    def on_step(epoch: int, loss: float) -> bool:
        step = PruneStep(
            len(tracker.steps), epoch + 1, embedding.num_nonzero(), loss, mean_threshold(embedding)
        )
        return tracker.observe(step, embedding.current_masks)

    with _epoch_bar(state.epoch, config, "prune") as epochs:
        for epoch in epochs:
            if tracker.done:
                break
            began = time.perf_counter()
            first = tracker.steps[-1]
            on_epoch_step = functools.partial(on_step, epoch)
            losses = _run_epoch(
                model, optimizer, data, config, epoch, epoch, on_epoch_step, state.decay_scale
            )
            state.seconds += time.perf_counter() - began
            last = tracker.steps[-1]
            state.rows.append(
                {
                    "epoch": epoch + 1,
                    **losses,
                    "num_nonzero": last.num_nonzero,
                    "threshold": last.threshold,
                    "decay_scale": state.decay_scale,
                    "seconds": state.seconds,
                }
            )
            if not tracker.done and stalled(first, last, tracker.pending[0]):
                state.decay_scale *= config.decay_ramp
            state.epoch = epoch + 1
            epochs.set_postfix({"nonzero": last.num_nonzero, "targets_left": len(tracker.pending)})
            _save(checkpoint, model, optimizer, state)
    tracker.complete_by_magnitude(embedding.magnitude_masks)
    _check_not_empty(tracker.snapshots)
    return PruneResult(
        sorted(tracker.snapshots, key=lambda s: -s.target),
        pd.DataFrame(state.rows),
        pd.DataFrame([dataclasses.asdict(step) for step in tracker.steps]),
        state.seconds,
        state.initial,
    )


def _first_prune_state(
    embedding: PrunableEmbedding, config: TrainConfig, initial: dict[str, torch.Tensor]
) -> PruneCheckpoint:
    """Stage 1's state before its first step; a table that its initial thresholds already
    prune to the first target is refused."""
    chance = float(bpr_loss(torch.zeros(1), torch.zeros(1, config.num_negatives)))
    start = PruneStep(0, 0, embedding.num_nonzero(), math.nan, mean_threshold(embedding))
    if embedding.targets and start.num_nonzero <= embedding.targets[0]:
        raise ValueError(
            f"the table starts with {start.num_nonzero} non-zeros, at or below the target "
            f"{embedding.targets[0]}: its initial thresholds prune it before any training; "
            "lower threshold_init or enlarge the table (bucket_factor)"
        )
    return PruneCheckpoint(initial, SnapshotTracker(list(embedding.targets), chance, [start]))


def _check_not_empty(snapshots: list[Snapshot]) -> None:
    """Refuse snapshots without a single non-zero: such a table cannot be retrained."""
    empty = [s.target for s in snapshots if s.num_nonzero == 0]
    if empty:
        raise ValueError(
            f"pruning left no non-zero entry for the target(s) {empty}: a table without "
            "parameters cannot be retrained; the thresholds overshot (lower threshold_lr)"
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
