"""What a run saw: one digest of a dataset as read, so that a result is tied to its data.

The digest covers every image of every split in the order read: its path relative to the
dataset folder, its identity and camera as read (train pids relabelled), and its content (size
and a BLAKE2b hash of the bytes). Adding, removing, renaming, relabelling or editing one image
changes it; moving the whole dataset to another folder does not.

Hashing reads every byte, so each file's hash (and whether it decodes) is cached by path, size
and modification time in ``$FTN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ftn`` or ``~/.cache/ftn``),
one JSON file per dataset folder: a second read of a Market-1501-sized dataset hashes and
decodes nothing that did not change. An unwritable cache folder only means no cache.
The embedded synthetic benchmark's digest is fixed by its generator settings
(``ftn_core.data.synthetic.settings_digest``), so it is known before the data exists; its files
are hashed all the same (``tree_digest``), when generated and at every read, and a copy whose
files no longer match what the generator wrote is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DIGEST_CHARS = 16
CACHE_VERSION = 1
SETTLED_NS = 2_000_000_000
"""A file modified less than this long ago is not cached: a second write within the file
system's timestamp granularity could keep its size and mtime (git's "racily clean" case)."""
_READ_ONLY = contextvars.ContextVar("ftn_digest_cache_read_only", default=False)


@dataclass(frozen=True)
class FileState:
    """One image file as last seen: its size and mtime (the cache key), its content hash and
    whether it decoded (None: not checked)."""

    size: int
    mtime_ns: int
    blake2b: str
    readable: bool | None = None


def cache_dir() -> Path:
    if os.environ.get("FTN_CACHE_DIR"):
        return Path(os.environ["FTN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ftn"


@contextlib.contextmanager
def read_only_cache() -> Iterator[None]:
    """Inside the block the cache is read but never written (``--dry-run`` creates nothing)."""
    token = _READ_ONLY.set(True)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


def _cache_file(root: str) -> Path:
    key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:DIGEST_CHARS]
    return cache_dir() / "files" / f"{key}.json"


def _load_cache(root: str) -> dict[str, FileState]:
    try:
        data = json.loads(_cache_file(root).read_text(encoding="utf-8"))
        if data.get("version") != CACHE_VERSION or data.get("root") != os.path.abspath(root):
            return {}
        return {rel: FileState(*fields) for rel, fields in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_cache(root: str, files: dict[str, FileState]) -> None:
    """Write the cache atomically (temporary file renamed into place); never an error."""
    if _READ_ONLY.get():
        return
    path = _cache_file(root)
    payload = {
        "version": CACHE_VERSION,
        "root": os.path.abspath(root),
        "files": {
            rel: [s.size, s.mtime_ns, s.blake2b, s.readable] for rel, s in sorted(files.items())
        },
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError:  # an unwritable cache folder: no cache
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _hash_file(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan(
    paths: Iterable[str], root: str, check: Callable[[str], bool] | None = None
) -> dict[str, FileState]:
    """``{path: FileState}`` of every file in ``paths`` (a missing file is left out); with
    ``check`` (a decode test), each file's ``readable`` too. Unchanged files come from the cache
    and are neither hashed nor decoded again; the cache is updated when anything was new."""
    cached = _load_cache(root)
    out: dict[str, FileState] = {}
    changed = False
    for path in paths:
        rel = os.path.relpath(path, root)
        try:
            st = os.stat(path)
        except OSError:
            continue
        old = cached.get(rel)
        state = (
            old
            if old is not None and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns)
            else None
        )
        if state is None:
            try:
                state = FileState(st.st_size, st.st_mtime_ns, _hash_file(path))
            except OSError:
                continue
        if check is not None and state.readable is None:
            state = FileState(state.size, state.mtime_ns, state.blake2b, check(path))
        if state != old and time.time_ns() - st.st_mtime_ns > SETTLED_NS:
            cached[rel] = state
            changed = True
        out[path] = state
    if changed:
        _save_cache(root, cached)
    return out


def dataset_digest(
    root: str, splits: Iterable[tuple[str, Iterable]], files: dict[str, FileState]
) -> str:
    """The digest of ``(split name, samples)`` pairs: every sample's path relative to ``root``,
    pid, camera and content (``files``, from :func:`scan`), in the order read."""
    h = hashlib.sha256()
    for split, samples in splits:
        for s in samples:
            state = files.get(s.path)
            content = f"{state.size}:{state.blake2b}" if state is not None else "missing"
            h.update(
                f"{split}\t{os.path.relpath(s.path, root)}\t{s.pid}\t{s.camid}\t{content}\n".encode()
            )
    return h.hexdigest()[:DIGEST_CHARS]


def tree_digest(folder: str, subdirs: Iterable[str]) -> tuple[str, int]:
    """(digest, files) of every file under ``folder``'s ``subdirs``: each one's path relative to
    ``folder``, size and content hash, in sorted order (unchanged files come from the cache)."""
    paths = sorted(
        os.path.join(dirpath, name)
        for sub in subdirs
        for dirpath, _, names in os.walk(os.path.join(folder, sub))
        for name in names
    )
    files = scan(paths, folder)
    h = hashlib.sha256()
    for path in paths:
        state = files.get(path)
        content = f"{state.size}:{state.blake2b}" if state is not None else "missing"
        h.update(f"{os.path.relpath(path, folder)}\t{content}\n".encode())
    return h.hexdigest()[:DIGEST_CHARS], len(paths)


def settings_digest(params: dict) -> str:
    """The digest of generated data, from the settings that determine every pixel."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(f"generated\t{text}".encode()).hexdigest()[:DIGEST_CHARS]
