"""The generated data's identity (the benchmark, the people population, the fractal set) is an
explicit version, pinned here to the pixels it draws.

A change to what the generators draw (images, masks, the plan of who stands where) without a
bump of ``GENERATOR_VERSION`` (or the people population's ``VERSION``) fails these tests; a
change that draws the same pixels (comments, refactoring) leaves every data digest, and so every
run's identity, as it is.
"""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ftn_core.data import fractal as F
from ftn_core.data import people as P
from ftn_core.data import synthetic as S

PER_SPLIT = 6


def pixel_hash(folder: Path, splits: tuple[str, ...]) -> str:
    """Hash of the decoded pixels of the first images of each split, their masks, and the plan."""
    h = hashlib.sha256()
    for split in splits:
        for image in sorted((folder / split).glob("*.jpg"))[:PER_SPLIT]:
            mask = folder / "masks" / split / (image.stem + ".png")
            for f in (image, mask):
                h.update(f.name.encode())
                h.update(np.asarray(Image.open(f)).tobytes())
    if (folder / "scenes.csv").exists():
        h.update((folder / "scenes.csv").read_bytes())
    return h.hexdigest()[:16]


def test_the_benchmarks_pixels_are_pinned_to_its_version(data_root):
    folder = Path(data_root) / "synthetic_tiny_s0"
    got = (S.GENERATOR_VERSION, pixel_hash(folder, (S.TRAIN, S.QUERY, S.GALLERY)))
    assert got == (1, "48c9d38f5abb78d5"), (
        "the synthetic benchmark draws other pixels: bump GENERATOR_VERSION in "
        "ftn_core/data/synthetic.py and pin the new hash here"
    )


def test_the_people_populations_pixels_are_pinned_to_its_version(tmp_path):
    spec = P.PeopleSpec(ids=4, test_ids=2, images=(2, 3))
    folder = Path(P.generate(str(tmp_path), spec, progress=False))
    splits = tuple(d.name for d in sorted(folder.iterdir()) if d.is_dir() and d.name != "masks")
    assert (P.VERSION, pixel_hash(folder, splits)) == (1, "4c555e5018c95287"), (
        "the people population draws other pixels: bump VERSION in ftn_core/data/people.py and "
        "pin the new hash here"
    )


def test_the_fractal_images_are_pinned_to_their_version():
    images, labels = F.generate(F.FractalSpec(categories=4, instances=3, height=32, width=16))
    got = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    assert (F.VERSION, got) == (1, "f3845c8d7535cf00"), (
        "the fractal set renders other pixels: bump VERSION in ftn_core/data/fractal.py and pin "
        "the new hash here"
    )


def test_data_digests_depend_on_the_version_and_settings_only():
    # The digests runs are keyed by, computed from constants: no source text enters them.
    assert S.settings_digest("tiny", 0) == "fbd9efe028cd2796"
    assert S.settings_digest("default", 0) == "f82603e51f87a74d"
    assert S.settings_digest("default", 0, test_ids=1000) == "87ce43bf007c2077"
    assert P.settings_digest(P.PeopleSpec()) == "95ab292760e5f5c2"
    assert F.settings_digest(F.FractalSpec()) == "fc35daa2ecc5a48c"
    assert S.settings_digest("tiny", 1) != S.settings_digest("tiny", 0)
