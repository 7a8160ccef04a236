"""The records every dataset reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One image: its path, identity and camera (0-based), and an optional person mask."""

    path: str
    pid: int
    camid: int
    mask_path: str | None = None
    """Ground-truth foreground mask (synthetic data only): a single-channel PNG, 255 = person."""


@dataclass(frozen=True)
class DatasetSplits:
    """Train (pids relabelled 0..n-1), query and gallery (original pids) of one dataset."""

    name: str
    root: str
    train: list[Sample] = field(default_factory=list)
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    skipped: int = 0
    """Images dropped because they could not be read (with ``skip_bad_images``)."""
    skipped_paths: tuple[str, ...] = ()
    """Which they were (logged with the run)."""
    digest: str = ""
    """The data as read (``ftn_core.data.digest``): part of a run's identity; "" = not taken."""

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({s.camid for s in self.train})

    def summary(self) -> str:
        def row(name: str, items: list[Sample]) -> str:
            return f"  {name:<8} {len({s.pid for s in items}):>6} ids {len(items):>8} images"

        return "\n".join(
            [
                f"{self.name} ({self.root})",
                row("train", self.train),
                row("query", self.query),
                row("gallery", self.gallery),
            ]
            + (
                [f"  skipped  {self.skipped} unreadable image(s), e.g. {self.skipped_paths[0]}"]
                if self.skipped_paths
                else []
            )
        )
