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
are there); the set logic and the sparse encodings (scipy.sparse) run on the CPU. Memory: one
N×N distance matrix, N = Q + G, and the (Q, G) result.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse


def k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the items among i's k nearest (itself included) that have i among theirs."""
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[(backward == i).any(axis=1)]


def all_k_reciprocal(rank: np.ndarray, k: int) -> list[np.ndarray]:
    """R(i, k) for every i at once: (N, k+1, k+1) comparisons instead of a loop."""
    forward = rank[:, : k + 1]  # (N, k+1)
    keep = (rank[forward, : k + 1] == np.arange(len(rank))[:, None, None]).any(axis=2)  # (N, k+1)
    return [f[m] for f, m in zip(forward, keep)]


def _encode(dist: np.ndarray, rank: np.ndarray, k1: int) -> sparse.csr_matrix:
    """V: row p holds exp(−d(p, j)) on p's expanded k-reciprocal set, normalised to sum 1."""
    n = len(rank)
    half = max(1, int(round(k1 / 2)))
    full_sets = all_k_reciprocal(rank, k1)
    half_sets = [set(r.tolist()) for r in all_k_reciprocal(rank, half)]
    cols = []
    for i in range(n):
        members = set(full_sets[i].tolist())
        expanded = set(members)
        for c in members:
            candidate = half_sets[c]
            if len(candidate & members) > 2 / 3 * len(candidate):
                expanded |= candidate
        cols.append(np.fromiter(sorted(expanded), dtype=np.int64, count=len(expanded)))
    rows = np.repeat(np.arange(n), [len(c) for c in cols])
    cols = np.concatenate(cols)
    weight = np.exp(-dist[rows, cols])
    weight /= np.bincount(rows, weights=weight, minlength=n)[rows]
    return sparse.csr_matrix((weight.astype(np.float32), (rows, cols)), shape=(n, n))


def _jaccard(v: sparse.csr_matrix, n_q: int, rows_per_chunk: int = 256) -> np.ndarray:
    """(n_q, N − n_q) Jaccard distances 1 − Σ min / Σ max between the query rows of V (the first
    n_q) and the gallery rows.

    Σ_j min(V_qj, V_gj) over the columns both use: every (q, j) entry of a query row meets the
    gallery rows that use column j (V's gallery rows in CSC), and the minima are summed per
    (q, g) with one bincount per chunk of queries. Rows of V sum to 1, so Σ max = 2 − Σ min.
    """
    gallery = v[n_q:].tocsc()
    n_g = gallery.shape[0]
    col_nnz = np.diff(gallery.indptr)
    out = np.empty((n_q, n_g), dtype=np.float32)
    for start in range(0, n_q, rows_per_chunk):
        stop = min(n_q, start + rows_per_chunk)
        block = v[start:stop].tocoo()
        counts = col_nnz[block.col]
        ends = np.cumsum(counts)
        at = np.repeat(gallery.indptr[block.col] - (ends - counts), counts) + np.arange(
            ends[-1] if len(ends) else 0
        )
        mins = np.minimum(np.repeat(block.data, counts), gallery.data[at])
        key = np.repeat(block.row.astype(np.int64) * n_g, counts) + gallery.indices[at]
        shared = np.bincount(key, weights=mins, minlength=(stop - start) * n_g).reshape(
            stop - start, n_g
        )
        out[start:stop] = 1 - shared / (2 - shared)
    return out


def squared_distances(feats: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """(N, N) squared Euclidean distances. On the CPU only the upper block triangle is multiplied
    and mirrored (≈ 25 % faster than ``torch.cdist`` at Market size on 2 cores); elsewhere cdist."""
    if feats.device.type != "cpu":
        return torch.cdist(feats, feats).pow_(2)
    n = feats.shape[0]
    gram = torch.empty(n, n, dtype=feats.dtype)
    for i in range(0, n, block):
        gram[i : i + block, i:].copy_(feats[i : i + block] @ feats[i:].T)
        gram[i + block :, i : i + block].copy_(gram[i : i + block, i + block :].T)
    sq = gram.diagonal().clone()
    return gram.mul_(-2).add_(sq[:, None]).add_(sq[None]).clamp_min_(0)


def rerank(
    q_feat: torch.Tensor, g_feat: torch.Tensor, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> np.ndarray:
    """(Q, G) re-ranked distances; smaller = more similar."""
    feats = torch.cat([q_feat, g_feat]).float()
    n_q, n = q_feat.shape[0], feats.shape[0]
    dist = squared_distances(feats)
    # Column-normalised then transposed, as in the paper's code; the matrix is symmetric, so that
    # is each row divided by its own maximum (no transpose of an N×N matrix).
    dist /= dist.max(dim=1, keepdim=True).values.clamp_min(1e-12)
    k = min(k1 + 1, n)
    rank = torch.topk(dist, k, dim=1, largest=False).indices.cpu().numpy()
    dist = dist.cpu().numpy()
    v = _encode(dist, rank, k1)
    if k2 > 1:  # local query expansion: each row becomes the mean of its k2 nearest rows
        nearest = rank[:, : min(k2, k)]
        width = nearest.shape[1]
        mean = sparse.csr_matrix(
            (
                np.full(nearest.size, 1 / width, dtype=np.float32),
                nearest.ravel(),
                np.arange(0, nearest.size + 1, width),
            ),
            shape=(n, n),
        )
        v = (mean @ v).tocsr()
    jaccard = _jaccard(v, n_q)
    return (1 - lam) * jaccard + lam * dist[:n_q, n_q:]
