"""A seeded synthetic data set with the shape of real implicit feedback.

Items get a Zipf-like popularity, users a log-normal activity, and both latent preference
vectors; each user picks items without replacement with probability proportional to
``exp(popularity_i + strength * <u, v_i>)`` (Gumbel top-k). So popularity alone ranks
moderately well, a learnt embedding ranks clearly better, and a tiny table loses accuracy.
"""

from __future__ import annotations

import numpy as np

from cerp_core.data.frame import split_train_test
from cerp_core.data.interactions import Interactions


def make_synthetic(
    num_users: int = 2000,
    num_items: int = 3000,
    latent_dim: int = 8,
    mean_activity: float = 30.0,
    popularity_exponent: float = 0.6,
    preference_strength: float = 4.0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Interactions:
    """Generate the log and split it per user into train and test (no validation yet).

    Args:
        num_users: Users in the log.
        num_items: Items in the log.
        latent_dim: Width of the hidden preference vectors.
        mean_activity: Mean interactions per user (log-normal, at least 5).
        popularity_exponent: Zipf exponent of item popularity (0: uniform).
        preference_strength: Weight of the latent affinity against popularity.
        test_fraction: Share of each user's interactions held out for test.
        seed: Fixes every random draw.
    """
    if num_users < 2 or num_items < 10:
        raise ValueError(
            f"synthetic data needs >= 2 users and >= 10 items, got {num_users}, {num_items}"
        )
    rng = np.random.default_rng(seed)
    users_latent = rng.normal(size=(num_users, latent_dim)) / np.sqrt(latent_dim)
    items_latent = rng.normal(size=(num_items, latent_dim))
    popularity = -popularity_exponent * np.log1p(rng.permutation(num_items))
    logits = popularity + preference_strength * (users_latent @ items_latent.T)
    keys = logits + rng.gumbel(size=logits.shape)
    sigma = 0.8
    activity = rng.lognormal(np.log(mean_activity) - sigma**2 / 2, sigma, size=num_users)
    activity = np.clip(np.round(activity), 5, num_items // 2).astype(np.int64)
    ranked = np.argsort(-keys, axis=1)
    taken = np.arange(num_items)[None, :] < activity[:, None]
    users = np.repeat(np.arange(num_users), activity)
    items = ranked[taken]
    return split_train_test("synthetic", users, items, num_users, num_items, test_fraction, seed)
