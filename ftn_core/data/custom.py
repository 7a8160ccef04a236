"""Your own data: a folder in the Market-1501 file-name layout, or a CSV of path,pid,camid,split.

``--dataset folder --root DIR``: ``DIR/{train,query,gallery}/`` or
``DIR/{bounding_box_train,query,bounding_box_test}/`` holding images named like Market-1501's
(``0002_c1s1_000451_03.jpg``: pid 2, camera 1; pid −1 = junk, dropped).

``--dataset csv --root FILE``: a CSV with a header and the columns ``path,pid,camid,split``
(paths relative to the CSV's folder, or absolute; ``camid`` counted from 0; ``split`` one of
train, query, gallery; pid −1 = junk, dropped). Both go through the same image checks and
one-line errors as the built-in readers.
"""

from __future__ import annotations

import csv
import os

from ftn_core.data.readers import GENERIC_PATTERN, finish_splits, read_market_layout
from ftn_core.data.types import DatasetSplits, Sample
from ftn_core.errors import FTNError

FOLDER_LAYOUTS = (
    {"train": "train", "query": "query", "gallery": "gallery"},
    {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"},
)
CSV_COLUMNS = ("path", "pid", "camid", "split")
SPLITS = ("train", "query", "gallery")


def read_folder(
    root: str, skip_bad_images: bool = False, verify_images: bool = True
) -> DatasetSplits:
    """A folder with ``train/ query/ gallery/`` (or Market's folder names) of Market-named images."""
    if not os.path.isdir(root):
        raise FTNError(
            f"--root {root}: not a folder (--dataset folder needs train/, query/ and gallery/ in it)"
        )
    for dirs in FOLDER_LAYOUTS:
        if all(os.path.isdir(os.path.join(root, d)) for d in dirs.values()):
            return read_market_layout(
                root,
                "folder",
                GENERIC_PATTERN,
                split_dirs=dirs,
                skip_bad_images=skip_bad_images,
                verify_images=verify_images,
            )
    raise FTNError(
        f"--root {root}: expected train/, query/ and gallery/ (or bounding_box_train/, "
        f"query/, bounding_box_test/) in it"
    )


def read_csv(path: str, skip_bad_images: bool = False, verify_images: bool = True) -> DatasetSplits:
    """A CSV of ``path,pid,camid,split``; every problem is one line naming the row."""
    if os.path.isdir(path):
        csvs = sorted(n for n in os.listdir(path) if n.lower().endswith(".csv"))
        example = f" (e.g. --root {os.path.join(path, csvs[0])})" if csvs else ""
        raise FTNError(
            f"--root {path}: is a folder; --dataset csv needs the CSV file itself{example}"
        )
    if not os.path.isfile(path):
        raise FTNError(
            f"--root {path}: no such file (--dataset csv needs a CSV of {','.join(CSV_COLUMNS)})"
        )
    base = os.path.dirname(os.path.abspath(path))
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    first_line: dict[str, int] = {}  # resolved image path → the line that listed it
    # utf-8-sig: a spreadsheet's byte order mark is not part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FTNError(
                f"{path}: missing column(s) {', '.join(missing)} (the header must name "
                f"{','.join(CSV_COLUMNS)})"
            )
        for row in reader:
            line = reader.line_num  # the file's line, blank lines counted (the reader skips them)
            where = f"{path} line {line}"
            split = (row["split"] or "").strip()
            if split not in SPLITS:
                raise FTNError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
            values = {}
            for key in ("pid", "camid"):
                try:
                    values[key] = int((row[key] or "").strip())
                except ValueError:
                    raise FTNError(f"{where}: {key} '{row[key]}' is not an integer") from None
            if values["camid"] < 0:
                raise FTNError(
                    f"{where}: camid {values['camid']} is negative (cameras count from 0)"
                )
            written = (row["path"] or "").strip()
            if not written:
                raise FTNError(f"{where}: the path is empty; give the image's path")
            image = os.path.join(base, written)
            key = os.path.normpath(image)  # a/./x.jpg and a/x.jpg are one image
            if key in first_line:
                raise FTNError(
                    f"{where}: image {written} is already listed on line "
                    f"{first_line[key]}; list each image once"
                )
            first_line[key] = line
            if not os.path.isfile(image):
                raise FTNError(f"{where}: image {image} does not exist")
            if values["pid"] == -1:  # junk, as in Market-1501
                continue
            splits[split].append(Sample(image, values["pid"], values["camid"], None))
    for split, items in splits.items():
        if not items:
            raise FTNError(f"{path}: no {split} rows (every split needs images with pid ≥ 0)")
    return finish_splits(
        "csv",
        base,
        splits["train"],
        splits["query"],
        splits["gallery"],
        skip_bad_images,
        verify_images,
    )
