"""Random draws keyed by what they are for (common random numbers across variants).

Two variants of one seed should differ only where their configurations differ. With a single
global random stream they do not: a module built first (CFA) uses up draws that the heads built
after it would have had, and from then on every augmentation differs too. Here each draw is
a function of the run's seed and of a name for its purpose — ``("init", "heads.global")``,
``("augment", epoch, position)`` — never of what else the variant built or drew.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (their ``str``), stable across processes and platforms."""
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@contextlib.contextmanager
def seeded(*parts: object) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded from ``parts``, then restore it: the
    block's draws depend on ``parts`` only, and the caller's stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*parts))
        yield
