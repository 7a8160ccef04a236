"""The embedded default dataset: a synthetic, background-confounded Re-ID benchmark.

Written in the Market-1501 layout (``bounding_box_train/``, ``query/``, ``bounding_box_test/``)
plus ``masks/<split>/<stem>.png`` (255 = person) and ``scenes.csv`` (camera window, background
object per image). It stages the paper's Figure 1 false alarm: with ``bias`` > 0 each training
identity is seen mostly in its own few cameras, at its own spot of the scene and beside its
own recurring object; at test time identities use any camera and different persons share
the same few spots and objects — so background is a shortcut that works on train only.

    python -m ftn_core.data.synthetic --root data --size default --grid out.png
"""

from __future__ import annotations

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ftn_core.data import digest
from ftn_core.data import synthetic_draw as sd
from ftn_core.data.readers import MARKET_PATTERN, SPLIT_DIRS, read_market_layout
from ftn_core.data.types import DatasetSplits
from ftn_core.errors import FTNError, OneLineParser, cli_main, float_in, int_at_least

GENERATOR_VERSION = 1
"""What decides that a copy on disk must be generated again, and part of the data digest. Bump it
with any change to the pixels, masks or plan (``tests/test_synthetic.py`` pins it together with
a hash of generated images, so a pixel change without a bump fails the tests); editing comments
or refactoring the code changes nothing."""
MARKER = "synthetic.json"
TRAIN, QUERY, GALLERY = SPLIT_DIRS["train"], SPLIT_DIRS["query"], SPLIT_DIRS["gallery"]


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of one benchmark size. Ranges are inclusive ``(low, high)``."""

    height: int
    width: int
    num_cams: int
    train_ids: int
    test_ids: int
    train_images: tuple[int, int]
    """Images per training identity."""
    test_cams: tuple[int, int]
    """Cameras each test identity appears in (≥ 2, so every query has a cross-camera match)."""
    gallery_per_cam: tuple[int, int]
    """Gallery images per test identity and camera."""
    query_per_cam: int = 1
    distractors: int = 0
    """Gallery images of pid 0: badly cropped persons who are nobody's match."""
    home_cams: int = 2
    """Cameras an identity is tied to in training when ``bias`` = 1."""
    bias: float = 0.8
    """Train background/identity confounding: P(home camera), P(own spot), P(own object)."""
    test_scenes: int = 3
    """Shared (spot, object) scenes per camera at test time."""
    test_scene_share: float = 0.75
    """Share of test images taken at one of those shared scenes (the rest are random)."""
    occlusion: float = 0.2
    blur: float = 0.3
    jpeg_quality: int = 90


SIZES: dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(
        64,
        32,
        num_cams=4,
        train_ids=16,
        test_ids=8,
        train_images=(8, 12),
        test_cams=(2, 4),
        gallery_per_cam=(1, 3),
        distractors=8,
        test_scenes=2,
    ),
    "default": SyntheticSpec(
        128,
        64,
        num_cams=6,
        train_ids=150,
        test_ids=100,
        train_images=(12, 20),
        test_cams=(2, 5),
        gallery_per_cam=(2, 4),
        distractors=150,
    ),
    "large": SyntheticSpec(
        256,
        128,
        num_cams=6,
        train_ids=751,
        test_ids=750,
        train_images=(10, 24),
        test_cams=(2, 6),
        gallery_per_cam=(3, 6),
        distractors=2500,
        test_scenes=6,
    ),
}


@dataclass(frozen=True)
class Shot:
    """One planned image: where it goes and what stands in the background."""

    split: str
    name: str
    pid: int
    ident: int
    """Index into the identity list (distractors have their own identities)."""
    cam: int
    spot: int
    """Left edge of the image's window in the camera's panorama."""
    obj: int
    """Background object (−1 = none)."""
    obj_x: float
    """Object position as a fraction of the width (left or right of the person)."""
    key: int
    """Seeds the image's nuisance (pose, light, ...); train and test keys never collide."""


def get_spec(size: str, bias: float | None = None) -> SyntheticSpec:
    if size not in SIZES:
        raise FTNError(f"unknown synthetic size '{size}' (choose one of {', '.join(SIZES)})")
    spec = SIZES[size]
    if bias is not None:
        if not 0.0 <= bias <= 1.0:
            raise FTNError(f"synthetic bias {bias} is outside 0..1")
        spec = dataclasses.replace(spec, bias=float(bias))
    return spec


def dataset_name(size: str, seed: int, bias: float | None = None, test_ids: int = 0) -> str:
    """``synthetic_<size>_s<seed>``, plus ``_b<bias>`` when the bias is not the size's default
    and ``_t<test ids>`` when the test split is grown."""
    name = f"synthetic_{size}_s{seed}"
    if bias is not None and float(bias) != SIZES[size].bias:
        name += f"_b{float(bias):g}"
    if check_test_ids(size, test_ids):
        name += f"_t{test_ids}"
    return name


# --------------------------------------------------------------------------- planning


class _Frames:
    """Names and nuisance keys of one split group's images: a frame counter per camera, Market
    style names (sequence ``seq0`` onwards, 5,000 frames per sequence), keys from ``key0``."""

    def __init__(
        self, spec: SyntheticSpec, seq0: int, key0: int, counts: list[int] | None = None
    ) -> None:
        self.cams, self.pw = spec.num_cams, spec.width * (sd.PANO - 1)
        self.seq0, self.key0 = seq0, key0
        self.counts = counts or [0] * spec.num_cams
        self.shots: list[Shot] = []

    def add(
        self,
        rng: np.random.Generator,
        split: str,
        pid: int,
        ident: int,
        cam: int,
        spot: int,
        obj: int,
        obj_x: float,
    ) -> None:
        self.counts[cam] += 1
        f = self.counts[cam]
        name = f"{pid:04d}_c{cam + 1}s{self.seq0 + (f - 1) // 5000}_{25 * f + 10:06d}_01"
        spot = int(np.clip(spot + rng.integers(-2, 3), 0, self.pw))
        obj_x = round(float(obj_x + rng.uniform(-0.02, 0.02)), 3)
        self.shots.append(
            Shot(
                split,
                name,
                int(pid),
                int(ident),
                int(cam),
                spot,
                int(obj),
                obj_x,
                self.key0 + f * self.cams + cam,
            )
        )


def _obj_pos(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.06, 0.26) if rng.random() < 0.5 else rng.uniform(0.74, 0.94))


def _random_obj(rng: np.random.Generator) -> tuple[int, float]:
    return (int(rng.integers(sd.NUM_OBJECTS)) if rng.random() < 0.6 else -1), _obj_pos(rng)


def _test_scenes(spec: SyntheticSpec, seed: int) -> tuple[list, np.random.Generator]:
    """Per camera, the shared (spot, object, object x) scenes of the test split — the first
    draws of the test stream, so ``plan`` and ``plan_more_test`` see the same ones — and that
    stream, where ``plan`` goes on drawing its test images."""
    rng = np.random.default_rng([seed, 1, 2])
    pw = spec.width * (sd.PANO - 1)
    return [
        [(int(rng.integers(pw + 1)),) + _random_obj(rng) for _ in range(spec.test_scenes)]
        for _ in range(spec.num_cams)
    ], rng


def _test_scene(
    spec: SyntheticSpec, rng: np.random.Generator, scenes, cam: int
) -> tuple[int, int, float]:
    if rng.random() < spec.test_scene_share:
        return scenes[cam][int(rng.integers(spec.test_scenes))]
    return (int(rng.integers(spec.width * (sd.PANO - 1) + 1)),) + _random_obj(rng)


def _test_identity(
    spec: SyntheticSpec, rng: np.random.Generator, frames: _Frames, scenes, pid: int, ident: int
) -> None:
    """A test identity's query (one per camera) and gallery images, in 2–5 cameras."""
    n_cams = int(rng.integers(spec.test_cams[0], spec.test_cams[1] + 1))
    for cam in sorted(
        int(c) for c in rng.choice(spec.num_cams, size=min(n_cams, spec.num_cams), replace=False)
    ):
        n_gal = int(rng.integers(spec.gallery_per_cam[0], spec.gallery_per_cam[1] + 1))
        for k in range(spec.query_per_cam + n_gal):
            frames.add(
                rng,
                QUERY if k < spec.query_per_cam else GALLERY,
                pid,
                ident,
                cam,
                *_test_scene(spec, rng, scenes, cam),
            )


def _distractors(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    frames: _Frames,
    scenes,
    count: int,
    first_ident: int,
    n_persons: int,
) -> None:
    """``count`` gallery images of pid 0 (badly cropped persons who are nobody's match)."""
    for _ in range(count):
        cam = int(rng.integers(spec.num_cams))
        frames.add(
            rng,
            GALLERY,
            0,
            first_ident + int(rng.integers(n_persons)),
            cam,
            *_test_scene(spec, rng, scenes, cam),
        )


def plan(spec: SyntheticSpec, seed: int) -> tuple[list[Shot], list[sd.Identity]]:
    """Every image of the benchmark (no pixels yet) and the identities, from ``seed``.

    Train and test draw from separate random streams (and frame counters, test sequences
    start at s4), so the test split is the same whatever the train ``bias``.
    """
    rng = np.random.default_rng([seed, 1, 0])
    C, PW = spec.num_cams, spec.width * (sd.PANO - 1)  # PW = number of window positions - 1
    n_ids = spec.train_ids + spec.test_ids
    n_dis = min(spec.distractors, 64)
    idents = sd.sample_identities(rng, n_ids + n_dis)
    pids = rng.permutation(n_ids) + 1
    train_pids, test_pids = np.sort(pids[: spec.train_ids]), np.sort(pids[spec.train_ids :])

    b = spec.bias
    rng = np.random.default_rng([seed, 1, 1])
    train = _Frames(spec, seq0=1, key0=0)
    for pid in train_pids:
        home = rng.choice(C, size=min(spec.home_cams, C), replace=False)
        own_spot = {int(c): int(rng.integers(PW + 1)) for c in home}
        own_obj, own_x = int(rng.integers(sd.NUM_OBJECTS)), _obj_pos(rng)
        for _ in range(int(rng.integers(spec.train_images[0], spec.train_images[1] + 1))):
            cam = int(rng.choice(home)) if rng.random() < b else int(rng.integers(C))
            spot = (
                own_spot[cam] if cam in own_spot and rng.random() < b else int(rng.integers(PW + 1))
            )
            obj, obj_x = (own_obj, own_x) if rng.random() < b else _random_obj(rng)
            train.add(rng, TRAIN, pid, pid - 1, cam, spot, obj, obj_x)

    scenes, rng = _test_scenes(spec, seed)
    test = _Frames(spec, seq0=4, key0=10**8)
    for pid in test_pids:
        _test_identity(spec, rng, test, scenes, pid, pid - 1)
    _distractors(spec, rng, test, scenes, spec.distractors, n_ids, n_dis)
    return train.shots + test.shots, idents


def plan_more_test(
    spec: SyntheticSpec, seed: int, shots: list[Shot], idents: list[sd.Identity], test_ids: int
) -> tuple[list[Shot], list[sd.Identity]]:
    """``plan``'s benchmark with its test split grown to ``test_ids`` identities.

    Everything ``plan`` wrote stays as it was, so the training split (and the size's own test
    split) is byte-identical whatever ``test_ids``. The new identities, their images and the
    distractors added in proportion come from random streams of their own; they differ from
    every existing identity as much as those differ from each other, get pids after the last
    one, stand at the same shared test scenes, and continue each camera's frame counter, so no
    name or nuisance seed repeats.
    """
    extra = test_ids - spec.test_ids
    if extra <= 0:
        return shots, idents
    scenes, _ = _test_scenes(spec, seed)
    rng = np.random.default_rng([seed, 1, 3])
    codes = np.array([i.codes() for i in idents], np.int16)
    new: list[sd.Identity] = []
    while len(new) < extra:
        cand = sd._draw_identity(rng)
        c = np.array(cand.codes(), np.int16)
        if (codes != c).sum(axis=1).min() >= 3:
            new.append(cand)
            codes = np.vstack([codes, c])
    n_ids = spec.train_ids + spec.test_ids  # plan()'s pids are 1..n_ids
    test = _Frames(
        spec,
        seq0=4,
        key0=10**8,
        counts=[
            sum(1 for s in shots if s.split != TRAIN and s.cam == c) for c in range(spec.num_cams)
        ],
    )
    for k in range(extra):
        _test_identity(spec, rng, test, scenes, n_ids + 1 + k, len(idents) + k)
    _distractors(
        spec,
        rng,
        test,
        scenes,
        round(spec.distractors * extra / spec.test_ids),
        n_ids,
        min(spec.distractors, 64),
    )
    return shots + test.shots, idents + new


# --------------------------------------------------------------------------- rendering

_CTX: dict = {}


def _init_worker(spec: SyntheticSpec, seed: int, idents: list[sd.Identity], out: str) -> None:
    scenes = [sd.camera_scene(c, seed, spec.height, spec.width) for c in range(spec.num_cams)]
    lights = []
    for c in range(spec.num_cams):
        r = np.random.default_rng([seed, 31, c])
        lights.append(r.uniform(0.85, 1.1) * (1 + r.normal(0, 0.07, 3)))
    _CTX.update(spec=spec, seed=seed, idents=idents, out=out, scenes=scenes, lights=lights)


def _render(shot: Shot) -> None:
    """Draw one planned image and write it and its mask (per-image RNG: order-independent)."""
    spec, out = _CTX["spec"], _CTX["out"]
    rng = np.random.default_rng([_CTX["seed"], 2, shot.key])
    photo, mask = sd.render_image(
        _CTX["idents"][shot.ident],
        _CTX["scenes"][shot.cam],
        shot.spot,
        shot.obj,
        shot.obj_x,
        _CTX["lights"][shot.cam],
        rng,
        spec.occlusion,
        spec.blur,
        partial=shot.pid == 0,
    )
    photo.save(os.path.join(out, shot.split, shot.name + ".jpg"), quality=spec.jpeg_quality)
    mask.save(os.path.join(out, "masks", shot.split, shot.name + ".png"))


_V1_CODE = {False: "3fde4204a82f0d43", True: "d50011b4dce86502"}
"""Version 1's copies were keyed by a hash of the drawing code's source text (with or without
the grown test split's code); that hash is frozen here so that those copies, and the runs that
read them, keep their data digest. Later versions are keyed by the version alone."""


def _params(size: str, seed: int, spec: SyntheticSpec, test_ids: int = 0) -> dict:
    grown = test_ids > spec.test_ids
    params = {
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "spec": dataclasses.asdict(spec),
    }
    if GENERATOR_VERSION == 1:
        params["code"] = _V1_CODE[grown]
    return {**params, "test_ids": test_ids} if grown else params


def check_test_ids(size: str, test_ids: int) -> int:
    """``test_ids`` (0: the size's own), refused below the size's own: the split only grows."""
    own = get_spec(size).test_ids
    if test_ids and test_ids < own:
        raise FTNError(
            f"data.synthetic_test_ids={test_ids}: the {size} benchmark has {own} test "
            f"identities and its test split only grows; give 0 or at least {own}"
        )
    return test_ids if test_ids > own else 0


def _is_complete(path: Path, params: dict) -> bool:
    try:
        with open(path / MARKER, encoding="utf-8") as f:
            return json.load(f)["params"] == json.loads(json.dumps(params))
    except (OSError, ValueError, KeyError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(root: Path, name: str) -> None:
    """Remove temp/old folders of ``name`` left by killed generations (their pid is gone)."""
    for p in root.glob(f".{name}.*-*"):
        try:
            pid = int(p.name[len(name) + 1 :].split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def generate(
    root: str,
    size: str = "default",
    seed: int = 0,
    force: bool = False,
    *,
    bias: float | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    test_ids: int = 0,
) -> str:
    """Write the benchmark to ``<root>/synthetic_<size>_s<seed>/`` and return that folder.

    ``test_ids`` > the size's own grows the test split to that many identities
    (``plan_more_test``: the training split stays byte-identical), in ``…_t<test_ids>/``.

    Returns at once if a complete copy with the same parameters exists (unless ``force``).
    Atomic: everything is written to a temp folder beside it and renamed at the end, so a
    killed run never leaves a half dataset. Byte-identical for a seed, whatever ``workers``.
    ``workers``: processes (None = 1 below 10,000 images, else up to 8 cores);
    ``progress``: None = a bar only on a terminal.
    """
    spec = get_spec(size, bias)
    test_ids = check_test_ids(size, test_ids)
    name = dataset_name(size, seed, bias, test_ids)
    rootp = Path(root)
    final = rootp / name
    params = _params(size, seed, spec, test_ids)
    if not force and _is_complete(final, params):
        return str(final)
    if rootp.exists() and not rootp.is_dir():
        raise FTNError(f"--root {root} is a file, not a folder; choose a folder for the data")
    try:
        rootp.mkdir(parents=True, exist_ok=True)
        _clean_stale(rootp, name)
        tmp = rootp / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()  # (not mkdtemp: its 0700 mode would survive the rename)
    except OSError as err:
        raise FTNError(
            f"cannot write the synthetic benchmark under --root {root}: "
            f"{err.strerror}; choose a writable folder"
        ) from None
    try:
        shots, idents = plan_more_test(spec, seed, *plan(spec, seed), test_ids)
        for split in (TRAIN, QUERY, GALLERY):
            (tmp / split).mkdir()
            (tmp / "masks" / split).mkdir(parents=True)
        bar = tqdm(
            total=len(shots),
            desc=f"synthetic {size}",
            unit="img",
            disable=None if progress is None else not progress,
        )
        if workers is None:
            workers = 1 if len(shots) < 10_000 else min(8, os.cpu_count() or 1)
        if workers > 1:  # spawn: safe even if the caller runs torch/CUDA threads
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, _init_worker, (spec, seed, idents, str(tmp))) as pool:
                for _ in pool.imap_unordered(_render, shots, chunksize=64):
                    bar.update()
        else:
            _init_worker(spec, seed, idents, str(tmp))
            for shot in shots:
                _render(shot)
                bar.update()
        bar.close()
        _write_scenes(tmp / "scenes.csv", shots)
        counts = {s: sum(1 for x in shots if x.split == s) for s in (TRAIN, QUERY, GALLERY)}
        files = digest.tree_digest(str(tmp), FILE_DIRS)[0]
        with open(tmp / MARKER, "w", encoding="utf-8") as f:
            json.dump(
                {"params": params, "counts": counts, "files": files}, f, indent=1, sort_keys=True
            )
        _install(tmp, final, params, force)
    except OSError as err:
        raise FTNError(
            f"writing the synthetic benchmark under --root {root} failed: "
            f"{err.strerror} ({err.filename}); free some space or choose another "
            f"folder"
        ) from None
    finally:
        _CTX.clear()
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return str(final)


def _install(tmp: Path, final: Path, params: dict, force: bool) -> None:
    """Rename ``tmp`` to ``final``; a complete copy that appeared meanwhile wins unless forced."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    if not force and _is_complete(final, params):
        return  # another process finished first
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _write_scenes(path: Path, shots: list[Shot]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["split", "name", "pid", "cam", "spot", "obj", "obj_x"])
        for s in shots:
            w.writerow([s.split, s.name, s.pid, s.cam + 1, s.spot, s.obj, s.obj_x])


def read_scenes(dataset_dir: str) -> list[dict]:
    """Rows of ``scenes.csv``: split, name, pid, cam (1-based), spot, obj, obj_x."""
    conv = {"split": str, "name": str, "obj_x": float}
    with open(os.path.join(dataset_dir, "scenes.csv"), encoding="utf-8") as f:
        return [{k: conv.get(k, int)(v) for k, v in row.items()} for row in csv.DictReader(f)]


def settings_digest(
    size: str = "default", seed: int = 0, bias: float | None = None, test_ids: int = 0
) -> str:
    """The data digest of the benchmark these settings generate (its pixels depend on nothing
    else), known without generating it."""
    return digest.settings_digest(
        _params(size, seed, get_spec(size, bias), check_test_ids(size, test_ids))
    )


FILE_DIRS = (TRAIN, QUERY, GALLERY, "masks")
"""The folders whose files a copy of the benchmark must keep exactly as generated."""


def verify_files(dataset_dir: str) -> None:
    """Refuse a copy whose images or masks changed after generation (deleted, edited, added):
    its settings digest would name data it no longer holds. The files' digest is written when
    the copy is generated; a copy made by older code gets it at its first read."""
    marker = Path(dataset_dir) / MARKER
    with open(marker, encoding="utf-8") as f:
        info = json.load(f)
    now, count = digest.tree_digest(dataset_dir, FILE_DIRS)
    expected = info.get("files")
    if expected is None:  # generated before files were hashed: record them now
        info["files"] = now
        tmp = marker.with_name(f".{MARKER}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, marker)
        except OSError:  # a read-only copy: checked from the next writable read on
            tmp.unlink(missing_ok=True)
        return
    if now != expected:
        raise FTNError(
            f"the synthetic benchmark in {dataset_dir} changed after it was generated (its "
            f"{count} files no longer match: deleted, edited or added images or masks); delete "
            f"that folder and it is generated again, identical, on the next run"
        )


def load_synthetic(
    root: str,
    size: str = "default",
    seed: int = 0,
    skip_bad_images: bool = False,
    *,
    bias: float | None = None,
    workers: int | None = None,
    test_ids: int = 0,
) -> DatasetSplits:
    """Generate the benchmark if needed, then read it; every sample carries its ``mask_path``."""
    dataset_dir = generate(root, size, seed, bias=bias, workers=workers, test_ids=test_ids)
    verify_files(dataset_dir)
    return read_market_layout(
        dataset_dir,
        f"synthetic_{size}",
        MARKET_PATTERN,
        mask_root=os.path.join(dataset_dir, "masks"),
        skip_bad_images=skip_bad_images,
        data_digest=settings_digest(size, seed, bias, test_ids),
    )


# --------------------------------------------------------------------------- command line


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description="Generate the synthetic background-confounded Re-ID benchmark "
        "(Market-1501 layout with person masks).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m ftn_core.data.synthetic                      # data/synthetic_default_s0\n"
        "  python -m ftn_core.data.synthetic --size tiny --seed 1 --grid sample.png\n"
        "  python -m ftn_core.data.synthetic --test-ids 1000    # data/synthetic_default_s0_t1000",
    )
    parser.add_argument("--root", default="data", help="parent folder (default: data)")
    parser.add_argument("--size", default="default", choices=list(SIZES))
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument(
        "--bias",
        type=float_in(0, 1, low_open=False, high_open=False),
        default=None,
        help="train background/identity confounding 0..1 (default: the size's)",
    )
    parser.add_argument(
        "--test-ids",
        type=int_at_least(0),
        default=0,
        help="grow the test split to this many identities; the training split "
        "stays byte-identical (default: the size's own, 100 for default)",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if it exists")
    parser.add_argument(
        "--workers",
        type=int_at_least(1),
        default=None,
        help="processes (default: 1, or up to 8 for the large size)",
    )
    parser.add_argument("--grid", default=None, help="also save a sample picture (PNG) here")
    args = parser.parse_args(argv)
    from ftn_core.data import synthetic_checks as checks
    from ftn_core.errors import check_writable_dir

    if args.grid:  # checked before the data is generated, not after
        if not args.grid.lower().endswith(".png"):
            raise FTNError(
                f"--grid {args.grid}: the sample picture is a PNG; give a name ending in .png"
            )
        if os.path.isdir(args.grid):
            raise FTNError(
                f"--grid {args.grid}: is a folder; give a file name such as "
                f"{os.path.join(args.grid, 'sample.png')}"
            )
        check_writable_dir(
            Path(args.grid).parent, "--grid", "cannot write the sample picture there"
        )

    t0 = time.perf_counter()
    path = generate(
        args.root,
        args.size,
        args.seed,
        args.force,
        bias=args.bias,
        workers=args.workers,
        test_ids=args.test_ids,
    )
    splits = read_market_layout(
        path,
        f"synthetic_{args.size}",
        MARKET_PATTERN,
        mask_root=os.path.join(path, "masks"),
        verify_images=False,
    )
    print(splits.summary())
    stats = checks.bias_stats(read_scenes(path))
    print(
        f"train bias: {stats['cam_top_share']:.2f} of an identity's images in its top-2 "
        f"cameras (uniform {stats['cam_uniform']:.2f}), {stats['obj_top_share']:.2f} with "
        f"its most frequent object"
    )
    if args.grid:
        os.makedirs(os.path.dirname(args.grid) or ".", exist_ok=True)
        print(f"grid: {checks.save_grid(path, args.grid)}")
    print(f"ready in {time.perf_counter() - t0:.1f} s: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
