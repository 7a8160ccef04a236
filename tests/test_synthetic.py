"""The embedded synthetic benchmark: layout, masks, determinism, atomicity, the bias knob."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ftn_core.data import synthetic as S
from ftn_core.data import synthetic_checks as C
from ftn_core.data import synthetic_draw as sd
from ftn_core.data.readers import MARKET_PATTERN
from ftn_core.errors import FTNError

STRICT = re.compile(r"^(\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SPLITS = (S.TRAIN, S.QUERY, S.GALLERY)
TINY = S.SIZES["tiny"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return S.generate(str(tmp_path_factory.mktemp("syn")), "tiny", seed=0, progress=False)


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


def _by_split(path: str) -> dict[str, list[tuple[int, int]]]:
    """(pid, 1-based camera) of every image, per split, parsed from the strict Market name."""
    out = {}
    for split in SPLITS:
        names = sorted(os.listdir(os.path.join(path, split)))
        parsed = [STRICT.match(n) for n in names]
        assert all(parsed), [n for n, m in zip(names, parsed) if m is None]
        assert all(MARKET_PATTERN.match(n) for n in names)
        out[split] = [(int(m.group(1)), int(m.group(2))) for m in parsed]
    return out


def test_layout_and_counts(tiny):
    assert os.path.basename(tiny) == "synthetic_tiny_s0"
    items = _by_split(tiny)
    meta = json.loads(Path(tiny, S.MARKER).read_text())
    assert meta["counts"] == {s: len(items[s]) for s in SPLITS}
    train_ids = Counter(p for p, _ in items[S.TRAIN])
    assert len(train_ids) == TINY.train_ids and min(train_ids) >= 1
    assert all(TINY.train_images[0] <= n <= TINY.train_images[1] for n in train_ids.values())
    q_cams, g_cams = defaultdict(Counter), defaultdict(Counter)
    for p, c in items[S.QUERY]:
        q_cams[p][c] += 1
    for p, c in items[S.GALLERY]:
        g_cams[p][c] += 1
    assert len(q_cams) == TINY.test_ids and 0 not in q_cams
    assert sum(g_cams.pop(0).values()) == TINY.distractors  # pid 0 only in the gallery
    assert set(q_cams) == set(g_cams)
    for p in q_cams:  # one query per camera, gallery images in the same cameras
        assert set(q_cams[p]) == set(g_cams[p])
        assert TINY.test_cams[0] <= len(q_cams[p]) <= TINY.test_cams[1]
        assert all(n == TINY.query_per_cam for n in q_cams[p].values())
        assert all(
            TINY.gallery_per_cam[0] <= n <= TINY.gallery_per_cam[1] for n in g_cams[p].values()
        )
    assert set(train_ids).isdisjoint(q_cams)
    cams = {c for s in SPLITS for _, c in items[s]}
    assert cams <= set(range(1, TINY.num_cams + 1))
    names = [n for s in SPLITS for n in os.listdir(os.path.join(tiny, s))]
    assert len(set(names)) == len(names)
    img = Image.open(os.path.join(tiny, S.TRAIN, names[0]))
    assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (TINY.width, TINY.height))
    assert not [p for p in Path(tiny).parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_masks_match_images(tiny):
    for split in SPLITS:
        for name in sorted(os.listdir(os.path.join(tiny, split))):
            mask = Image.open(os.path.join(tiny, "masks", split, name[:-4] + ".png"))
            assert mask.mode == "L" and mask.size == (TINY.width, TINY.height)
            m = np.asarray(mask)
            assert set(np.unique(m)) == {0, 255}  # binary, non-empty and not full
            if name.startswith("0000"):
                continue  # distractors are off-centre crops
            share = (m > 0).mean()
            assert 0.08 < share < 0.6, (name, share)
            cols = np.nonzero((m > 0).any(axis=0))[0]
            centre = (cols[0] + cols[-1]) / 2  # the person stands near the middle
            assert abs(centre - TINY.width / 2) < 0.3 * TINY.width, name


def test_deterministic_whatever_the_workers(tiny, tmp_path):
    again = S.generate(str(tmp_path / "a"), "tiny", seed=0, workers=2, progress=False)
    assert _files(again) == _files(tiny)
    other = _files(S.generate(str(tmp_path / "b"), "tiny", seed=1, progress=False))
    ref = _files(tiny)
    assert sum(ref.get(k) == v for k, v in other.items() if k.endswith(".jpg")) == 0


def test_existing_copy_returned_at_once(tiny):
    marker = Path(tiny, S.MARKER)
    before = marker.stat().st_mtime_ns
    assert S.generate(str(Path(tiny).parent), "tiny", seed=0) == tiny
    assert marker.stat().st_mtime_ns == before


def test_copy_with_other_parameters_is_regenerated(tmp_path):
    path = Path(S.generate(str(tmp_path), "tiny", progress=False))
    meta = json.loads((path / S.MARKER).read_text())
    good = json.dumps(meta)
    meta["params"]["generator_version"] = 0  # a copy of an older generator
    (path / S.MARKER).write_text(json.dumps(meta))
    assert S.generate(str(tmp_path), "tiny", progress=False) == str(path)
    assert json.dumps(json.loads((path / S.MARKER).read_text())) == good


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_generation(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    stale = root / f".synthetic_tiny_s0.tmp-{_dead_pid()}-dead"
    live = root / f".synthetic_tiny_s0.tmp-{os.getpid()}-live"
    for d in (stale, live):
        (d / S.TRAIN).mkdir(parents=True)
    half = root / "synthetic_tiny_s0"  # a final folder without the marker is not complete
    (half / S.TRAIN).mkdir(parents=True)
    (half / S.TRAIN / "junk.jpg").write_bytes(b"x")

    calls = {"n": 0}
    real = sd.render_image

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt  # as if killed
        return real(*args, **kwargs)

    monkeypatch.setattr(sd, "render_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        S.generate(str(root), "tiny", progress=False)
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, half.name])
    assert not stale.exists() and live.exists()  # a running generation's folder is left alone
    assert (half / S.TRAIN / "junk.jpg").exists()  # the failed run changed nothing

    monkeypatch.setattr(sd, "render_image", real)
    path = S.generate(str(root), "tiny", progress=False)
    assert path == str(half) and (half / S.MARKER).exists()
    assert not (half / S.TRAIN / "junk.jpg").exists()
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, half.name])


def test_bias_knob_changes_train_correlation():
    def stats(bias):
        shots, _ = S.plan(S.get_spec("default", bias), seed=0)
        rows = [{"split": s.split, "pid": s.pid, "cam": s.cam, "obj": s.obj} for s in shots]
        return C.bias_stats(rows), shots

    s0, shots0 = stats(0.0)
    s5, _ = stats(0.5)
    s1, shots1 = stats(1.0)
    assert s1["cam_top_share"] == 1.0 and s1["obj_top_share"] == 1.0
    # bias 0: what a uniform draw of the same per-identity counts gives (simulated)
    rng = np.random.default_rng(0)
    n_per_id = Counter(s.pid for s in shots0 if s.split == S.TRAIN).values()
    uniform = np.mean(
        [
            np.sort(np.bincount(rng.integers(6, size=n), minlength=6))[-2:].sum() / n
            for n in n_per_id
            for _ in range(20)
        ]
    )
    assert abs(s0["cam_top_share"] - uniform) < 0.03
    assert s0["cam_top_share"] < s5["cam_top_share"] - 0.1 < s1["cam_top_share"] - 0.2
    assert s0["obj_top_share"] < 0.5 < s5["obj_top_share"] < 0.9
    # test images never depend on the bias: same identities, cameras and scenes
    assert [s for s in shots0 if s.split != S.TRAIN] == [s for s in shots1 if s.split != S.TRAIN]


def test_background_is_a_train_only_shortcut(tiny):
    splits = S.load_synthetic(str(Path(tiny).parent), "tiny", seed=0)
    bg = C.shortcut_rank1(splits, "background")
    fg = C.shortcut_rank1(splits, "person")
    chance = 1 / TINY.train_ids
    assert bg["train"] > 5 * chance and bg["test"] < 0.5 * bg["train"]
    assert fg["test"] > 2 * bg["test"] + 0.2  # the person, not the scene, identifies at test


def test_load_synthetic(tiny):
    splits = S.load_synthetic(str(Path(tiny).parent), "tiny", seed=0)
    assert splits.name == "synthetic_tiny"
    assert sorted({s.pid for s in splits.train}) == list(range(TINY.train_ids))
    everything = splits.train + splits.query + splits.gallery
    assert all(s.mask_path and os.path.isfile(s.mask_path) for s in everything)
    assert all(Path(s.mask_path).stem == Path(s.path).stem for s in everything)
    assert {s.camid for s in everything} <= set(range(TINY.num_cams))
    train_orig = {int(Path(s.path).name[:4]) for s in splits.train}
    assert train_orig.isdisjoint({s.pid for s in splits.query + splits.gallery})
    assert {s.pid for s in splits.query} <= {s.pid for s in splits.gallery}


def test_identities_are_fine_grained():
    ids = sd.sample_identities(np.random.default_rng(0), 250, min_diff=3)
    codes = np.array([i.codes() for i in ids])
    diff = (codes[:, None] != codes[None]).sum(-1) + 99 * np.eye(len(ids), dtype=int)
    assert diff.min() >= 3
    for k in (0, 1, 4, 9, 10, 11):  # skin, hair, upper, lower, lower style, shoes
        assert np.bincount(codes[:, k]).min() >= 10  # every value shared by many identities


def test_names_and_errors(tmp_path):
    assert S.dataset_name("tiny", 3) == "synthetic_tiny_s3"
    assert S.dataset_name("tiny", 3, TINY.bias) == "synthetic_tiny_s3"
    assert S.dataset_name("tiny", 3, 1) == "synthetic_tiny_s3_b1"
    with pytest.raises(FTNError, match="unknown synthetic size 'huge'"):
        S.generate(str(tmp_path), "huge")
    with pytest.raises(FTNError, match="outside 0..1"):
        S.generate(str(tmp_path), "tiny", bias=1.5)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FTNError, match="is a file, not a folder"):
        S.generate(str(blocker), "tiny")
    with pytest.raises(FTNError, match="cannot write the synthetic benchmark"):
        S.generate(str(blocker / "sub"), "tiny")


def test_command_line(tiny, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert S.main(["--root", str(Path(tiny).parent), "--size", "tiny", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert tiny in out and "train" in out and "top-2 cameras" in out
    picture = Image.open(grid)
    assert picture.size == (4 * 2 * TINY.width + 3 * 6, 4 * TINY.height + 3 * 4)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert S.main(["--root", str(blocker), "--size", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --root") and err.count("\n") == 1


def test_help_names_the_invoked_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ftn-synthetic", "--help"])
    assert S.main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: ftn-synthetic [-h]")


def test_disk_error_is_one_line(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "x.jpg")

    monkeypatch.setattr(S, "_render", full_disk)
    with pytest.raises(FTNError, match="No space left on device"):
        S.generate(str(tmp_path), "tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_generations_agree(tmp_path):
    """Two processes (e.g. DDP ranks) generating at once: one copy, no temp folders left."""
    code = (
        "import sys; from ftn_core.data.synthetic import generate; "
        "print(generate(sys.argv[1], 'tiny', progress=False))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "synthetic_tiny_s0")
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic_tiny_s0"]
    assert (tmp_path / "synthetic_tiny_s0" / S.MARKER).exists()


def test_a_grown_test_split_leaves_training_byte_identical(tiny, tmp_path):
    grown = S.generate(str(tmp_path), "tiny", seed=0, test_ids=3 * TINY.test_ids, progress=False)
    assert Path(grown).name == f"synthetic_tiny_s0_t{3 * TINY.test_ids}"
    ref, new = _files(tiny), _files(grown)
    # Every file of the size's own benchmark is there, byte for byte: training and test alike.
    kept = {k for k in ref if k.endswith((".jpg", ".png"))}
    assert {k: new.get(k) for k in kept} == {k: ref[k] for k in kept}
    assert {k for k in new if k.startswith(S.TRAIN)} == {k for k in ref if k.startswith(S.TRAIN)}
    # The test split has three times the identities, with new pids, and keeps the protocol.
    ids = _by_split(grown)
    test_pids = {p for p, _ in ids[S.QUERY]}
    assert len(test_pids) == 3 * TINY.test_ids
    assert (
        min(test_pids - {p for p, _ in _by_split(tiny)[S.QUERY]}) > TINY.train_ids + TINY.test_ids
    )
    gallery = defaultdict(set)
    for pid, cam in ids[S.GALLERY]:
        gallery[pid].add(cam)
    assert all(gallery[pid] - {cam} for pid, cam in ids[S.QUERY])  # a cross-camera match each
    assert Counter(p for p, _ in ids[S.GALLERY])[0] == 3 * TINY.distractors  # in proportion
    # The added test images stand at the size's shared test scenes as often as its own do.
    rows = [r for r in S.read_scenes(grown) if r["split"] != S.TRAIN and r["pid"] != 0]
    shared = Counter(
        (r["cam"], r["spot"] // 5) for r in rows if r["pid"] <= TINY.train_ids + TINY.test_ids
    )
    top = {key for key, _ in shared.most_common(TINY.num_cams * TINY.test_scenes)}
    added = [r for r in rows if r["pid"] > TINY.train_ids + TINY.test_ids]
    assert sum((r["cam"], r["spot"] // 5) in top for r in added) / len(added) > 0.5
    # Its digest is its own; the size's own benchmark keeps the digest it had.
    assert S.settings_digest("tiny", 0, test_ids=3 * TINY.test_ids) != S.settings_digest("tiny", 0)
    assert S.settings_digest("tiny", 0, test_ids=TINY.test_ids) == S.settings_digest("tiny", 0)
    with pytest.raises(FTNError, match="only grows; give 0 or at least 8"):
        S.generate(str(tmp_path), "tiny", test_ids=TINY.test_ids - 1)
