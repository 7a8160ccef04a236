"""Re-ID evaluation: distances, CMC / mAP / mINP (Market-1501 protocol), foreground focus.

Protocol: for each query, gallery images with the same pid **and** the same camera
are removed (junk); nothing else is removed — pid 0 distractors stay, and pid -1 images are
already dropped by the readers (Market's original code also treats them as junk). Queries left
without a true match are skipped. AP = mean of the precision at each true match; CMC rank-k =
share of valid queries whose first true match is in the top k; mINP = mean of
(number of true matches / rank of the last true match) (Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook", 2021).

Order among equal distances: the gallery index (as a stable argsort gives). The fast path never
sorts a whole row: the rank of a true match is 1 + the number of kept gallery items that come before
it. Only items up to the query's hardest match can count; they are taken in one pass, then
sorted if few (≤ ``_SORT_MAX``) or else compared against the few true matches (~14 on Market).
Exact ties are handled by ranking 64-bit keys (float32 bits << 32 | gallery index).
Distances are float32 everywhere (a float64 matrix is cast; the reference loop casts too).
On a GPU (``device``), each block of rows is instead sorted there with a stable sort, and a true
match's rank among kept items is its position minus the junk before it: the same order, only
integers come back to the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ftn_core.errors import FTNError

ArrayLike = torch.Tensor | np.ndarray | Sequence[int]
_BLOCK_BYTES = 32 << 20
"""Working memory of one block of query rows (float32 distances)."""
_SORT_MAX = 1024
"""Candidate sets up to this size are sorted; larger ones are counted by comparisons."""


class PerQuery(NamedTuple):
    """Each valid query's result: what per-query comparisons between runs need."""

    index: np.ndarray
    """(V,) the query's position in the query set (queries without a true match are absent)."""
    ap: np.ndarray
    """(V,) average precision (fraction)."""
    first_rank: np.ndarray
    """(V,) 1-based rank of the first true match (rank-1 hit ⇔ 1)."""
    inp: np.ndarray
    """(V,) inverse negative penalty (fraction)."""
    top: np.ndarray
    """(V, k) gallery indices of the ``k`` = ``TOP_K`` nearest items, junk included (rank lists)."""


TOP_K = 10


class RankResult(NamedTuple):
    """CMC curve (fractions, index k = rank k+1), mAP, mINP and the number of queries used."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    per_query: PerQuery | None = None
    """Each valid query's AP, first-match rank and INP (the fast path fills it)."""

    def metrics(self) -> dict[str, float]:
        """Stable metric names (logged as ``val/<name>`` in MLflow and used in reports)."""
        out = {"mAP": self.mAP, "mINP": self.mINP}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                out[f"rank{k}"] = float(self.cmc[k - 1])
        return out


# --------------------------------------------------------------------------- distances


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _distance_block(
    q: torch.Tensor, g: torch.Tensor, metric: str, g_sq: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """(B, D) × (G, D) → ``out`` (B, G) float32, in place (fresh memory is slow to fault in).

    ``g`` is pre-normalised for cosine; ``g_sq`` = |g|² for euclidean.
    """
    if metric == "cosine":
        return torch.mm(F.normalize(q, dim=1), g.T, out=out).neg_().add_(1.0)  # (B, G)
    torch.mm(q, g.T, out=out).mul_(-2.0).add_(g_sq[None, :])  # (B, G)
    return out.add_(q.pow(2).sum(1, keepdim=True)).clamp_min_(0.0).sqrt_()


def _prepare(
    q_feat: torch.Tensor, g_feat: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """float32 CPU query and gallery features (gallery normalised for cosine) and |g|²."""
    if metric not in ("euclidean", "cosine"):
        raise FTNError(f"unknown distance metric {metric!r}; use 'euclidean' or 'cosine'")
    q = torch.as_tensor(q_feat).detach().float().cpu()
    g = torch.as_tensor(g_feat).detach().float().cpu()
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            f"features must be (Q, D) and (G, D), got {tuple(q.shape)} and {tuple(g.shape)}"
        )
    if metric == "cosine":
        return q, F.normalize(g, dim=1), None
    return q, g, g.pow(2).sum(1)


def compute_distmat(
    q_feat: torch.Tensor, g_feat: torch.Tensor, metric: str = "euclidean", chunk: int = 1024
) -> torch.Tensor:
    """Query–gallery distances (Q, G) float32, computed ``chunk`` queries at a time.

    euclidean: plain (not squared) L2 distance — the ranking is the same as with the squared
    distance up to float32 rounding ties; cosine: 1 - cosine similarity.
    The result is one dense matrix of Q·G·4 bytes (Market 3,368 × 15,913 ≈ 0.2 GB; MSMT17
    11,659 × 82,161 ≈ 3.8 GB): for MSMT17-sized sets use ``evaluate_features``, which
    streams query chunks and never builds it.
    """
    q, g, g_sq = _prepare(q_feat, g_feat, metric)
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32)
    with torch.no_grad():
        for s in range(0, q.shape[0], chunk):
            _distance_block(q[s : s + chunk], g, metric, g_sq, out[s : s + chunk])
    return out


# --------------------------------------------------------------------------- ranking


class _Plan(NamedTuple):
    """Per-query true matches and junk as gallery indices (padded to the largest pid group)."""

    gidx: np.ndarray  # (Q, L) gallery indices of the query's pid group (padded)
    pos: np.ndarray  # (Q, L) bool: same pid, other camera → true match
    junk: np.ndarray  # (Q, L) bool: same pid, same camera → removed
    n_pos: np.ndarray  # (Q,)


def _plan(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> _Plan:
    g_order = np.argsort(g_pids, kind="stable")
    g_sorted = g_pids[g_order]
    lo = np.searchsorted(g_sorted, q_pids, side="left")
    size = np.searchsorted(g_sorted, q_pids, side="right") - lo  # (Q,)
    width = max(int(size.max(initial=0)), 1)
    slot = np.arange(width)
    inside = slot[None, :] < size[:, None]  # (Q, L)
    flat = np.minimum(lo[:, None] + slot[None, :], max(len(g_order) - 1, 0))  # (Q, L)
    gidx = g_order[flat] if len(g_order) else np.zeros_like(flat)
    same_cam = g_camids[gidx] == q_camids[:, None] if len(g_order) else inside
    pos = inside & ~same_cam
    return _Plan(gidx, pos, inside & same_cam, pos.sum(1))


def _keys(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(distance, gallery index) → int64 keys whose integer order is the stable-sort order."""
    bits = (values + np.float32(0.0)).view(np.int32).astype(np.int64)  # -0.0 → +0.0 first
    bits = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse magnitude
    return (bits << 32) | index


def _match_ranks(dist: np.ndarray, plan: _Plan, rows: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Ranks (1-based, among kept gallery items) of each query's true matches, ascending.

    dist: (B, G) float32 rows of the queries ``rows`` (a scratch copy, modified in place);
    buf: reused bool scratch of at least max(n_pos)·G elements.
    Returns (B, P) int64, P = most true matches in the block; slots past a row's count are
    unused (they hold 1).
    """
    _check_no_nan(dist)
    gidx, pos, junk, n_pos = plan.gidx[rows], plan.pos[rows], plan.junk[rows], plan.n_pos[rows]
    r_j, c_j = np.nonzero(junk)
    dist[r_j, gidx[r_j, c_j]] = np.nan  # removed: NaN is never <= anything, so never counted
    ranks = np.zeros((len(rows), max(int(n_pos.max()), 1)), dtype=np.int64)
    for i, n in enumerate(n_pos.tolist()):
        m = gidx[i][pos[i]]  # (n,) gallery indices of the true matches
        pos_key = np.sort(_keys(dist[i, m], m))  # (n,) in ranking order
        # Only items up to the hardest match can come before a match: few for a good model.
        cand = np.flatnonzero(dist[i] <= dist[i, m].max())  # (c,)
        cand_key = _keys(dist[i, cand], cand)
        if len(cand) <= _SORT_MAX:
            ranks[i, :n] = np.searchsorted(np.sort(cand_key), pos_key)
        else:  # (n, c) "is item j before match k?", one comparison pass per true match
            earlier = np.less(cand_key, pos_key[:, None], out=buf[: n * len(cand)].reshape(n, -1))
            ranks[i, :n] = [np.count_nonzero(row) for row in earlier]  # 1-D count is fastest
    return ranks + 1


def _check_no_nan(dist: np.ndarray) -> None:
    if np.isnan(dist).any():
        raise FTNError(
            "the distance matrix contains NaN (did training diverge?); check the features"
        )


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """(B, min(k, G)) indices of each row's ``k`` smallest distances, nearest first, ties by
    gallery index (the protocol's order: unique 64-bit keys, so no tie is broken arbitrarily).

    Only the items no farther than the row's k-th smallest distance (k of them, more on a tie)
    can be among the k; only their keys are made and sorted. ``dist`` holds no NaN.
    """
    num_b, num_g = dist.shape
    k = min(k, num_g)
    if k == 0:
        return np.zeros((num_b, 0), np.int64)
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1]  # (B,)
    rows, cols = np.nonzero(dist <= kth[:, None])  # ≥ k per row, row by row
    order = np.lexsort((_keys(dist[rows, cols], cols), rows))  # by row, then ranking order
    first = np.searchsorted(rows[order], np.arange(num_b))  # (B,) each row's first candidate
    return cols[order][first[:, None] + np.arange(k)[None, :]]  # (B, k)


def _summarise(
    rows: np.ndarray,
    first: list[np.ndarray],
    ap: list[np.ndarray],
    inp: list[np.ndarray],
    top: list[np.ndarray],
    max_rank: int,
) -> RankResult:
    first_r = np.concatenate(first) if first else np.zeros(0, np.int64)
    if first_r.size == 0:
        raise FTNError(
            "no query has a true match in the gallery (same id seen by another "
            "camera); check that query and gallery come from the same dataset"
        )
    cmc = (first_r[:, None] <= np.arange(1, max_rank + 1)[None, :]).mean(0)  # (max_rank,)
    ap_all, inp_all = np.concatenate(ap), np.concatenate(inp)
    return RankResult(
        cmc,
        float(ap_all.mean()),
        float(inp_all.mean()),
        int(first_r.size),
        PerQuery(
            rows.astype(np.int64),
            ap_all,
            first_r.astype(np.int64),
            inp_all,
            np.concatenate(top).astype(np.int64),
        ),
    )


def _labels(
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    num_q: int,
    num_g: int,
) -> tuple[np.ndarray, ...]:
    arrays = tuple(
        _to_numpy(a).astype(np.int64).ravel() for a in (q_pids, g_pids, q_camids, g_camids)
    )
    if (
        len(arrays[0]) != num_q
        or len(arrays[2]) != num_q
        or len(arrays[1]) != num_g
        or len(arrays[3]) != num_g
    ):
        raise ValueError(
            f"label lengths {[len(a) for a in arrays]} do not match Q={num_q}, G={num_g}"
        )
    return arrays


def _rank_rows_numpy(
    num_g: int, plan: _Plan, step: int, rows_dist: Callable[[np.ndarray, np.ndarray], None]
):
    """``rank_rows`` of the CPU path: distances into one reused (B, G) block, ranked by numpy."""
    buf = np.empty(int(plan.n_pos.max(initial=1)) * num_g, dtype=bool)
    block = np.empty((step, num_g), dtype=np.float32)

    def rank_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = block[: len(rows)]
        rows_dist(rows, dist)
        _check_no_nan(dist)
        top = _nearest(dist, TOP_K)  # before _match_ranks blanks the junk
        return top, _match_ranks(dist, plan, rows, buf)

    return rank_rows


def _rank_rows_torch(
    dist: torch.Tensor, plan: _Plan, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The numpy path's (top, ranks) computed where ``dist`` (B, G) lives (the GPU): one stable
    sort per row gives every item's position, ties by gallery index as the protocol orders them;
    a true match's rank among kept items is its position minus the junk items before it."""
    if bool(torch.isnan(dist).any()):
        raise FTNError(
            "the distance matrix contains NaN (did training diverge?); check the features"
        )
    num_b, num_g = dist.shape
    order = torch.sort(dist, dim=1, stable=True).indices  # (B, G)
    position = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_g, device=dist.device).expand(num_b, -1)
    )
    gidx, pos, junk = (
        torch.from_numpy(a[rows]).to(dist.device) for a in (plan.gidx, plan.pos, plan.junk)
    )
    where = position.gather(1, gidx)  # (B, L) positions of the query's pid group
    junk_at = torch.where(junk, where, num_g)  # (B, L); not junk → after everything
    kept = where - (junk_at[:, None, :] < where[:, :, None]).sum(-1)  # (B, L) 0-based among kept
    width = max(int(plan.n_pos[rows].max()), 1)
    ranks = torch.where(pos, kept + 1, num_g + 1).sort(dim=1).values[:, :width]
    ranks = torch.where(ranks > num_g, 0, ranks)  # slots past a row's count: unused
    return order[:, : min(TOP_K, num_g)].cpu().numpy(), ranks.cpu().numpy()


def _evaluate_blocks(
    plan: _Plan,
    step: int,
    max_rank: int,
    rank_rows: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> RankResult:
    """Shared driver over blocks of the valid queries (those with a true match; the others are
    skipped); ``rank_rows(rows)`` gives their (B, TOP_K) nearest gallery items and the (B, P)
    ranks of their true matches."""
    valid_q = np.flatnonzero(plan.n_pos > 0)
    first, ap, inp, top = [], [], [], []
    for s in range(0, len(valid_q), step):
        rows = valid_q[s : s + step]
        nearest, ranks = rank_rows(rows)
        top.append(nearest)
        n = plan.n_pos[rows]  # (B,)
        k = np.arange(1, ranks.shape[1] + 1)[None, :]  # (1, P)
        ap.append(np.divide(k, ranks, out=np.zeros(ranks.shape), where=k <= n[:, None]).sum(1) / n)
        inp.append(n / ranks[np.arange(len(rows)), n - 1])
        first.append(ranks[:, 0])
    return _summarise(valid_q, first, ap, inp, top, max_rank)


def _evaluate(
    num_g: int,
    labels: tuple[np.ndarray, ...],
    max_rank: int,
    rows_dist: Callable[[np.ndarray, np.ndarray], None],
) -> RankResult:
    """The CPU path over blocks of queries; ``rows_dist(rows, out)`` writes their distances."""
    plan = _plan(*labels)
    step = int(np.clip(_BLOCK_BYTES // (4 * max(num_g, 1)), 1, 1024))
    step = min(step, max(int((plan.n_pos > 0).sum()), 1))
    return _evaluate_blocks(plan, step, max_rank, _rank_rows_numpy(num_g, plan, step, rows_dist))


def _evaluate_on_device(
    num_g: int,
    labels: tuple[np.ndarray, ...],
    max_rank: int,
    rows_dist: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> RankResult:
    """The device path; ``rows_dist(rows)`` gives the (B, G) distances of the query rows
    ``rows`` (an index tensor on ``device``), at most ``_device_step(num_g)`` of them."""
    plan = _plan(*labels)
    return _evaluate_blocks(
        plan,
        _device_step(num_g),
        max_rank,
        lambda rows: _rank_rows_torch(rows_dist(torch.from_numpy(rows).to(device)), plan, rows),
    )


def evaluate_rank(
    distmat: torch.Tensor | np.ndarray,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    device: torch.device | str | None = None,
) -> RankResult:
    """CMC (length ``max_rank``), mAP and mINP from a (Q, G) distance matrix (Market-1501 protocol).

    Same order semantics as ``evaluate_rank_reference`` (stable sort: ties by gallery index),
    but only the true matches of each query are ranked, blockwise over queries. ``device`` (the
    matrix's own when it is a GPU tensor): each block is sorted and ranked there.
    """
    if device is None and isinstance(distmat, torch.Tensor) and distmat.device.type != "cpu":
        device = distmat.device
    if device is not None:
        dist_t = torch.as_tensor(distmat).to(device=device, dtype=torch.float32)
        if dist_t.ndim != 2:
            raise ValueError(f"distmat must be (Q, G), got shape {tuple(dist_t.shape)}")
        labels = _labels(q_pids, g_pids, q_camids, g_camids, *dist_t.shape)
        return _evaluate_on_device(dist_t.shape[1], labels, max_rank, dist_t.__getitem__, device)
    dist = _to_numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be (Q, G), got shape {dist.shape}")
    dist = dist.astype(np.float32, copy=False)
    labels = _labels(q_pids, g_pids, q_camids, g_camids, *dist.shape)
    return _evaluate(
        dist.shape[1], labels, max_rank, lambda rows, out: np.take(dist, rows, axis=0, out=out)
    )


def _device_step(num_g: int) -> int:
    """Query rows per block on a device: distances, sorted values (4 B each), sort order,
    positions and the arange they scatter (8 B each) per element."""
    return int(np.clip(8 * _BLOCK_BYTES // (32 * max(num_g, 1)), 1, 4096))


def evaluate_features(
    q_feat: torch.Tensor,
    g_feat: torch.Tensor,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    metric: str = "euclidean",
    max_rank: int = 50,
    device: torch.device | str | None = None,
) -> RankResult:
    """``evaluate_rank(compute_distmat(q_feat, g_feat, metric), ...)`` without the full matrix.

    Distances are computed per block of queries and ranked at once, so memory stays at a few
    blocks of (rows, G) — what makes MSMT17 (11,659 × 82,161) fit. ``device`` (e.g. ``cuda``):
    distances, sorts and ranks of each block are computed there (``_rank_rows_torch``) and only
    (B, TOP_K + P) integers come back; the ranks are the CPU path's, up to float rounding of
    the distances themselves.
    """
    q, g, g_sq = _prepare(q_feat, g_feat, metric)
    labels = _labels(q_pids, g_pids, q_camids, g_camids, q.shape[0], g.shape[0])
    if device is None:

        def rows_dist(rows: np.ndarray, out: np.ndarray) -> None:
            with torch.no_grad():
                _distance_block(q[torch.from_numpy(rows)], g, metric, g_sq, torch.from_numpy(out))

        return _evaluate(g.shape[0], labels, max_rank, rows_dist)
    device = torch.device(device)
    q, g = q.to(device), g.to(device)
    g_sq = g_sq.to(device) if g_sq is not None else None
    block = torch.empty(
        min(_device_step(g.shape[0]), max(q.shape[0], 1)), g.shape[0], device=device
    )

    def rows_dist_on_device(rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _distance_block(q[rows], g, metric, g_sq, block[: len(rows)])

    return _evaluate_on_device(g.shape[0], labels, max_rank, rows_dist_on_device, device)


def evaluate_rank_reference(
    distmat: torch.Tensor | np.ndarray,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
) -> RankResult:
    """The protocol written as a literal per-query loop with a full stable argsort (for tests)."""
    dist = _to_numpy(distmat).astype(np.float32, copy=False)
    q_pids, g_pids, q_camids, g_camids = _labels(q_pids, g_pids, q_camids, g_camids, *dist.shape)
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hits = (g_pids[order][keep] == q_pids[i]).astype(np.float64)
        if not hits.any():
            continue
        cum = hits.cumsum()
        cmc = np.minimum(cum, 1.0)[:max_rank]
        all_cmc.append(np.pad(cmc, (0, max_rank - len(cmc)), constant_values=1.0))
        precision = cum / np.arange(1, len(hits) + 1)
        all_ap.append((precision * hits).sum() / hits.sum())
        last = np.flatnonzero(hits)[-1]
        all_inp.append(cum[last] / (last + 1))
    if not all_cmc:
        raise FTNError(
            "no query has a true match in the gallery (same id seen by another "
            "camera); check that query and gallery come from the same dataset"
        )
    return RankResult(
        np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp)), len(all_cmc)
    )


# --------------------------------------------------------------------------- foreground focus


def activation_map(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h, w): the channel mean of ``feat**2``.

    The squared response is the usual spatial attention map of a feature tensor (Zagoruyko &
    Komodakis, "Paying More Attention to Attention", 2017); the mean keeps it independent of C.
    Used to quantify where the network looks (paper Figs. 4–5).
    """
    return feat.pow(2).mean(dim=1)


def foreground_focus(act: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each activation map's mass inside the person mask: (B,) in [0, 1].

    act: (B, h, w), made non-negative with ``abs``, bilinearly upsampled to the mask size
    (clamped at 0); masks: (B, H, W) or (B, 1, H, W), any value > 0 counts as person (so
    {0, 1} and {0, 255} both work). A map with zero total mass gives NaN.
    """
    if masks.ndim == 4:
        masks = masks[:, 0]  # (B, H, W)
    if act.ndim != 3 or masks.ndim != 3 or act.shape[0] != masks.shape[0]:
        raise ValueError(
            f"act must be (B, h, w) and masks (B, [1,] H, W); got "
            f"{tuple(act.shape)} and {tuple(masks.shape)}"
        )
    up = F.interpolate(
        act.abs().float()[:, None], size=masks.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0].clamp_min(0.0)  # (B, H, W)
    inside = (up * (masks > 0)).sum(dim=(1, 2))
    total = up.sum(dim=(1, 2))
    return torch.where(total > 0, inside / total, torch.full_like(total, float("nan")))
