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


def rerank(q_feat: torch.Tensor, g_feat: torch.Tensor, k1: int = 20, k2: int = 6,
           lam: float = 0.3) -> np.ndarray:
    """(Q, G) re-ranked distances; smaller = more similar."""
    feats = torch.cat([q_feat, g_feat]).float()
    n_q, n = q_feat.shape[0], feats.shape[0]
    dist = torch.cdist(feats, feats).pow(2)
    dist = (dist / dist.max(dim=0, keepdim=True).values.clamp_min(1e-12)).T.contiguous()  # column-normalised
    k = min(k1 + 1, n)
    rank = torch.topk(dist, k, dim=1, largest=False).indices.cpu().numpy()
    dist = dist.cpu().numpy()
    v = np.zeros((n, n), dtype=np.float32)
    half = max(1, int(round(k1 / 2)))
    for i in range(n):
        members = k_reciprocal(rank, i, k1)
        expanded = [members]
        for c in members:
            candidate = k_reciprocal(rank, int(c), half)
            if len(np.intersect1d(candidate, members)) > 2 / 3 * len(candidate):
                expanded.append(candidate)
        members = np.unique(np.concatenate(expanded))
        weight = np.exp(-dist[i, members])
        v[i, members] = weight / weight.sum()
    if k2 > 1:  # local query expansion over the k2 nearest
        nearest = rank[:, :min(k2, k)]
        v = np.stack([v[nearest[i]].mean(axis=0) for i in range(n)]).astype(np.float32)
    holders = [np.flatnonzero(v[:, j]) for j in range(n)]  # inverted index: who uses item j
    jaccard = np.zeros((n_q, n), dtype=np.float32)
    for i in range(n_q):
        shared = np.zeros(n, dtype=np.float32)
        for j in np.flatnonzero(v[i]):
            shared[holders[j]] += np.minimum(v[i, j], v[holders[j], j])
        jaccard[i] = 1 - shared / (2 - shared)
    return (1 - lam) * jaccard[:, n_q:] + lam * dist[:n_q, n_q:]
