"""Training: sampler, loss, learning, determinism, resume, NaN errors, two-stage pruning."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cerp_core.data import Interactions, load_dataset
from cerp_core.embeddings import make_embedding
from cerp_core.metrics import evaluate
from cerp_core.models import make_model
from cerp_core.train import (
    PruneResult,
    Snapshot,
    TrainConfig,
    bpr_loss,
    check_learnt,
    prune,
    retrain,
    sample_negatives,
    train,
)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return load_dataset("synthetic", num_users=300, num_items=400, seed=0)


def fresh_model(data: Interactions, method: str = "full", budget: float = 1.0, **options):
    torch.manual_seed(0)
    table = make_embedding(method, data.num_entities, 16, budget, **options)
    return make_model("mf", table, data)


def validator(data: Interactions):
    return lambda model: evaluate(model, data.train, data.valid, ks=(20,))


def quick(**overrides) -> TrainConfig:
    settings = {"epochs": 3, "batch_size": 512, "lr": 1e-2, "progress": False}
    return TrainConfig(**{**settings, **overrides})


def test_negatives_are_never_training_positives(data: Interactions) -> None:
    users, _ = data.train_pairs()
    rng = np.random.default_rng(0)
    negatives = sample_negatives(data.train, users, 5, rng)
    assert negatives.shape == (len(users), 5)
    hits = np.asarray(data.train[np.repeat(users, 5), negatives.ravel()]).ravel()
    assert hits.sum() == 0
    again = sample_negatives(data.train, users, 5, np.random.default_rng(0))
    assert np.array_equal(negatives, again)


def test_sampling_a_nearly_full_user_still_avoids_positives() -> None:
    import scipy.sparse as sp

    dense = np.ones((2, 50), dtype=np.float32)
    dense[0, 7] = 0  # user 0 has exactly one negative: item 7
    dense[1, :25] = 0
    negatives = sample_negatives(
        sp.csr_matrix(dense), np.array([0, 1]), 20, np.random.default_rng(1)
    )
    assert (negatives[0] == 7).all()
    assert (negatives[1] < 25).all()
    with pytest.raises(ValueError, match="user 0 has interacted with every one of the 4 training"):
        sample_negatives(sp.csr_matrix(np.ones((1, 4))), np.array([0]), 1, np.random.default_rng(0))


def test_sampling_from_a_matrix_with_unsorted_indices_avoids_positives() -> None:
    import scipy.sparse as sp

    # user 0 holds items 7..0 in descending order; item 8 and 9 are its only negatives
    train = sp.csr_matrix((np.ones(8), np.arange(7, -1, -1), [0, 8]), shape=(1, 10))
    assert not train.has_sorted_indices
    negatives = sample_negatives(train, np.zeros(500, dtype=np.int64), 4, np.random.default_rng(0))
    assert set(negatives.ravel().tolist()) == {8, 9}


def test_bpr_loss_matches_hand_computation() -> None:
    positive = torch.tensor([2.0, 0.0])
    negative = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = ((softplus(-1) + softplus(1)) + (softplus(0) + softplus(-1))) / 2
    assert bpr_loss(positive, negative).item() == pytest.approx(expected, rel=1e-6)


def test_short_run_learns_and_beats_popularity(data: Interactions) -> None:
    model = fresh_model(data)
    result = train(model, data, quick(epochs=8), validator(data))
    popularity = torch.tensor(data.item_popularity(), dtype=torch.float32).repeat(data.num_users, 1)
    from cerp_core.metrics import ranking_metrics

    baseline = ranking_metrics(popularity, data.train, data.valid, ks=(20,))["recall@20"]
    assert result.best_metrics["recall@20"] > 1.5 * baseline
    assert result.history["bpr_loss"].iloc[-1] < result.history["bpr_loss"].iloc[0]
    assert list(result.history["epoch"]) == list(range(1, len(result.history) + 1))


def test_same_seed_same_result_on_cpu(data: Interactions) -> None:
    first = train(fresh_model(data), data, quick(), validator(data))
    second = train(fresh_model(data), data, quick(), validator(data))
    cols = ["bpr_loss", "recall@20", "ndcg@20"]
    assert first.history[cols].equals(second.history[cols])
    third = train(fresh_model(data), data, quick(seed=1), validator(data))
    assert not first.history["bpr_loss"].equals(third.history["bpr_loss"])


def test_interrupted_training_resumes_exactly(data: Interactions, tmp_path: Path) -> None:
    reference = fresh_model(data)
    train(reference, data, quick(epochs=4))

    calls = {"n": 0}

    def interrupt_in_epoch_three(model) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return {"ndcg@20": float(calls["n"])}  # always improving: the last epoch is kept

    checkpoint = tmp_path / "train.pt"
    interrupted = fresh_model(data)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, data, quick(epochs=4), interrupt_in_epoch_three, checkpoint)
    resumed = fresh_model(data)
    calls["n"] = 10
    result = train(resumed, data, quick(epochs=4), interrupt_in_epoch_three, checkpoint)
    assert list(result.history["epoch"]) == [1, 2, 3, 4]
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_non_finite_loss_is_a_clear_error(data: Interactions) -> None:
    model = fresh_model(data)
    with torch.no_grad():
        model.embedding.weight[0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite in epoch 1"):
        train(model, data, quick(epochs=1))


def test_early_stopping_keeps_the_best_epoch(data: Interactions) -> None:
    scores = iter([0.1, 0.3, 0.2, 0.2, 0.2, 0.2])
    result = train(
        fresh_model(data),
        data,
        quick(epochs=6, patience=2),
        lambda model: {"ndcg@20": next(scores)},
    )
    assert result.best_epoch == 2 and result.best_metrics == {"ndcg@20": 0.3}
    assert len(result.history) == 4  # two validations without progress, then stop


@pytest.mark.parametrize("method", ["cerp", "pep", "magprune"])
def test_prune_then_retrain_respects_every_target(data: Interactions, method: str) -> None:
    model = fresh_model(data, method, [0.2, 0.1])
    table = model.embedding
    pruned = prune(model, data, quick(epochs=2, lr=0.05))
    assert [s.target for s in pruned.snapshots] == sorted(table.targets, reverse=True)
    assert pruned.steps["num_nonzero"].iloc[0] >= pruned.steps["num_nonzero"].iloc[-1]
    for snapshot in pruned.snapshots:
        assert snapshot.num_nonzero <= snapshot.target
        assert sum(int(m.sum()) for m in snapshot.masks.values()) <= snapshot.target
        retrain(model, pruned, snapshot, data, quick(epochs=2), validator(data))
        assert table.num_parameters() <= snapshot.target
        for name, mask in table.current_masks().items():
            assert not (mask & ~snapshot.masks[name]).any(), "a pruned entry came back"


def test_one_epoch_on_gowalla_beats_popularity(real_data_root: Path) -> None:
    from cerp_core.metrics import ranking_metrics

    gowalla = load_dataset("gowalla", root=real_data_root, valid_fraction=0.1)
    model = fresh_model(gowalla)
    result = train(model, gowalla, quick(epochs=1, batch_size=4096))
    users = torch.arange(2000)
    popularity = torch.tensor(gowalla.item_popularity(), dtype=torch.float32).repeat(2000, 1)
    sub = slice(0, 2000)
    baseline = ranking_metrics(popularity, gowalla.train[sub], gowalla.valid[sub], ks=(20,))
    learnt = ranking_metrics(model.scorer()(users).detach(), gowalla.train[sub],
                             gowalla.valid[sub], ks=(20,))  # fmt: skip
    assert result.history["bpr_loss"].iloc[0] < 0.69  # below log(2): it learnt in one epoch
    assert learnt["recall@20"] > baseline["recall@20"]


def test_a_table_pruned_before_training_is_refused(data: Interactions) -> None:
    """Thresholds that zero the table at step 0 would snapshot an untrained model."""
    model = fresh_model(data, "cerp", 0.1, threshold_init=0.0)  # sigmoid(0) = 0.5 > every |w|
    with pytest.raises(ValueError, match="prune it before any training"):
        prune(model, data, quick())


@pytest.fixture(scope="module")
def notebook_data() -> Interactions:
    """The tutorial's default data set: synthetic, 2,000 users x 3,000 items."""
    return load_dataset("synthetic", valid_fraction=0.1, seed=0)


@pytest.mark.parametrize(
    ("method", "backbone", "ramped"),
    [("cerp", "mf", False), ("cerp", "lightgcn", False), ("pep", "lightgcn", False),
     ("pep", "mf", True)],
)  # fmt: skip
@pytest.mark.slow
def test_with_the_defaults_the_thresholds_take_the_snapshots(
    notebook_data: Interactions, method: str, backbone: str, ramped: bool
) -> None:
    """At the tutorial's scale (d = 32, budgets 0.1 / 0.05 / 0.02, batch 1024) and the
    library's defaults (30 epochs at most), the thresholds take every snapshot, each while the
    BPR loss is clearly below chance (ln 2). CERP (its regularizer on) and PEP with LightGCN get
    there before their thresholds settle; PEP with MF stalls short of 2% until the decay ramp
    raises its decay (``TrainConfig.decay_ramp``)."""
    torch.manual_seed(0)
    table = make_embedding(method, notebook_data.num_entities, 32, (0.1, 0.05, 0.02))
    model = make_model(backbone, table, notebook_data)
    pruned = prune(model, notebook_data, TrainConfig(batch_size=1024, progress=False))
    assert [s.source for s in pruned.snapshots] == ["threshold"] * 3
    assert bool(pruned.history["decay_scale"].iloc[-1] > 1) == ramped
    if method == "cerp":
        assert table.regularizer_weight > 0 and pruned.history["pruning_loss"].iloc[0] < 0
    for snapshot in pruned.snapshots:  # what records report: snapshot_bpr_loss
        assert snapshot.num_nonzero <= snapshot.target
        assert pruned.loss_before(snapshot) < math.log(2) - 0.02


def test_a_snapshot_before_the_model_learnt_is_refused(data: Interactions) -> None:
    """Thresholds that rise in a few steps reach the target while BPR is still at chance; the
    mask would reflect the initialization, so stage 1 stops with an error instead."""
    model = fresh_model(data, "pep", 0.5, pruning_l2=0.0)
    with pytest.raises(ValueError, match=r"learnt nothing by step \d+ \(target \d+\).*chance is "
                                         r"0\.6931"):  # fmt: skip
        prune(model, data, quick(threshold_lr=5.0))


def test_stage_one_records_the_bpr_loss_of_every_step(data: Interactions) -> None:
    model = fresh_model(data, "pep", 0.5, pruning_l2=0.0)
    pruned = prune(model, data, quick(epochs=2))
    steps = pruned.steps
    assert math.isnan(steps["bpr_loss"].iloc[0])  # step 0 is the initialization
    assert steps["bpr_loss"].iloc[1] == pytest.approx(math.log(2), abs=0.01)
    per_epoch = steps.iloc[1:].groupby("epoch")["bpr_loss"].mean()
    assert per_epoch.to_numpy() == pytest.approx(pruned.history["bpr_loss"].to_numpy())
    assert per_epoch.iloc[-1] < per_epoch.iloc[0]  # it learns while it prunes


def test_check_learnt_reads_the_recent_mean_against_chance() -> None:
    chance = math.log(2)
    check_learnt([math.nan, 0.69, 0.60, 0.55], chance, "now")  # mean 0.613: learnt
    with pytest.raises(ValueError, match="mean BPR loss of its last 3 steps is 0.6920"):
        check_learnt([math.nan, 0.6931, 0.6920, 0.6909], chance, "now")
    check_learnt([math.nan], chance, "now")  # nothing measured yet: no verdict


def test_bars_that_stop_early_end_as_finished(data: Interactions, monkeypatch) -> None:
    """Stage 1 stops once its targets are reached and retraining stops early: their bars end
    complete (so a notebook shows them green, not red) and every bar is closed."""
    import cerp_core.train as training

    bars = []

    class Recorded(training.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(training, "tqdm", Recorded)
    model = fresh_model(data, "pep", 0.5, pruning_l2=0.0)
    config = quick(epochs=20, progress=True)
    pruned = prune(model, data, config)
    assert len(pruned.history) < 20  # stopped before its last epoch: the bars stopped early
    assert any(bar.desc == "prune" for bar in bars)
    assert all(bar.n == bar.total and bar.disable for bar in bars)  # finished and closed
    assert {bar.desc for bar in bars} >= {"prune", "epoch 1"}


def test_loss_before_a_snapshot_averages_the_steps_up_to_it() -> None:
    losses = [math.nan, *[0.7] * 10, *[0.5] * 50, *[0.3] * 5]  # steps 0..65
    steps = pd.DataFrame({"step": range(66), "epoch": 1, "num_nonzero": 0, "bpr_loss": losses})
    pruned = PruneResult([], pd.DataFrame(), steps, 0.0)
    at = Snapshot(target=1, masks={}, num_nonzero=1, step=60, source="threshold")
    assert pruned.loss_before(at) == pytest.approx(0.5)  # steps 11..60
    early = dataclasses.replace(at, step=3)
    assert pruned.loss_before(early) == pytest.approx(0.7)  # steps 1..3: fewer than 50 exist
    end = dataclasses.replace(at, step=None, source="magnitude")  # the last 50 steps: 16..65
    assert pruned.loss_before(end) == pytest.approx((45 * 0.5 + 5 * 0.3) / 50)
