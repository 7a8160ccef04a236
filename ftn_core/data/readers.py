"""Readers for the real Re-ID benchmarks: Market-1501, DukeMTMC-reID, CUHK03-NP, MSMT17.

Each reader finds its dataset in the usual nestings under ``root``, parses identities and
cameras from file names (or MSMT17's list files), drops pid −1 (junk), keeps pid 0
(gallery distractors), makes camera ids 0-based and relabels train pids 0..n−1 in sorted
order; query and gallery keep their original pids (paper §4.1, Market-1501 protocol).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ftn_core.data import digest
from ftn_core.data.types import DatasetSplits, Sample
from ftn_core.errors import FTNError

KNOWN_DATASETS = ("market1501", "dukemtmcreid", "cuhk03_labeled", "cuhk03_detected", "msmt17")

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
SKIP_HINT = "fix or delete it, or pass --skip-bad-images to skip unreadable images"

# File-name patterns: group 1 = pid (may be -1), group 2 = 1-based camera.
MARKET_PATTERN = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d+_\d+\.(?:jpe?g|png)$", re.IGNORECASE)
DUKE_PATTERN = re.compile(r"^(-?\d+)_c(\d+)_f\d+\.(?:jpe?g|png)$", re.IGNORECASE)
CUHK03NP_PATTERN = re.compile(r"^(-?\d+)_c(\d+)_\d+\.(?:jpe?g|png)$", re.IGNORECASE)
GENERIC_PATTERN = re.compile(r"^(-?\d+)_c(\d+)(?:[s_][^.]*)?\.(?:jpe?g|png)$", re.IGNORECASE)
"""Any ``<pid>_c<cam>...`` name; the default of :func:`read_market_layout`."""
# MSMT17 list entries: ``0000/0000_000_01_0303morning_0015_0.jpg 0`` (third field = camera).
MSMT_NAME = re.compile(r"^\d+_\d+_(\d+)_", re.IGNORECASE)


@dataclass(frozen=True)
class _Layout:
    title: str
    example: str
    pattern: re.Pattern[str]
    candidates: tuple[str, ...]
    """Folders relative to root, tried in order ("" = root itself)."""


_LAYOUTS = {
    "market1501": _Layout(
        "Market-1501",
        "0002_c1s1_000451_03.jpg",
        MARKET_PATTERN,
        (
            "market1501/Market-1501-v15.09.15",
            "Market-1501-v15.09.15",
            "market1501",
            "Market-1501",
            "market-1501",
            "",
        ),
    ),
    "dukemtmcreid": _Layout(
        "DukeMTMC-reID",
        "0005_c2_f0046985.jpg",
        DUKE_PATTERN,
        (
            "dukemtmcreid/DukeMTMC-reID",
            "dukemtmc-reid/DukeMTMC-reID",
            "DukeMTMC-reID",
            "dukemtmcreid",
            "dukemtmc-reid",
            "",
        ),
    ),
}
for _variant in ("labeled", "detected"):
    _LAYOUTS[f"cuhk03_{_variant}"] = _Layout(
        f"CUHK03-NP {_variant}",
        "0001_c1_1.png",
        CUHK03NP_PATTERN,
        tuple(
            f"{base}/{_variant}"
            for base in ("cuhk03/cuhk03-np", "cuhk03-np", "CUHK03-NP", "cuhk03_np", "cuhk03")
        )
        + (_variant, f"../{_variant}"),  # root = cuhk03-np/ or one of its variants
    )
_MSMT_CANDIDATES = (
    "msmt17/MSMT17_V2",
    "msmt17/MSMT17_V1",
    "MSMT17_V2",
    "MSMT17_V1",
    "msmt17",
    "MSMT17",
    "",
)
_MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
_MSMT_DIRS = {
    "train": ("train", "mask_train_v2", "mask_train_V2"),
    "test": ("test", "mask_test_v2", "mask_test_V2"),
}


# --------------------------------------------------------------------------- images


def check_image(path: str) -> bool:
    """Whether the image decodes completely, with the decoder training uses (and, for a JPEG,
    whether it ends in its End Of Image marker): catches empty files, non-images, truncated
    downloads and corrupt pixel data before any run starts. A JPEG is known by its first
    bytes, not its name, as the decoder knows it: a PNG named ``.jpg`` is a PNG."""
    from ftn_core.data.dataset import read_image

    try:
        with open(path, "rb") as f:
            if f.read(3) == b"\xff\xd8\xff":  # Start Of Image marker, then the next marker's 0xFF
                f.seek(max(0, os.path.getsize(path) - 32))
                if b"\xff\xd9" not in f.read():  # End Of Image marker (tolerates padding)
                    return False
        read_image(path)
        return True
    except Exception:  # noqa: BLE001 - any failure means "unreadable"
        return False


def _verify(
    samples: list[Sample], skip_bad_images: bool, files: dict[str, digest.FileState]
) -> tuple[list[Sample], list[str]]:
    """Drop (or raise on) unreadable images; returns the kept samples and the dropped paths."""
    ok = [s.path in files and bool(files[s.path].readable) for s in samples]
    bad = [s.path for s, good in zip(samples, ok) if not good]
    if bad and not skip_bad_images:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise FTNError(
            f"cannot read image {bad[0]}{more}: missing, corrupt or not an image; {SKIP_HINT}"
        )
    return [s for s, good in zip(samples, ok) if good], bad


def _relabel(samples: list[Sample]) -> list[Sample]:
    """Train pids → 0..n−1 in sorted order of the original pids."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.mask_path) for s in samples]


def check_matches(splits: DatasetSplits) -> None:
    """At least one query must have a true match (its identity in the gallery, seen by another
    camera), or every evaluation fails: said when the data is read, not after training."""
    cams: dict[int, set[int]] = {}
    for s in splits.gallery:
        cams.setdefault(s.pid, set()).add(s.camid)
    if not any(cams.get(q.pid, set()) - {q.camid} for q in splits.query):
        raise FTNError(
            f"{splits.name}: no query has a true match in the gallery (its identity seen by another "
            f"camera), so nothing can be evaluated; check that query and gallery come from the same "
            f"dataset"
        )


def finish_splits(
    name: str,
    root: str,
    train: list[Sample],
    query: list[Sample],
    gallery: list[Sample],
    skip_bad_images: bool,
    verify_images: bool,
    data_digest: str | None = None,
) -> DatasetSplits:
    """Check every image (or skip the unreadable ones), relabel the training pids and take
    the digest of what was read (``ftn_core.data.digest``; ``data_digest`` when the data's
    digest is known from elsewhere, as for generated data)."""
    files = (
        {}
        if data_digest is not None and not verify_images
        else digest.scan(
            [s.path for s in (*train, *query, *gallery)],
            root,
            check_image if verify_images else None,
        )
    )
    skipped: list[str] = []
    if verify_images:
        parts = []
        for split, items in (("train", train), ("query", query), ("gallery", gallery)):
            kept, bad = _verify(items, skip_bad_images, files)
            if not kept:
                raise FTNError(f"{name}: every {split} image is unreadable ({len(bad)} skipped)")
            parts.append(kept)
            skipped += bad
        train, query, gallery = parts
    train = _relabel(train)
    if data_digest is None:
        data_digest = digest.dataset_digest(
            root, (("train", train), ("query", query), ("gallery", gallery)), files
        )
    return DatasetSplits(
        name, root, train, query, gallery, len(skipped), tuple(skipped), data_digest
    )


# --------------------------------------------------------------------------- Market layout


def _read_split_dir(
    folder: str, pattern: re.Pattern[str], example: str, mask_dir: str | None
) -> list[Sample]:
    """All images of one split folder, sorted by file name; pid −1 dropped."""
    if not os.path.isdir(folder):
        raise FTNError(
            f"split folder {folder}/ is missing (expected bounding_box_train/, "
            f"query/ and bounding_box_test/ side by side)"
        )
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS))
    if not names:
        raise FTNError(f"split folder {folder}/ contains no .jpg/.png images")
    samples = []
    for fname in names:
        match = pattern.match(fname)
        if match is None:
            raise FTNError(
                f"cannot parse file name {os.path.join(folder, fname)}: "
                f"expected names like {example}"
            )
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid == -1:
            continue  # junk detections (Market-1501 protocol)
        if cam < 1:
            raise FTNError(
                f"cannot parse file name {os.path.join(folder, fname)}: camera numbers start at c1"
            )
        mask_path = None
        if mask_dir is not None:
            mask_path = os.path.join(mask_dir, os.path.splitext(fname)[0] + ".png")
            if not os.path.isfile(mask_path):
                raise FTNError(
                    f"mask {mask_path} is missing for image {os.path.join(folder, fname)}"
                )
        samples.append(Sample(os.path.join(folder, fname), pid, cam - 1, mask_path))
    return samples


def read_market_layout(
    dataset_dir: str,
    name: str,
    pattern: re.Pattern[str] = GENERIC_PATTERN,
    example: str = "0002_c1s1_000451_03.jpg",
    mask_root: str | None = None,
    skip_bad_images: bool = False,
    verify_images: bool = True,
    split_dirs: dict[str, str] | None = None,
    data_digest: str | None = None,
) -> DatasetSplits:
    """Read ``dataset_dir/{bounding_box_train,query,bounding_box_test}`` (Market-1501 layout).

    ``mask_root``: if given, each image ``<split dir>/<stem>.<ext>`` has a foreground mask
    ``<mask_root>/<split dir>/<stem>.png`` (the synthetic benchmark writes these).
    """
    splits = {}
    for split, sub in (split_dirs or SPLIT_DIRS).items():
        mask_dir = os.path.join(mask_root, sub) if mask_root is not None else None
        splits[split] = _read_split_dir(os.path.join(dataset_dir, sub), pattern, example, mask_dir)
        if not splits[split]:
            raise FTNError(
                f"split folder {os.path.join(dataset_dir, sub)}/ has only pid -1 (junk) images"
            )
    return finish_splits(
        name,
        dataset_dir,
        splits["train"],
        splits["query"],
        splits["gallery"],
        skip_bad_images,
        verify_images,
        data_digest,
    )


# --------------------------------------------------------------------------- finding roots


def _find(root: str, candidates: tuple[str, ...], is_dataset, name: str, needs: str) -> str:
    if not os.path.isdir(root):
        raise FTNError(f"--root {root} does not exist or is not a folder")
    tried = []
    for rel in candidates:
        path = os.path.normpath(os.path.join(root, rel))
        tried.append(path)
        if os.path.isdir(path) and is_dataset(path):
            return path
    raise FTNError(
        f"{name} not found under --root {root}: looked for {', '.join(tried)} "
        f"(each should contain {needs}); point --root at the folder that holds it"
    )


def _has_any_split(path: str) -> bool:
    return any(os.path.isdir(os.path.join(path, sub)) for sub in SPLIT_DIRS.values())


# --------------------------------------------------------------------------- MSMT17


def _read_msmt_list(list_path: str, image_dir: str) -> list[Sample]:
    """``<pid dir>/<name> <pid>`` lines → samples (camera = third ``_`` field of the name). A list
    file saved with a byte-order mark or Windows line ends (a Windows editor) reads the same."""
    samples = []
    with open(list_path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            match = MSMT_NAME.match(os.path.basename(parts[0])) if len(parts) == 2 else None
            if match is None or not parts[1].lstrip("-").isdigit():
                raise FTNError(
                    f"cannot parse line {lineno} of {list_path}: {line.strip()!r} "
                    f"(expected e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0')"
                )
            cam = int(match.group(1))
            if cam < 1:
                raise FTNError(f"cannot parse line {lineno} of {list_path}: camera must be ≥ 1")
            path = os.path.join(image_dir, parts[0])  # a missing file fails verification
            pid = int(parts[1])
            if pid != -1:
                samples.append(Sample(path, pid, cam - 1))
    if not samples:
        raise FTNError(f"list file {list_path} lists no images")
    return samples


def read_msmt17(
    dataset_dir: str, skip_bad_images: bool = False, verify_images: bool = True
) -> DatasetSplits:
    """MSMT17 V1 (``train/``, ``test/``) or V2 (``mask_train_v2/``, ``mask_test_v2/``).

    ``list_val.txt`` images (same identities as train) are merged into train, as is common.
    """
    for lst in _MSMT_LISTS:
        if not os.path.isfile(os.path.join(dataset_dir, lst)):
            raise FTNError(
                f"msmt17 at {dataset_dir}: list file {lst} is missing "
                f"(expected {', '.join(_MSMT_LISTS)})"
            )
    dirs = {}
    for kind, options in _MSMT_DIRS.items():
        found = [d for d in options if os.path.isdir(os.path.join(dataset_dir, d))]
        if not found:
            raise FTNError(
                f"msmt17 at {dataset_dir}: image folder missing (expected one of "
                f"{', '.join(d + '/' for d in options)})"
            )
        dirs[kind] = os.path.join(dataset_dir, found[0])
    train = _read_msmt_list(
        os.path.join(dataset_dir, "list_train.txt"), dirs["train"]
    ) + _read_msmt_list(os.path.join(dataset_dir, "list_val.txt"), dirs["train"])
    query = _read_msmt_list(os.path.join(dataset_dir, "list_query.txt"), dirs["test"])
    gallery = _read_msmt_list(os.path.join(dataset_dir, "list_gallery.txt"), dirs["test"])
    return finish_splits(
        "msmt17", dataset_dir, train, query, gallery, skip_bad_images, verify_images
    )


# --------------------------------------------------------------------------- entry point


def find_dataset_dir(name: str, root: str) -> str:
    """The folder of dataset ``name`` under ``root`` (tries the usual nestings in order)."""
    if name == "msmt17":
        return _find(
            root,
            _MSMT_CANDIDATES,
            lambda p: os.path.isfile(os.path.join(p, "list_train.txt")),
            "MSMT17 (V1 or V2)",
            "list_train.txt and train/ or mask_train_v2/",
        )
    layout = _LAYOUTS[name]
    return _find(
        root,
        layout.candidates,
        _has_any_split,
        layout.title,
        "bounding_box_train/, query/, bounding_box_test/",
    )


def read_known(
    name: str, root: str, skip_bad_images: bool = False, verify_images: bool = True
) -> DatasetSplits:
    """Read one of ``KNOWN_DATASETS`` found under ``root``; user errors raise ``FTNError``.
    (``ftn_core.data.loading.load_dataset`` also reads your own folder or CSV.)"""
    if name not in KNOWN_DATASETS:
        raise FTNError(
            f"unknown dataset '{name}' (known: {', '.join(KNOWN_DATASETS)}, folder, csv)"
        )
    dataset_dir = find_dataset_dir(name, root)
    if name == "msmt17":
        return read_msmt17(dataset_dir, skip_bad_images, verify_images)
    layout = _LAYOUTS[name]
    return read_market_layout(
        dataset_dir,
        name,
        layout.pattern,
        layout.example,
        skip_bad_images=skip_bad_images,
        verify_images=verify_images,
    )
