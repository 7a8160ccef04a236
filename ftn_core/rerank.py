"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), written from the paper's definitions.

For every image (queries and gallery together) the k-reciprocal set R(p, k1) holds the items
that are among p's k1 nearest and have p among theirs; it is expanded by the R(c, k1/2) of its
members c that share more than 2/3 of their own set with it. p is encoded as a vector V_p over
all items, Gaussian-weighted by the original distance on its expanded set (and averaged over its
k2 nearest: local query expansion). The Jaccard distance between encodings, mixed with the
original distance by λ, is the new query–gallery distance:

    d*(q, g) = (1 − λ) · d_J(q, g) + λ · d(q, g)

Distances and the nearest-neighbour lists are computed with torch (on the GPU when the features
are there); the set logic runs on the CPU with numpy. Memory: an N×N matrix, N = Q + G.
"""

from __future__ import annotations

import numpy as np
import torch


def k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the items among i's k nearest (itself included) that have i among theirs."""
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[(backward == i).any(axis=1)]


def all_k_reciprocal(rank: np.ndarray, k: int) -> list[np.ndarray]:
    """R(i, k) for every i at once: (N, k+1, k+1) comparisons instead of a loop."""
    forward = rank[:, :k + 1]  # (N, k+1)
    keep = (rank[forward, :k + 1] == np.arange(len(rank))[:, None, None]).any(axis=2)  # (N, k+1)
    return [f[m] for f, m in zip(forward, keep)]


def rerank(q_feat: torch.Tensor, g_feat: torch.Tensor, k1: int = 20, k2: int = 6,
           lam: float = 0.3) -> np.ndarray:
    """(Q, G) re-ranked distances; smaller = more similar."""
    feats = torch.cat([q_feat, g_feat]).float()
    n_q, n = q_feat.shape[0], feats.shape[0]
    dist = torch.cdist(feats, feats).pow(2)
    # Column-normalised then transposed, as in the paper's code; the matrix is symmetric, so that
    # is each row divided by its own maximum (no transpose of an N×N matrix).
    dist = dist / dist.max(dim=1, keepdim=True).values.clamp_min(1e-12)
    k = min(k1 + 1, n)
    rank = torch.topk(dist, k, dim=1, largest=False).indices.cpu().numpy()
    dist = dist.cpu().numpy()
    v = np.zeros((n, n), dtype=np.float32)
    half = max(1, int(round(k1 / 2)))
    full_sets = all_k_reciprocal(rank, k1)
    half_sets = [set(r.tolist()) for r in all_k_reciprocal(rank, half)]
    for i in range(n):
        members = set(full_sets[i].tolist())
        expanded = set(members)
        for c in members:
            candidate = half_sets[c]
            if len(candidate & members) > 2 / 3 * len(candidate):
                expanded |= candidate
        members = np.fromiter(sorted(expanded), dtype=np.int64)
        weight = np.exp(-dist[i, members])
        v[i, members] = weight / weight.sum()
    if k2 > 1:  # local query expansion over the k2 nearest, in chunks of rows
        nearest = rank[:, :min(k2, k)]
        step = max(1, (64 << 20) // (4 * n * nearest.shape[1]))
        v = np.concatenate([v[nearest[s:s + step]].mean(axis=1) for s in range(0, n, step)]).astype(np.float32)
    rows, cols = np.nonzero(v)  # inverted index: who uses item j
    order = np.argsort(cols, kind="stable")
    holders = np.split(rows[order], np.flatnonzero(np.diff(cols[order])) + 1)
    starts = {int(c): h for c, h in zip(np.unique(cols), holders)}
    holders = [starts.get(j, np.zeros(0, dtype=np.int64)) for j in range(n)]
    jaccard = np.zeros((n_q, n), dtype=np.float32)
    for i in range(n_q):
        shared = np.zeros(n, dtype=np.float32)
        for j in np.flatnonzero(v[i]):
            shared[holders[j]] += np.minimum(v[i, j], v[holders[j], j])
        jaccard[i] = 1 - shared / (2 - shared)
    return (1 - lam) * jaccard[:, n_q:] + lam * dist[:n_q, n_q:]
