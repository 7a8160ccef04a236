"""PK sampler: structure, determinism, replacement, DDP split, resumable state."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from ftn_core.data.sampler import PKSampler
from ftn_core.errors import FTNError


def make_pids(counts: dict[int, int]) -> list[int]:
    """Dataset pids in a shuffled-looking order: ``{pid: n_images}`` interleaved."""
    pids = [p for p, n in counts.items() for _ in range(n)]
    return pids[::2] + pids[1::2]


PIDS = make_pids({p: 3 + (p * 7) % 9 for p in range(20)})  # 3..11 images per identity


def check_structure(batch: list[int], pids: list[int], p: int, k: int) -> None:
    assert len(batch) == p * k
    groups = [batch[i * k : (i + 1) * k] for i in range(p)]
    group_pids = [{pids[j] for j in g} for g in groups]
    assert all(len(g) == 1 for g in group_pids), "each run of K indices is one identity"
    assert len({next(iter(g)) for g in group_pids}) == p, "P distinct identities"


def test_pk_structure_and_no_repeats_within_epoch():
    s = PKSampler(PIDS, num_ids=4, num_instances=3, seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        check_structure(b, PIDS, 4, 3)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)), "every identity has ≥ K images: no index twice"
    # chunks per identity = n // K; batches take P chunks: at most sum // P batches
    assert len(batches) <= sum(n // 3 for n in Counter(PIDS).values()) // 4


def test_one_chunk_per_identity_covers_everything_once():
    pids = make_pids({p: 4 for p in range(12)})
    s = PKSampler(pids, num_ids=3, num_instances=4, seed=5)
    batches = list(s)
    assert len(batches) == 4
    assert sorted(i for b in batches for i in b) == list(range(len(pids)))


def test_deterministic_for_seed_and_epoch():
    a = PKSampler(PIDS, 4, 2, seed=3)
    b = PKSampler(PIDS, 4, 2, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b), "a new epoch reshuffles"
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(PIDS, 4, 2, seed=4)) != list(PKSampler(PIDS, 4, 2, seed=3))
    # independent of the torch/numpy global RNG
    torch.manual_seed(123)
    c = PKSampler(PIDS, 4, 2, seed=3)
    c.set_epoch(1)
    assert list(c) == list(a)


def test_identities_with_fewer_than_k_images_drawn_with_replacement():
    pids = make_pids({0: 1, 1: 2, 2: 6, 3: 4})
    s = PKSampler(pids, num_ids=2, num_instances=4, seed=0)
    seen = Counter()
    for epoch in range(5):
        s.set_epoch(epoch)
        for b in s:
            check_structure(b, pids, 2, 4)
            for g in (b[:4], b[4:]):
                seen[pids[g[0]]] += 1
                if pids[g[0]] == 0:
                    assert g == [pids.index(0)] * 4
                if pids[g[0]] == 1:
                    assert set(g) <= {i for i, p in enumerate(pids) if p == 1}
                    assert len(set(g)) <= 2
    assert seen[0] > 0 and seen[1] > 0


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_disjoint_and_union_is_the_epoch(world_size):
    single = PKSampler(PIDS, 4, 2, seed=7)
    single.set_epoch(2)
    full = list(single)
    ranks = []
    for r in range(world_size):
        s = PKSampler(PIDS, 4, 2, seed=7, rank=r, world_size=world_size)
        s.set_epoch(2)
        ranks.append(list(s))
        assert len(ranks[-1]) == len(s) == len(full) // world_size
    kept = len(full) - len(full) % world_size  # the tail is dropped so ranks stay in step
    interleaved = [ranks[i % world_size][i // world_size] for i in range(kept)]
    assert interleaved == full[:kept]
    flat = [i for batches in ranks for b in batches for i in b]
    assert len(flat) == len(set(flat)), "ranks see disjoint images"


def test_ranks_union_equals_epoch_when_divisible():
    pids = make_pids({p: 4 for p in range(16)})  # 16 chunks, P=2 → exactly 8 batches
    full = list(PKSampler(pids, 2, 4, seed=1))
    assert len(full) == 8
    parts = [list(PKSampler(pids, 2, 4, seed=1, rank=r, world_size=4)) for r in range(4)]
    assert sorted(map(tuple, (b for p in parts for b in p))) == sorted(map(tuple, full))


def test_state_dict_resumes_the_same_epoch():
    s = PKSampler(PIDS, 4, 2, seed=9)
    s.set_epoch(6)
    expected = list(s)
    t = PKSampler(PIDS, 4, 2, seed=0)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == {"seed": 9, "epoch": 6}
    assert list(t) == expected


def test_works_as_dataloader_batch_sampler():
    data = torch.arange(len(PIDS))
    s = PKSampler(PIDS, 2, 3, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=s)
    got = [b.tolist() for b in loader]
    assert got == list(s) and len(loader) == len(s)


def test_too_few_identities():
    with pytest.raises(
        FTNError,
        match=r"needs at least P=8 training identities but the data "
        r"has 3; lower data.num_ids",
    ):
        PKSampler([0, 1, 2, 2], num_ids=8, num_instances=4)
    with pytest.raises(FTNError, match=r"P ≥ 1 and K ≥ 1"):
        PKSampler([0, 1], num_ids=2, num_instances=0)
