"""PK sampling: P identities × K images per batch (paper §4.1: 8 × 4 = 32), split over ranks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ftn_core.errors import FTNError


class PKSampler:
    """Batch sampler yielding lists of dataset indices, P·K per batch, K consecutive per identity.

    One epoch: every identity's images are shuffled and cut into chunks of K (an identity
    with fewer than K images gets one chunk drawn with replacement; a remainder shorter than
    K is dropped). Batches then take P distinct identities at a time, drawn without
    replacement with probability proportional to their remaining chunks, until fewer than P
    identities have chunks left. The epoch is a pure function of (seed, epoch), so every DDP
    rank builds the same list and takes batches r, r+W, r+2W, ...; the last
    ``len % world_size`` batches are dropped so all ranks run the same number of steps.
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_ids: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_ids < 1 or num_instances < 1:
            raise FTNError(f"PK sampler needs P ≥ 1 and K ≥ 1 (got P={num_ids}, K={num_instances})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        if len(by_pid) < num_ids:
            raise FTNError(
                f"PK sampler needs at least P={num_ids} training identities but the "
                f"data has {len(by_pid)}; lower data.num_ids"
            )
        self.pid_indices = [np.asarray(by_pid[p], dtype=np.int64) for p in sorted(by_pid)]
        self.num_ids = num_ids
        self.num_instances = num_instances
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` for a single process (before the split across ranks)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        k = self.num_instances
        chunks = []  # per identity: (n_chunks, K) array of indices
        for idx in self.pid_indices:
            if len(idx) < k:
                drawn = rng.choice(idx, size=k, replace=True)
            else:
                drawn = rng.permutation(idx)
            n = len(drawn) // k
            chunks.append(drawn[: n * k].reshape(n, k))  # (n_chunks, K)
        remaining = np.array([len(c) for c in chunks], dtype=np.int64)
        used = np.zeros_like(remaining)
        batches = []
        while np.count_nonzero(remaining) >= self.num_ids:
            avail = np.flatnonzero(remaining)
            weights = remaining[avail] / remaining[avail].sum()
            chosen = rng.choice(avail, size=self.num_ids, replace=False, p=weights)
            batch = np.concatenate([chunks[c][used[c]] for c in chosen])  # (P*K,)
            used[chosen] += 1
            remaining[chosen] -= 1
            batches.append(batch.tolist())
        self._cache = (epoch, batches)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self.epoch_batches(self.epoch)
        n = len(batches) // self.world_size
        return batches[self.rank : n * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (deterministic for seed and epoch)."""
        return len(self.epoch_batches(self.epoch)) // self.world_size

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._cache = None
