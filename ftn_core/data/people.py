"""A second population of the synthetic benchmark, for pre-training (``ablations/pretrain.py
--source people``): other persons, other scenes, other random streams, drawn by the same code.

Disjoint from the benchmark (``ftn_core/data/synthetic.py``) three ways (tests/test_pretrain.py
checks each):

- **identities**: drawn from a stream of their own and kept only when their attribute codes
  differ in at least ``MIN_DIFF`` places (the benchmark's own rule between two identities) from
  every identity of the ``REFERENCE`` benchmarks (train, test, grown test and distractors);
- **background assets**: the cameras are scenes 6–11 of the drawing code (the benchmark's are
  0–5 at every seed), and no background object is drawn (the benchmark draws its 32);
- **random streams**: every draw is keyed ``[TAG, seed, purpose, k ≥ 1]``, four words ending
  in a non-zero one, where the benchmark's keys are three words (numpy pads a key to four words
  with zeros, so none of ours can equal one of its).

There is no background confounding (``bias`` 0): an identity stands in any camera at any spot.
Written in the Market-1501 layout with person masks, like the benchmark, so the same reader and
engine serve it; the query and gallery (identities of their own) monitor the pre-training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ftn_core.data import digest
from ftn_core.data import synthetic as syn
from ftn_core.data import synthetic_draw as sd
from ftn_core.data.readers import MARKET_PATTERN, SPLIT_DIRS, read_market_layout
from ftn_core.data.types import DatasetSplits
from ftn_core.errors import FTNError

VERSION = 1
"""Bump with any change to the population's pixels (it shares the benchmark's drawing code, whose
``GENERATOR_VERSION`` the tests pin to its images): part of the data digest."""
TAG = 0x70656F70  # "peop": the first word of every key of this population's random streams
MIN_DIFF = 3
CAM_OFFSET = 6
"""Scene index of this population's first camera: the benchmark's cameras are 0–5."""
REFERENCE = (("default", 0, 1000), ("large", 0, 0), ("tiny", 0, 0))
"""Benchmarks (size, seed, test identities) whose identities this population never repeats:
seed 0, the one every study uses, with the default size's test split grown to 1,000."""
TRAIN, QUERY, GALLERY = SPLIT_DIRS["train"], SPLIT_DIRS["query"], SPLIT_DIRS["gallery"]


@dataclass(frozen=True)
class PeopleSpec:
    """Size of the population; the images are drawn at the default benchmark's 128×64."""

    ids: int = 600
    """Training identities."""
    test_ids: int = 50
    """Held-out identities (query and gallery) that monitor the pre-training."""
    images: tuple[int, int] = (12, 20)
    """Images per training identity (inclusive range)."""
    seed: int = 0
    height: int = 128
    width: int = 64
    num_cams: int = 6


def key(spec: PeopleSpec, purpose: int, k: int = 0) -> list[int]:
    """The key of one of the population's random streams: four words, the last ≥ 1."""
    return [TAG, spec.seed, purpose, k + 1]


@functools.lru_cache(maxsize=1)
def reference_codes() -> np.ndarray:
    """Attribute codes (n, 14) of every identity of the ``REFERENCE`` benchmarks (read-only)."""
    codes = []
    for size, seed, test_ids in REFERENCE:
        spec = syn.get_spec(size)
        shots, idents = syn.plan_more_test(spec, seed, *syn.plan(spec, seed), test_ids)
        codes += [i.codes() for i in idents]
    out = np.array(codes, np.int16)
    out.flags.writeable = False
    return out


def identities(spec: PeopleSpec) -> list[sd.Identity]:
    """``ids + test_ids`` identities, each ≥ ``MIN_DIFF`` codes from every reference identity
    and from each other."""
    rng = np.random.default_rng(key(spec, 1))
    taken = reference_codes()
    out: list[sd.Identity] = []
    while len(out) < spec.ids + spec.test_ids:
        cand = sd._draw_identity(rng)
        c = np.array(cand.codes(), np.int16)
        if (taken != c).sum(axis=1).min() >= MIN_DIFF:
            out.append(cand)
            taken = np.vstack([taken, c])
    return out


@dataclass(frozen=True)
class Shot:
    split: str
    name: str
    ident: int
    cam: int
    spot: int
    key: int


def plan(spec: PeopleSpec) -> list[Shot]:
    """Every image (no pixels yet): training identities 1…ids in random cameras and spots; each
    test identity once per camera in the query and 2–4 times in the gallery, in 2–5 cameras."""
    rng = np.random.default_rng(key(spec, 2))
    spots = spec.width * (sd.PANO - 1) + 1
    frames = [0] * spec.num_cams
    shots: list[Shot] = []

    def add(split: str, pid: int, cam: int) -> None:
        frames[cam] += 1
        f = frames[cam]
        name = f"{pid:04d}_c{cam + 1}s{1 + (f - 1) // 5000}_{25 * f + 10:06d}_01"
        shots.append(Shot(split, name, pid - 1, cam, int(rng.integers(spots)), len(shots)))

    for pid in range(1, spec.ids + 1):
        for _ in range(int(rng.integers(spec.images[0], spec.images[1] + 1))):
            add(TRAIN, pid, int(rng.integers(spec.num_cams)))
    for pid in range(spec.ids + 1, spec.ids + spec.test_ids + 1):
        cams = rng.choice(spec.num_cams, size=int(rng.integers(2, 6)), replace=False)
        for cam in sorted(int(c) for c in cams):
            add(QUERY, pid, cam)
            for _ in range(int(rng.integers(2, 5))):
                add(GALLERY, pid, cam)
    return shots


def scenes(spec: PeopleSpec) -> list[np.ndarray]:
    """The cameras' backdrops: scenes ``CAM_OFFSET`` … of the drawing code at this seed."""
    return [
        sd.camera_scene(CAM_OFFSET + c, spec.seed, spec.height, spec.width)
        for c in range(spec.num_cams)
    ]


_V1_CODE = "667dbb2c4ad2429a"
"""Version 1 was keyed by a hash of the drawing code's source text, frozen here so that its
copies and the pre-trainings that read them keep their digest; later versions by ``VERSION``."""


def params(spec: PeopleSpec) -> dict:
    out = {
        "version": VERSION,
        "spec": dataclasses.asdict(spec),
        "reference": [list(r) for r in REFERENCE],
    }
    return {**out, "code": _V1_CODE} if VERSION == 1 else out


def settings_digest(spec: PeopleSpec) -> str:
    """The population's data digest, known without generating it."""
    return digest.settings_digest(params(spec))


def folder_name(spec: PeopleSpec) -> str:
    return f"people_{spec.ids}x{spec.test_ids}_s{spec.seed}_{settings_digest(spec)[:8]}"


def generate(root: str, spec: PeopleSpec, progress: bool | None = None) -> str:
    """Write the population to ``<root>/people_…/`` (atomic: a temp folder renamed at the end;
    returns at once when a complete copy exists) and return that folder."""
    final = Path(root) / folder_name(spec)
    p = params(spec)
    if syn._is_complete(final, p):
        return str(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        syn._clean_stale(final.parent, final.name)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError as err:
        raise FTNError(
            f"cannot write the people population under {root}: {err.strerror}; choose a "
            f"writable folder"
        ) from None
    try:
        for split in (TRAIN, QUERY, GALLERY):
            (tmp / split).mkdir()
            (tmp / "masks" / split).mkdir(parents=True)
        idents, shots, backdrops = identities(spec), plan(spec), scenes(spec)
        lights = []
        for c in range(spec.num_cams):
            r = np.random.default_rng(key(spec, 3, c))
            lights.append(r.uniform(0.85, 1.1) * (1 + r.normal(0, 0.07, 3)))
        bench = syn.SIZES["default"]
        quiet = None if progress is None else not progress
        for shot in tqdm(shots, desc="people", unit="img", disable=quiet):
            rng = np.random.default_rng(key(spec, 4, shot.key))
            photo, mask = sd.render_image(
                idents[shot.ident],
                backdrops[shot.cam],
                shot.spot,
                -1,
                0.0,
                lights[shot.cam],
                rng,
                bench.occlusion,
                bench.blur,
            )
            photo.save(tmp / shot.split / f"{shot.name}.jpg", quality=bench.jpeg_quality)
            mask.save(tmp / "masks" / shot.split / f"{shot.name}.png")
        counts = {s: sum(1 for x in shots if x.split == s) for s in (TRAIN, QUERY, GALLERY)}
        with open(tmp / syn.MARKER, "w", encoding="utf-8") as f:
            json.dump({"params": p, "counts": counts}, f, indent=1, sort_keys=True)
        syn._install(tmp, final, p, force=False)
    except OSError as err:
        raise FTNError(
            f"writing the people population under {root} failed: {err.strerror} "
            f"({err.filename}); free some space or choose another folder"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def load_people(root: str, spec: PeopleSpec, progress: bool | None = None) -> DatasetSplits:
    """Generate the population if needed, then read it (with person masks)."""
    path = generate(root, spec, progress)
    return read_market_layout(
        path,
        "people",
        MARKET_PATTERN,
        mask_root=os.path.join(path, "masks"),
        data_digest=settings_digest(spec),
    )
