"""Write tiny fixture trees in each real dataset layout (images of a few pixels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Entry = tuple[int, int]
"""(pid, 1-based camera) of one image."""


def write_image(path: str | Path, size: tuple[int, int] = (8, 16), seed: int = 0) -> None:
    """A random RGB image of ``size`` = (width, height); format from the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def corrupt_file(path: str | Path, how: str = "garbage") -> None:
    """Make an image unreadable: ``garbage`` bytes, ``empty``, ``truncated`` (half kept), or
    ``corrupt_data`` (a JPEG whose header and end marker are intact but whose pixel data is
    overwritten: PIL's ``verify`` accepts it, decoding fails)."""
    path = Path(path)
    if how == "garbage":
        path.write_bytes(b"<html>not an image</html>")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "corrupt_data":
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + max(8, len(data) // 8)] = b"\xff" * max(8, len(data) // 8)
        path.write_bytes(bytes(data))
    else:
        raise ValueError(how)


def market_name(pid: int, cam: int, idx: int) -> str:
    return f"{pid:04d}_c{cam}s1_{idx:06d}_00.jpg" if pid >= 0 else f"-1_c{cam}s1_{idx:06d}_00.jpg"


def duke_name(pid: int, cam: int, idx: int) -> str:
    return f"{pid:04d}_c{cam}_f{idx:07d}.jpg"


def cuhk03np_name(pid: int, cam: int, idx: int) -> str:
    return f"{pid:04d}_c{cam}_{idx}.png"


def write_split(
    folder: str | Path, entries: Sequence[Entry], namer: Callable[[int, int, int], str]
) -> list[Path]:
    """One image per entry in ``folder`` (created even if ``entries`` is empty)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for idx, (pid, cam) in enumerate(entries):
        path = folder / namer(pid, cam, idx)
        write_image(path, seed=idx)
        paths.append(path)
    return paths


def write_market_layout(
    dataset_dir: str | Path,
    train: Sequence[Entry],
    query: Sequence[Entry],
    gallery: Sequence[Entry],
    namer: Callable[[int, int, int], str] = market_name,
) -> Path:
    """``dataset_dir/{bounding_box_train,query,bounding_box_test}`` (Market/Duke/CUHK03-NP)."""
    dataset_dir = Path(dataset_dir)
    write_split(dataset_dir / "bounding_box_train", train, namer)
    write_split(dataset_dir / "query", query, namer)
    write_split(dataset_dir / "bounding_box_test", gallery, namer)
    return dataset_dir


# Market-like default content: train pids {2, 5, 7}; gallery has a distractor (pid 0) and
# junk (pid -1).
TRAIN = [(7, 1), (2, 1), (2, 2), (5, 3), (7, 4), (2, 6)]
QUERY = [(2, 1), (7, 2)]
GALLERY = [(2, 3), (7, 1), (0, 4), (-1, 1), (-1, 2)]


def msmt_name(pid: int, cam: int, idx: int) -> str:
    return f"{pid:04d}/{pid:04d}_{idx:03d}_{cam:02d}_0303morning_{idx:04d}_0.jpg"


def write_msmt(
    dataset_dir: str | Path,
    version: int,
    train: Sequence[Entry],
    val: Sequence[Entry],
    query: Sequence[Entry],
    gallery: Sequence[Entry],
) -> Path:
    """MSMT17_V1 (train/, test/) or MSMT17_V2 (mask_train_v2/, mask_test_v2/) with list files."""
    dataset_dir = Path(dataset_dir)
    train_dir, test_dir = ("train", "test") if version == 1 else ("mask_train_v2", "mask_test_v2")
    offset = 0
    for list_name, image_dir, entries in (
        ("list_train.txt", train_dir, train),
        ("list_val.txt", train_dir, val),
        ("list_query.txt", test_dir, query),
        ("list_gallery.txt", test_dir, gallery),
    ):
        lines = []
        for idx, (pid, cam) in enumerate(entries, start=offset):
            rel = msmt_name(pid, cam, idx)
            write_image(dataset_dir / image_dir / rel, seed=idx)
            lines.append(f"{rel} {pid}")
        offset += len(entries)
        dataset_dir.mkdir(parents=True, exist_ok=True)
        (dataset_dir / list_name).write_text("\n".join(lines) + "\n")
    return dataset_dir
