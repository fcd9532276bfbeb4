"""Backbones: shapes, scoring paths that must agree, LightGCN's graph, the MLP's normalization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cerp_core.data import Interactions
from cerp_core.embeddings import FullEmbedding
from cerp_core.models import (
    MF,
    MODELS,
    NCFMLP,
    PAPER_HIDDEN,
    LightGCN,
    Recommender,
    make_model,
    normalized_adjacency,
)
from cerp_core.models.lightgcn import csr_tensor, propagate

NUM_USERS, NUM_ITEMS, DIM = 4, 6, 8
TRAIN = sp.csr_matrix(
    np.array(
        [
            [1, 0, 1, 0, 0, 0],
            [0, 1, 1, 0, 0, 1],
            [1, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 1, 0],
        ],
        dtype=np.float32,
    )
)
USERS = torch.tensor([0, 2, 3])
ITEMS = torch.tensor([[0, 1], [5, 2], [4, 4]])


def build(name: str, device: str, **kwargs) -> Recommender:
    torch.manual_seed(0)
    embedding = FullEmbedding(NUM_USERS + NUM_ITEMS, DIM).to(device)
    return make_model(name, embedding, TRAIN, **kwargs)


def warm_up_batchnorm(model: Recommender, device: str) -> None:
    """One training-mode pass so that BatchNorm's running statistics are not the identity."""
    model.train()
    model(USERS.to(device), ITEMS.to(device))
    model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes(name: str, device: str) -> None:
    model = build(name, device)
    users, items = USERS.to(device), ITEMS.to(device)
    assert model(users, items).shape == (3, 2)
    assert model.scorer()(users).shape == (3, NUM_ITEMS)
    ids = torch.cat([users, items.reshape(-1) + NUM_USERS])
    expected = model.embedding.weight[ids]  # users once per row, then the items: layer 0
    torch.testing.assert_close(model.score_batch(users, items)[1], expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_users_equals_forward_on_all_items(name: str, device: str) -> None:
    model = build(name, device)
    warm_up_batchnorm(model, device)
    users = torch.arange(NUM_USERS, device=device)
    all_items = torch.arange(NUM_ITEMS, device=device).expand(NUM_USERS, -1)
    with torch.no_grad():
        expected = model(users, all_items)
        torch.testing.assert_close(model.scorer()(users), expected)


def test_mlp_scorer_chunks_agree() -> None:
    model = build("mlp", "cpu", hidden=(16, 8, 4))
    warm_up_batchnorm(model, "cpu")
    users = torch.arange(NUM_USERS)
    with torch.no_grad():
        whole = model.scorer()(users)
        model.chunk_elements = 1  # one user per chunk
        torch.testing.assert_close(model.scorer()(users), whole)
        assert model.scorer()(users[:0]).shape == (0, NUM_ITEMS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_the_embedding(name: str, device: str) -> None:
    model = build(name, device)
    model(USERS.to(device), ITEMS.to(device)).sum().backward()
    grad = model.embedding.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[0].abs().sum() > 0  # a batch user
    assert grad[NUM_USERS + 4].abs().sum() > 0  # a batch item


def test_lightgcn_gradients_reach_graph_neighbours() -> None:
    # User 1 is not in the batch, but it shares item 2 with user 0 and so feeds user 0's score.
    model = build("lightgcn", "cpu", num_layers=2)
    model(torch.tensor([0]), torch.tensor([[0]])).sum().backward()
    assert model.embedding.weight.grad[1].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_entity_count_mismatch_raises(name: str) -> None:
    embedding = FullEmbedding(NUM_USERS + NUM_ITEMS + 1, DIM)
    with pytest.raises(ValueError, match="entities"):
        make_model(name, embedding, TRAIN)


def test_make_model_errors_and_counts() -> None:
    embedding = FullEmbedding(NUM_USERS + NUM_ITEMS, DIM)
    with pytest.raises(ValueError, match="unknown model"):
        make_model("gru", embedding, TRAIN)
    with pytest.raises(TypeError, match="training interactions"):
        make_model("lightgcn", embedding, (NUM_USERS, NUM_ITEMS))
    with pytest.raises(ValueError, match="shape"):
        LightGCN(embedding, NUM_USERS, NUM_ITEMS, TRAIN[:, :5])
    assert isinstance(make_model("mf", embedding, (NUM_USERS, NUM_ITEMS)), MF)
    empty = sp.csr_matrix(TRAIN.shape, dtype=np.float32)
    data = Interactions("tiny", NUM_USERS, NUM_ITEMS, TRAIN, empty, empty)
    from_data = make_model("lightgcn", embedding, data)
    torch.testing.assert_close(
        from_data.adjacency.to_dense(),
        make_model("lightgcn", embedding, TRAIN).adjacency.to_dense(),
    )
    assert make_model("mlp", embedding, TRAIN, hidden=(4,)).mlp[0].out_features == 4


def test_normalized_adjacency_by_hand() -> None:
    # 2 users x 3 items: u0-i0, u0-i1, u1-i1, u1-i2 (stored with a rating value and a duplicate,
    # which must still count as one edge). Degrees: u0 2, u1 2, i0 1, i1 2, i2 1.
    rows, cols = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 2, 2])
    train = sp.csr_matrix((np.array([5.0, 1.0, 1.0, 3.0, 1.0]), (rows, cols)), shape=(2, 3))
    a, b = 1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 2)
    expected = np.array(
        [
            [0, 0, a, b, 0],
            [0, 0, 0, b, a],
            [a, 0, 0, 0, 0],
            [b, b, 0, 0, 0],
            [0, a, 0, 0, 0],
        ]
    )
    np.testing.assert_allclose(normalized_adjacency(train).toarray(), expected, rtol=1e-6)
    model = LightGCN(FullEmbedding(5, DIM), 2, 3, train)
    np.testing.assert_allclose(model.adjacency.to_dense().numpy(), expected, rtol=1e-6)
    assert "adjacency" not in model.state_dict()


def test_isolated_nodes_get_zero_rows() -> None:
    train = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))
    adjacency = normalized_adjacency(train).toarray()
    np.testing.assert_array_equal(adjacency, [[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0] * 4])


def test_lightgcn_propagation_by_hand() -> None:
    """Mean of layers 0..2 over the training graph only, against dense matrix algebra."""
    model = build("lightgcn", "cpu", num_layers=2)
    table = model.embedding.weight.detach().double()
    adjacency = torch.from_numpy(normalized_adjacency(TRAIN).toarray()).double()
    final = (table + adjacency @ table + adjacency @ adjacency @ table) / 3
    expected = final[:NUM_USERS] @ final[NUM_USERS:].T
    with torch.no_grad():
        scores = model.scorer()(torch.arange(NUM_USERS)).double()
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)


def test_lightgcn_without_layers_is_mf(device: str) -> None:
    lightgcn = build("lightgcn", device, num_layers=0)
    mf = MF(lightgcn.embedding, NUM_USERS, NUM_ITEMS)
    users, items = USERS.to(device), ITEMS.to(device)
    torch.testing.assert_close(lightgcn(users, items), mf(users, items))
    torch.testing.assert_close(lightgcn.scorer()(users), mf.scorer()(users))


def test_lightgcn_propagates_once_per_call(device: str) -> None:
    model = build("lightgcn", "cpu").to(device)  # the graph moves with the module
    assert model.adjacency.device.type == device
    table, calls = model.embedding, []

    def counted() -> torch.Tensor:
        calls.append(1)
        return type(table).embed_all(table)

    table.embed_all = counted
    model(USERS.to(device), ITEMS.to(device))
    assert len(calls) == 1
    score = model.scorer()
    score(USERS.to(device))
    score(USERS.to(device))
    assert len(calls) == 2


def random_bipartite(num_users: int, num_items: int, isolated: int, seed: int) -> sp.csr_matrix:
    """A random interaction matrix whose last ``isolated`` users and items have no edge."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((num_users, num_items)) < 0.2).astype(np.float32)
    dense[num_users - isolated :, :] = 0
    dense[:, num_items - isolated :] = 0
    return sp.csr_matrix(dense)


def coo_reference(adjacency: sp.csr_matrix, layer0: torch.Tensor, num_layers: int):
    """The propagation with ``torch.sparse.mm`` over a COO copy (the straightforward way)."""
    coo = adjacency.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    matrix = torch.sparse_coo_tensor(
        indices, torch.from_numpy(coo.data), coo.shape, check_invariants=True
    )
    matrix = matrix.coalesce()
    matrix = matrix.to(layer0.dtype)
    layer, total = layer0, layer0
    for _ in range(num_layers):
        layer = torch.sparse.mm(matrix, layer)
        total = total + layer
    return total / (num_layers + 1)


def test_csr_propagation_matches_coo_forward_and_gradients() -> None:
    adjacency = normalized_adjacency(random_bipartite(30, 40, isolated=3, seed=1))
    weights = torch.randn(70, 16)
    upstream = torch.randn(70, 16)
    results = []
    for run in (
        lambda x: propagate(csr_tensor(adjacency), x, 3),
        lambda x: coo_reference(adjacency, x, 3),
    ):
        layer0 = weights.clone().requires_grad_()
        out = run(layer0)
        (out * upstream).sum().backward()
        results.append((out.detach(), layer0.grad))
    (out, grad), (expected_out, expected_grad) = results
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_csr_propagation_passes_gradcheck_in_float64() -> None:
    adjacency = csr_tensor(normalized_adjacency(random_bipartite(5, 7, 1, seed=2)), torch.float64)
    layer0 = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: propagate(adjacency, x, 2), (layer0,))


def test_isolated_nodes_keep_only_their_own_layer0_share() -> None:
    """Nodes without edges get nothing from the graph: their later layers are zero."""
    train = random_bipartite(10, 12, isolated=2, seed=3)
    layer0 = torch.randn(22, 4)
    final = propagate(csr_tensor(normalized_adjacency(train)), layer0, 3)
    isolated = [8, 9, 20, 21]
    torch.testing.assert_close(final[isolated], layer0[isolated] / 4)
    zero_layer0 = layer0.clone()
    zero_layer0[isolated] = 0
    final = propagate(csr_tensor(normalized_adjacency(train)), zero_layer0, 3)
    assert torch.count_nonzero(final[isolated]) == 0


def test_lightgcn_training_step_is_seeded_and_repeatable() -> None:
    train = random_bipartite(30, 40, isolated=0, seed=4)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = make_model("lightgcn", FullEmbedding(70, 8), train)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            scores = model(torch.arange(30), torch.randint(0, 40, (30, 2)))
            optimizer.zero_grad()
            scores.logsumexp(dim=1).mean().backward()
            optimizer.step()
        runs.append(model.embedding.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_mlp_input_normalization(device: str) -> None:
    """The tower sees ``[e_u ; e_i] / nnz([e_u ; e_i])``; an all-zero pair stays finite (0)."""
    model = build("mlp", device)
    with torch.no_grad():
        model.embedding.weight[1] = 0.0  # user 1
        model.embedding.weight[NUM_USERS + 3] = 0.0  # item 3
        model.embedding.weight[0, : DIM // 2] = 0.0  # half of user 0
        model.embedding.weight[NUM_USERS + 2, 1:] = 0.0  # all but one entry of item 2
    inputs = []
    model.mlp.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    users = torch.tensor([1, 0, 1], device=device)
    items = torch.tensor([[3], [3], [2]], device=device)
    scores = model(users, items)
    weight = model.embedding.weight.detach()
    expected = torch.stack(
        [
            torch.zeros(2 * DIM, device=device),
            torch.cat([weight[0], weight[NUM_USERS + 3]]) / (DIM // 2),
            torch.cat([weight[1], weight[NUM_USERS + 2]]) / 1,
        ]
    )
    torch.testing.assert_close(inputs[0], expected)
    assert torch.isfinite(scores).all()
    model.eval()
    assert torch.isfinite(model.scorer()(users)).all()


def test_mlp_layers_follow_the_paper() -> None:
    embedding = FullEmbedding(NUM_USERS + NUM_ITEMS, 128)
    model = NCFMLP(embedding, NUM_USERS, NUM_ITEMS, hidden=PAPER_HIDDEN)
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (256, 512),
        (512, 1024),
        (1024, 2048),
        (2048, 1),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.mlp) == 3
