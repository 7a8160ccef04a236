"""A validation split carved from the training identities (for tuning; never the test split).

Hyperparameters tuned on the query/gallery split would leak the test set into the model
choice, so the Optuna study scores each trial on held-out *training* identities instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict

import numpy as np

from ftn_core.data.types import DatasetSplits, Sample
from ftn_core.errors import FTNError


def holdout_split(
    splits: DatasetSplits, fraction: float = 0.2, seed: int = 0, query_cams: int = 2
) -> DatasetSplits:
    """Hold out ``fraction`` of the training identities as a query/gallery validation split.

    - train: the remaining identities, relabelled 0..n-1 in sorted order of their pids;
    - query: per held-out identity, one image from each of up to ``query_cams`` cameras
      (cameras with the most images first), taken only while every query keeps a match in
      another camera (the Market-1501 protocol discards same-camera matches);
    - gallery: every other held-out image. Identities seen by one camera only give no
      query; their images stay in the gallery as distractors.
    Held-out samples keep their training pid and their ``mask_path``. The choice of
    identities depends only on ``seed`` and the set of training pids. The result's digest
    follows from the source data's and the three options ("" when the source has none).
    """
    if not 0.0 < fraction < 1.0:
        raise FTNError(f"holdout fraction {fraction}: must be between 0 and 1 (e.g. 0.2)")
    pids = sorted({s.pid for s in splits.train})
    if len(pids) < 2:
        raise FTNError(
            f"{splits.name}: {len(pids)} training identity; a held-out split needs at least 2"
        )
    n_hold = min(max(1, round(fraction * len(pids))), len(pids) - 1)
    rng = np.random.default_rng(seed)
    held = {int(p) for p in rng.choice(pids, size=n_hold, replace=False)}
    kept = [p for p in pids if p not in held]
    relabel = {pid: i for i, pid in enumerate(kept)}
    train = [dataclasses.replace(s, pid=relabel[s.pid]) for s in splits.train if s.pid not in held]

    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for s in splits.train:
        if s.pid in held:
            by_pid[s.pid].append(s)
    query: list[Sample] = []
    for pid in sorted(by_pid):
        query.extend(_pick_queries(by_pid[pid], query_cams))
    chosen = {s.path for s in query}
    gallery = [s for pid in sorted(by_pid) for s in by_pid[pid] if s.path not in chosen]
    if not query:
        raise FTNError(
            f"{splits.name}: no held-out identity is seen by two cameras, so no "
            f"validation query has a match; hold out more identities (fraction {fraction})"
        )
    digest = ""
    if splits.digest:
        text = f"holdout\t{splits.digest}\t{fraction!r}\t{seed}\t{query_cams}"
        digest = hashlib.sha256(text.encode()).hexdigest()[: len(splits.digest)]
    return DatasetSplits(
        f"{splits.name}-holdout",
        splits.root,
        train,
        query,
        gallery,
        splits.skipped,
        splits.skipped_paths,
        digest=digest,
    )


def _pick_queries(samples: list[Sample], query_cams: int) -> list[Sample]:
    """One query per camera (most images first) while each query keeps a cross-camera match."""
    by_cam: dict[int, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.path):
        by_cam[s.camid].append(s)
    left = {cam: len(items) for cam, items in by_cam.items()}  # gallery images per camera
    used: list[int] = []
    for cam in sorted(by_cam, key=lambda c: (-len(by_cam[c]), c)):
        if len(used) == query_cams:
            break
        trial = {**left, cam: left[cam] - 1}
        if all(sum(n for c, n in trial.items() if c != q) > 0 for q in [*used, cam]):
            left, used = trial, [*used, cam]
    return [by_cam[cam][0] for cam in sorted(used)]
