"""LightGCN: embeddings smoothed over the user-item graph."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cerp_core.embeddings.base import CompactEmbedding, gather_rows
from cerp_core.models.base import Recommender, Scorer


def normalized_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    r"""Symmetrically normalized adjacency of the user-item graph, without self-loops.

    .. math::
        \hat{A} = D^{-1/2} A D^{-1/2}, \qquad
        A = \begin{pmatrix} 0 & R \\ R^\top & 0 \end{pmatrix}

    Args:
        train: ``num_users x num_items`` training interactions; any stored non-zero is an edge.

    Returns:
        ``(num_users + num_items)`` square float32 CSR matrix; isolated nodes get zero rows.
    """
    interactions = sp.csr_matrix(train, dtype=np.float32)
    interactions.sum_duplicates()
    interactions.eliminate_zeros()
    interactions.data[:] = 1.0
    adjacency = sp.bmat([[None, interactions], [interactions.T, None]], format="csr")
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.power(degree, -0.5, out=inv_sqrt, where=degree > 0)
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr().astype(np.float32)


def csr_tensor(matrix: sp.spmatrix, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``matrix`` as a torch sparse CSR tensor, with int32 indices when they fit (faster
    sparse-dense products on CPU) and int64 otherwise."""
    csr = sp.csr_matrix(matrix)
    csr.sort_indices()
    index_dtype = np.int32 if csr.nnz < 2**31 and max(csr.shape) < 2**31 else np.int64
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(index_dtype)),
            torch.from_numpy(csr.indices.astype(index_dtype)),
            torch.from_numpy(csr.data).to(dtype),
            csr.shape,
            check_invariants=True,
        )


class SymmetricPropagation(torch.autograd.Function):
    r"""``A @ X`` for a *symmetric* sparse CSR matrix ``A``, differentiable in ``X`` only.

    The gradient of ``A X`` with respect to ``X`` is ``A^T G = A G``, so the backward pass
    reuses the forward's CSR matrix: no transposition, no COO coalescing, one sparse-dense
    product each way (``torch.sparse.mm`` on a COO matrix transposes and coalesces in every
    backward pass). The caller guarantees the symmetry; :func:`normalized_adjacency` is
    symmetric by construction.
    """

    @staticmethod
    def forward(ctx: Any, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


def propagate(adjacency: torch.Tensor, layer0: torch.Tensor, num_layers: int) -> torch.Tensor:
    r"""Mean of ``layer0`` and its ``num_layers`` propagations: ``sum_l A^l E / (L + 1)``.

    Args:
        adjacency: Symmetric ``[N, N]`` sparse CSR matrix.
        layer0: ``[N, d]`` dense embeddings.
        num_layers: ``L >= 0``.
    """
    layer, total = layer0, layer0
    for _ in range(num_layers):
        layer = SymmetricPropagation.apply(adjacency, layer)
        total = total + layer
    return total / (num_layers + 1)


class LightGCN(Recommender):
    r"""LightGCN: linear propagation of the table's embeddings over the interaction graph.

    Each layer averages the neighbours' embeddings with symmetric normalization (no feature
    transforms, no non-linearities, no self-loops); the final embedding is the mean of all
    layers, and scores are inner products:

    .. math::
        \mathbf{E}^{(l+1)} = \hat{A} \mathbf{E}^{(l)}, \qquad
        \mathbf{E} = \frac{1}{L + 1} \sum_{l=0}^{L} \mathbf{E}^{(l)}, \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_{N_U + i}

    with :math:`\hat{A}` from :func:`normalized_adjacency` of the *training* interactions only.
    Every call of :meth:`forward` propagates the whole table once (so a compact table's
    gradients reach all of its shared parameters); :meth:`scorer` propagates once for all users.

    Reference: He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation", SIGIR 2020.

    Args:
        embedding: Any table with ``num_entities == num_users + num_items``.
        num_users: Number of users.
        num_items: Number of items.
        train: ``num_users x num_items`` training interactions (scipy sparse) that define the
            graph. Never pass validation or test interactions here.
        num_layers: Number of propagation layers ``L``; ``0`` gives matrix factorisation.
            (default: ``3``)
    """

    needs_train = True

    def __init__(
        self,
        embedding: CompactEmbedding,
        num_users: int,
        num_items: int,
        train: sp.spmatrix,
        num_layers: int = 3,
    ) -> None:
        super().__init__(embedding, num_users, num_items)
        if train.shape != (num_users, num_items):
            raise ValueError(f"train has shape {train.shape}, expected {(num_users, num_items)}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers
        adjacency = csr_tensor(normalized_adjacency(train)).to(self.device)
        # Derived from `train`, so it is rebuilt rather than saved with the weights.
        self.register_buffer("adjacency", adjacency, persistent=False)

    def propagate(self, layer0: torch.Tensor | None = None) -> torch.Tensor:
        """Final embeddings of all entities, ``[num_users + num_items, output_dim]``, from the
        layer-0 embeddings (default: the table's, :meth:`CompactEmbedding.embed_all`)."""
        layer0 = self.embedding.embed_all() if layer0 is None else layer0
        return propagate(self.adjacency.to(layer0.dtype), layer0, self.num_layers)

    def score_batch(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer0 = self.embedding.embed_all()
        final = self.propagate(layer0)
        user_emb = gather_rows(final, users)
        item_emb = gather_rows(final, self.item_entities(items))
        scores = torch.einsum("bd,bkd->bk", user_emb, item_emb)
        return scores, gather_rows(layer0, self.batch_ids(users, items))

    def scorer(self) -> Scorer:
        final = self.propagate()
        user_final, item_final_t = final[: self.num_users], final[self.num_users :].t()
        return lambda users: user_final[users] @ item_final_t

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_layers={self.num_layers}"
