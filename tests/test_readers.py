"""Dataset readers on tiny fixture trees in each real layout."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest
from fixtures_layouts import (
    GALLERY,
    QUERY,
    TRAIN,
    corrupt_file,
    cuhk03np_name,
    duke_name,
    market_name,
    write_image,
    write_market_layout,
    write_msmt,
    write_split,
)

from ftn_core.data.loading import load_dataset
from ftn_core.data.readers import KNOWN_DATASETS, check_image, read_market_layout
from ftn_core.errors import FTNError


def pid_cams(samples):
    return sorted((s.pid, s.camid) for s in samples)


def test_market_counts_pids_camids_relabel(tmp_path):
    d = write_market_layout(
        tmp_path / "market1501" / "Market-1501-v15.09.15", TRAIN, QUERY, GALLERY
    )
    (d / "bounding_box_train" / "Thumbs.db").write_bytes(b"ignored")  # ships with Market-1501
    ds = load_dataset("market1501", str(tmp_path))
    assert ds.root == str(d)
    # train pids {2, 5, 7} → {0, 1, 2} in sorted order; cameras 0-based
    assert pid_cams(ds.train) == sorted([(2, 0), (0, 0), (0, 1), (1, 2), (2, 3), (0, 5)])
    assert ds.num_train_pids == 3 and ds.num_train_cams == 5
    # query keeps original pids
    assert pid_cams(ds.query) == [(2, 0), (7, 1)]
    # gallery: pid -1 dropped, pid 0 distractor kept
    assert pid_cams(ds.gallery) == [(0, 3), (2, 2), (7, 0)]
    assert ds.skipped == 0
    assert all(os.path.isfile(s.path) and s.mask_path is None for s in ds.train)
    # relabel is consistent per file: both pid-2 images with camera 1/2 map to label 0
    by_name = {os.path.basename(s.path)[:4]: s.pid for s in ds.train}
    assert by_name == {"0002": 0, "0005": 1, "0007": 2}


@pytest.mark.parametrize(
    "nesting", ["market1501/Market-1501-v15.09.15", "Market-1501-v15.09.15", "market1501", ""]
)
def test_market_nestings(tmp_path, nesting):
    d = write_market_layout(tmp_path / nesting, TRAIN, QUERY, GALLERY)
    ds = load_dataset("market1501", str(tmp_path), verify_images=False)
    assert os.path.normpath(ds.root) == os.path.normpath(d)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (6, 2, 3)


def test_duke(tmp_path):
    train = [(5, 2), (5, 8), (1, 1), (9, 3)]
    write_market_layout(
        tmp_path / "dukemtmc-reid" / "DukeMTMC-reID",
        train,
        [(5, 7)],
        [(5, 1), (9, 8)],
        namer=duke_name,
    )
    ds = load_dataset("dukemtmcreid", str(tmp_path))
    assert pid_cams(ds.train) == [(0, 0), (1, 1), (1, 7), (2, 2)]
    assert pid_cams(ds.query) == [(5, 6)]
    assert pid_cams(ds.gallery) == [(5, 0), (9, 7)]
    assert os.path.basename(ds.train[0].path).endswith(".jpg")


def test_cuhk03np_labeled_and_detected(tmp_path):
    base = tmp_path / "cuhk03-np"
    write_market_layout(
        base / "labeled",
        [(1, 1), (1, 2), (3, 1)],
        [(10, 1)],
        [(10, 2), (11, 2)],
        namer=cuhk03np_name,
    )
    write_market_layout(
        base / "detected", [(1, 1), (4, 2)], [(12, 2)], [(12, 1)], namer=cuhk03np_name
    )
    lab = load_dataset("cuhk03_labeled", str(tmp_path))
    det = load_dataset("cuhk03_detected", str(tmp_path))
    assert pid_cams(lab.train) == [(0, 0), (0, 1), (1, 0)]
    assert pid_cams(lab.gallery) == [(10, 1), (11, 1)]
    assert pid_cams(det.train) == [(0, 0), (1, 1)]
    assert pid_cams(det.query) == [(12, 1)]
    assert lab.train[0].path.endswith(".png")
    # --root may also point at cuhk03-np/ itself or at one of its variant folders
    for root in (base, base / "labeled", base / "detected"):
        found = load_dataset("cuhk03_labeled", str(root), verify_images=False).root
        assert found == str(base / "labeled")


@pytest.mark.parametrize("version,nesting", [(1, "MSMT17_V1"), (2, "msmt17/MSMT17_V2"), (1, "")])
def test_msmt17(tmp_path, version, nesting):
    train = [(0, 1), (0, 3), (4, 15)]
    val = [(4, 2), (2, 9)]
    query = [(0, 5), (1, 6)]
    gallery = [(0, 7), (1, 1), (1, 12)]
    d = write_msmt(tmp_path / nesting, version, train, val, query, gallery)
    ds = load_dataset("msmt17", str(tmp_path))
    assert os.path.normpath(ds.root) == os.path.normpath(d)
    # list_val merged into train; train pids {0, 2, 4} → {0, 1, 2}; camera from the name
    assert pid_cams(ds.train) == [(0, 0), (0, 2), (1, 8), (2, 1), (2, 14)]
    assert pid_cams(ds.query) == [(0, 4), (1, 5)]
    assert pid_cams(ds.gallery) == [(0, 6), (1, 0), (1, 11)]
    expect_dir = "train" if version == 1 else "mask_train_v2"
    assert all(f"{os.sep}{expect_dir}{os.sep}" in s.path for s in ds.train)


def test_read_market_layout_with_masks(tmp_path):
    d = write_market_layout(tmp_path / "syn", [(3, 1), (4, 2)], [(3, 2)], [(4, 1)])
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        for name in os.listdir(d / sub):
            write_image(tmp_path / "masks" / sub / (name[:-4] + ".png"))
    ds = read_market_layout(str(d), "synthetic", mask_root=str(tmp_path / "masks"))
    assert ds.name == "synthetic"
    assert [s.pid for s in ds.train] == [0, 1]
    s = ds.query[0]
    stem = os.path.basename(s.path)[:-4]
    assert s.mask_path == str(tmp_path / "masks" / "query" / (stem + ".png"))
    os.remove(s.mask_path)
    with pytest.raises(FTNError, match=r"mask .*query.*\.png is missing for image"):
        read_market_layout(str(d), "synthetic", mask_root=str(tmp_path / "masks"))


# --------------------------------------------------------------------------- errors


def test_unknown_dataset(tmp_path):
    assert "market1501" in KNOWN_DATASETS
    with pytest.raises(FTNError, match=r"unknown dataset 'viper' \(known: market1501, "):
        load_dataset("viper", str(tmp_path))


def test_missing_root(tmp_path):
    with pytest.raises(FTNError, match=r"--root .*nope does not exist"):
        load_dataset("market1501", str(tmp_path / "nope"))


def test_root_without_dataset_lists_layouts(tmp_path):
    with pytest.raises(FTNError) as err:
        load_dataset("market1501", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    assert "Market-1501 not found under --root" in msg
    assert str(tmp_path / "market1501" / "Market-1501-v15.09.15") in msg
    assert str(tmp_path / "Market-1501-v15.09.15") in msg
    assert "bounding_box_train/, query/, bounding_box_test/" in msg
    with pytest.raises(FTNError, match=r"MSMT17 \(V1 or V2\) not found .*MSMT17_V2"):
        load_dataset("msmt17", str(tmp_path))
    with pytest.raises(FTNError, match=r"CUHK03-NP detected not found .*cuhk03-np/detected"):
        load_dataset("cuhk03_detected", str(tmp_path))


def test_split_folder_missing(tmp_path):
    d = tmp_path / "Market-1501-v15.09.15"
    write_split(d / "bounding_box_train", TRAIN, market_name)
    write_split(d / "bounding_box_test", GALLERY, market_name)
    with pytest.raises(FTNError, match=r"split folder .*query/ is missing"):
        load_dataset("market1501", str(tmp_path))


def test_split_folder_empty(tmp_path):
    d = write_market_layout(tmp_path / "market1501", TRAIN, [], GALLERY)
    (d / "query" / "readme.txt").write_text("not an image")
    with pytest.raises(FTNError, match=r"split folder .*query/ contains no .jpg/.png images"):
        load_dataset("market1501", str(tmp_path))


def test_bad_file_name_is_named(tmp_path):
    d = write_market_layout(tmp_path / "market1501", TRAIN, QUERY, GALLERY)
    write_image(d / "query" / "person7.jpg")
    with pytest.raises(
        FTNError,
        match=r"cannot parse file name .*query/person7\.jpg: expected "
        r"names like 0002_c1s1_000451_03\.jpg",
    ):
        load_dataset("market1501", str(tmp_path))
    # a Duke name is not a Market name
    write_market_layout(tmp_path / "x" / "DukeMTMC-reID", TRAIN, QUERY, [(3, 1)])
    with pytest.raises(
        FTNError,
        match=r"cannot parse file name .*bounding_box_train/"
        r"0002_c1s1_000001_00\.jpg: expected names like "
        r"0005_c2_f0046985\.jpg",
    ):
        load_dataset("dukemtmcreid", str(tmp_path / "x"))


def test_camera_zero_rejected(tmp_path):
    write_market_layout(tmp_path / "market1501", TRAIN, [(2, 0)], GALLERY)
    with pytest.raises(FTNError, match=r"0002_c0s1_000000_00\.jpg: camera numbers start at c1"):
        load_dataset("market1501", str(tmp_path))


@pytest.mark.parametrize("how", ["garbage", "empty", "truncated", "corrupt_data"])
def test_corrupt_image_named_and_skippable(tmp_path, how):
    d = write_market_layout(tmp_path / "market1501", TRAIN, QUERY, GALLERY)
    bad = sorted((d / "bounding_box_test").glob("0007_*"))[0]
    corrupt_file(bad, how)
    with pytest.raises(FTNError, match=rf"cannot read image .*{bad.name}: .*--skip-bad-images"):
        load_dataset("market1501", str(tmp_path))
    ds = load_dataset("market1501", str(tmp_path), skip_bad_images=True)
    assert ds.skipped == 1 and ds.skipped_paths == (str(bad),)
    assert f"skipped  1 unreadable image(s), e.g. {bad}" in ds.summary()
    assert len(ds.gallery) == 2 and bad.name not in {os.path.basename(s.path) for s in ds.gallery}
    # without verification the reader does not open images at all
    assert len(load_dataset("market1501", str(tmp_path), verify_images=False).gallery) == 3


def test_skip_counts_across_splits(tmp_path):
    d = write_market_layout(tmp_path / "market1501", TRAIN, QUERY, GALLERY)
    victims = [sorted((d / "bounding_box_train").iterdir())[i] for i in (0, 3)]
    victims.append(sorted((d / "query").iterdir())[1])
    for v in victims:
        corrupt_file(v, "garbage")
    with pytest.raises(FTNError, match=r"\(and 1 more\)"):
        load_dataset("market1501", str(tmp_path))
    ds = load_dataset("market1501", str(tmp_path), skip_bad_images=True)
    assert ds.skipped == 3
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 1, 3)
    assert sorted(Counter(s.pid for s in ds.train)) == list(range(ds.num_train_pids))


def test_all_images_bad_in_a_split(tmp_path):
    d = write_market_layout(tmp_path / "market1501", TRAIN, QUERY, GALLERY)
    for p in (d / "query").iterdir():
        corrupt_file(p, "empty")
    with pytest.raises(FTNError, match=r"every query image is unreadable \(2 skipped\)"):
        load_dataset("market1501", str(tmp_path), skip_bad_images=True)


def test_msmt_errors(tmp_path):
    d = write_msmt(tmp_path / "MSMT17_V1", 1, [(0, 1)], [(0, 2)], [(0, 3)], [(0, 4)])
    (d / "list_query.txt").write_text("0000/0000_000_01_x.jpg 0\nbroken-line\n")
    with pytest.raises(FTNError, match=r"cannot parse line 2 of .*list_query\.txt: 'broken-line'"):
        load_dataset("msmt17", str(tmp_path))
    (d / "list_query.txt").write_text("0000/0000_000_01_0303morning_0001_0.jpg 0\n")
    with pytest.raises(FTNError, match=r"cannot read image .*0000_000_01_0303morning_0001_0\.jpg"):
        load_dataset("msmt17", str(tmp_path))
    os.remove(d / "list_gallery.txt")
    with pytest.raises(FTNError, match=r"list file list_gallery\.txt is missing"):
        load_dataset("msmt17", str(tmp_path))


def test_msmt_list_with_bom_and_crlf(tmp_path):
    """A list file re-saved by a Windows editor (byte-order mark, CRLF) gives the same samples."""
    d = write_msmt(
        tmp_path / "MSMT17_V1", 1, [(0, 1), (1, 2)], [(0, 2)], [(0, 3), (1, 1)], [(0, 4), (1, 2)]
    )
    plain = load_dataset("msmt17", str(tmp_path))
    for name in ("list_train.txt", "list_query.txt"):
        text = (d / name).read_text()
        (d / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    edited = load_dataset("msmt17", str(tmp_path))
    for split in ("train", "query", "gallery"):
        assert getattr(edited, split) == getattr(plain, split)
    assert [s.pid for s in edited.query] == [0, 1]


def test_msmt_image_folder_missing(tmp_path):
    d = write_msmt(tmp_path / "MSMT17_V2", 2, [(0, 1)], [(0, 2)], [(0, 3)], [(0, 4)])
    os.rename(d / "mask_test_v2", d / "elsewhere")
    with pytest.raises(
        FTNError,
        match=r"image folder missing \(expected one of test/, "
        r"mask_test_v2/",
    ):
        load_dataset("msmt17", str(tmp_path))


def test_check_image(tmp_path):
    for ext in ("jpg", "png"):
        good = tmp_path / f"good.{ext}"
        write_image(good, size=(32, 64))
        assert check_image(str(good))
        corrupt_file(good, "truncated")
        assert not check_image(str(good)), ext
    assert not check_image(str(tmp_path / "absent.jpg"))
    # Header and end marker intact, pixel data overwritten: PIL's verify() passes, decoding fails.
    bad = tmp_path / "bad_data.jpg"
    write_image(bad, size=(32, 64))
    corrupt_file(bad, "corrupt_data")
    from PIL import Image

    with Image.open(bad) as img:
        img.verify()
    assert not check_image(str(bad))


def test_check_image_knows_a_jpeg_by_its_bytes_not_its_name(tmp_path):
    """The decoder reads the content: a PNG named .jpg is a good image, truncated it is not."""
    png_as_jpg, jpg_as_png = tmp_path / "png.jpg", tmp_path / "jpg.png"
    write_image(tmp_path / "real.png", size=(32, 64))
    write_image(tmp_path / "real.jpg", size=(32, 64))
    png_as_jpg.write_bytes((tmp_path / "real.png").read_bytes())
    jpg_as_png.write_bytes((tmp_path / "real.jpg").read_bytes())
    assert check_image(str(png_as_jpg)) and check_image(str(jpg_as_png))
    for path in (png_as_jpg, jpg_as_png):
        corrupt_file(path, "truncated")
        assert not check_image(str(path)), path.name


def test_split_with_only_junk(tmp_path):
    write_market_layout(tmp_path / "market1501", TRAIN, [(-1, 1), (-1, 2)], GALLERY)
    with pytest.raises(FTNError, match=r"split folder .*query/ has only pid -1 \(junk\) images"):
        load_dataset("market1501", str(tmp_path))


# --------------------------------------------------------------------------- your own data


@pytest.mark.parametrize("names", ["market", "short"])
def test_folder_dataset_in_either_folder_naming(tmp_path, names):
    d = write_market_layout(tmp_path / "mine", TRAIN, QUERY, GALLERY)
    if names == "short":
        (d / "bounding_box_train").rename(d / "train")
        (d / "bounding_box_test").rename(d / "gallery")
    ds = load_dataset("folder", str(d))
    assert ds.name == "folder" and ds.num_train_pids == 3
    assert pid_cams(ds.query) == [(2, 0), (7, 1)] and pid_cams(ds.gallery) == [
        (0, 3),
        (2, 2),
        (7, 0),
    ]


def test_folder_dataset_errors_are_one_line(tmp_path):
    with pytest.raises(FTNError, match="not a folder"):
        load_dataset("folder", str(tmp_path / "absent"))
    (tmp_path / "x" / "train").mkdir(parents=True)
    with pytest.raises(FTNError, match=r"expected train/, query/ and gallery/"):
        load_dataset("folder", str(tmp_path / "x"))


def _csv_tree(
    tmp_path, rows: list[str], header: str = "path,pid,camid,split", encoding: str = "utf-8"
) -> str:
    for i in range(6):
        write_image(tmp_path / "img" / f"{i}.jpg", size=(16, 32), seed=i)
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding=encoding)
    return str(path)


GOOD_ROWS = [
    "img/0.jpg,1,0,train",
    "img/1.jpg,1,1,train",
    "img/2.jpg,4,0,train",
    "img/3.jpg,1,0,query",
    "img/4.jpg,1,1,gallery",
    "img/5.jpg,-1,1,gallery",
]


def test_csv_dataset_reads_paths_pids_cameras_and_splits(tmp_path):
    ds = load_dataset("csv", _csv_tree(tmp_path, GOOD_ROWS))
    assert [os.path.basename(s.path) for s in ds.train] == ["0.jpg", "1.jpg", "2.jpg"]
    assert pid_cams(ds.train) == [(0, 0), (0, 1), (1, 0)]  # pids relabelled, cameras as given
    assert pid_cams(ds.query) == [(1, 0)] and pid_cams(ds.gallery) == [
        (1, 1)
    ]  # pid -1: junk, dropped


@pytest.mark.parametrize(
    "rows,header,message",
    [
        (GOOD_ROWS, "path,pid,split", r"missing column\(s\) camid"),
        (
            GOOD_ROWS + ["img/0.jpg,1,0,val"],
            None,
            r"line 8: split 'val' is not one of train, query, gallery",
        ),
        (GOOD_ROWS + ["img/9.jpg,1,0,train"], None, r"line 8: image .*img/9.jpg does not exist"),
        (GOOD_ROWS + ["img/0.jpg,abc,0,train"], None, r"line 8: pid 'abc' is not an integer"),
        (GOOD_ROWS[:3], None, r"no query rows"),
        (GOOD_ROWS + [",1,0,train"], None, r"line 8: the path is empty"),
        # The same image twice is an error, whatever its pid, camera or split, however spelt.
        (
            GOOD_ROWS + ["img/1.jpg,1,1,train"],
            None,
            r"data.csv line 8: image img/1\.jpg is already listed on line 3; list each image once$",
        ),
        (
            GOOD_ROWS + ["img/./0.jpg,7,2,gallery"],
            None,
            r"line 8: image img/\./0\.jpg is already listed on line 2;",
        ),
        (
            GOOD_ROWS + ["img/5.jpg,3,0,query"],
            None,
            r"line 8: image img/5\.jpg is already listed on line 7;",
        ),
        # A blank line is still a line of the file.
        (
            GOOD_ROWS[:3] + ["", "img/2.jpg,4,0,query"],
            None,
            r"line 6: image img/2\.jpg is already listed on line 4;",
        ),
    ],
)
def test_csv_dataset_errors_name_the_row(tmp_path, rows, header, message):
    path = _csv_tree(tmp_path, rows, header or "path,pid,camid,split")
    with pytest.raises(FTNError, match=message):
        load_dataset("csv", path)


def test_csv_dataset_duplicate_given_by_absolute_path(tmp_path):
    path = _csv_tree(tmp_path, GOOD_ROWS + [f"{tmp_path / 'img' / '3.jpg'},1,0,gallery"])
    with pytest.raises(FTNError, match=r"line 8: image .*img/3\.jpg is already listed on line 5;"):
        load_dataset("csv", path)


def test_csv_dataset_saved_with_a_byte_order_mark(tmp_path):
    """A spreadsheet's "CSV UTF-8" starts with a BOM: still the header path,pid,camid,split."""
    ds = load_dataset("csv", _csv_tree(tmp_path, GOOD_ROWS, encoding="utf-8-sig"))
    assert (tmp_path / "data.csv").read_bytes().startswith(b"\xef\xbb\xbfpath,")
    assert len(ds.train) == 3 and len(ds.query) == 1 and len(ds.gallery) == 1


def test_csv_dataset_root_is_a_folder(tmp_path):
    _csv_tree(tmp_path, GOOD_ROWS)
    example = re.escape(f"(e.g. --root {tmp_path / 'data.csv'})")
    with pytest.raises(
        FTNError,
        match=rf"--root .*: is a folder; --dataset csv needs the CSV file "
        rf"itself {example}$",
    ):
        load_dataset("csv", str(tmp_path))
    with pytest.raises(FTNError, match=r"is a folder; --dataset csv needs the CSV file itself$"):
        load_dataset("csv", str(tmp_path / "img"))  # no CSV in it: no example
