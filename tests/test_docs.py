"""The front page and the docs: every link and named file exists, nothing points outside the
repository, and the commands the front page shows are accepted by the commands themselves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
NAMED_FILE = re.compile(
    r"`((?:ablations|ftn_core|reports|tests|benchmarks|docs|\.ci)/[\w./-]+"
    r"\.(?:py|md|csv|toml|sh|png|txt|yml))`"
)


def slug(heading: str) -> str:
    """The anchor a code host gives a Markdown heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = heading.strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


def test_slug_follows_the_code_hosts_rule():
    assert (
        slug(" Departures, and the measurements that decided them")
        == "departures-and-the-measurements-that-decided-them"
    )
    assert slug("Efficiency (paper §4.2)") == "efficiency-paper-42"
    assert slug("On a GPU") == "on-a-gpu"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_exists(doc):
    bad = []
    for target in links(doc):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if REPO not in dest.parents and dest != REPO:
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not bad, f"{doc.relative_to(REPO)}: " + "; ".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_the_docs_name_exists(doc):
    named = set(NAMED_FILE.findall(doc.read_text(encoding="utf-8")))
    missing = sorted(n for n in named if "<" not in n and not (REPO / n).exists())
    assert not missing, f"{doc.relative_to(REPO)} names files that do not exist: {missing}"


SKIP = {".venv", ".git", "data", "out", "mlruns"}


def tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the venv
        names = [
            str(p.relative_to(REPO))
            for p in REPO.rglob("*")
            if p.is_file() and not SKIP & set(p.relative_to(REPO).parts)
        ]
    keep = {".py", ".md", ".toml", ".cff", ".yml", ".yaml", ".sh", ".txt", ".cfg", ""}
    return [REPO / n for n in names if Path(n).suffix in keep and (REPO / n).is_file()]


def test_nothing_points_outside_the_repository():
    # The patterns are assembled so that this file does not match itself.
    outside = re.compile(r"\.\./" + "shared" + r"|\b" + "DES" + r"IGN\b")
    tracker = re.compile(r"\b" + "issue" + r"s?\s*#?\s*\d+", re.I)
    hits = []
    for path in tracked_text_files():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, 1):
            if outside.search(line) or tracker.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:80]}")
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def front_page_commands() -> list[list[str]]:
    """The shell lines of the README's code blocks, continuation lines joined, comments cut."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line.split())
    return out


# Runs each Python command of the front page up to its argument parsing, in one process: the
# suite's parser raises Parsed once the arguments are accepted, so nothing is trained or written.
DRIVER = r"""
import json, runpy, sys
from ftn_core import errors

class Parsed(BaseException):
    pass

original = errors.OneLineParser.parse_args
def parse_and_stop(self, *args, **kwargs):
    original(self, *args, **kwargs)
    raise Parsed
errors.OneLineParser.parse_args = parse_and_stop

results = []
for argv in json.loads(sys.argv[1]):
    sys.argv = list(argv)
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
        results.append([argv, "ran to the end without parsing arguments"])
    except Parsed:
        results.append([argv, "ok"])
    except SystemExit as exit_:
        results.append([argv, "ok" if exit_.code in (0, None) else f"exit {exit_.code}"])
print(json.dumps(results))
"""


def test_the_front_pages_commands_parse():
    commands = front_page_commands()
    python, make = [], []
    for argv in commands:
        if argv[0] == "make":
            make.append(argv[1])
        elif Path(argv[0]).name.startswith("python"):
            python.append(argv[1:])
    assert len(python) >= 4 and {"demo", "test"} <= set(make), commands
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    assert set(make) <= targets, f"not in the Makefile: {set(make) - targets}"
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(python)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [f"{' '.join(argv)}: {what}" for argv, what in results if what != "ok"]
    assert not bad and len(results) == len(python), "\n".join(bad) + proc.stderr[-1000:]


def test_the_driver_catches_a_bad_command(tmp_path):
    # The same driver refuses an option the command does not have (so the test above can fail).
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            json.dumps([["ablations/run.py", "--table", "2", "--no-such-option"]]),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results[0][1] == "exit 2", results


def test_the_demo_writes_only_where_git_ignores():
    # `make demo` trains into the default store and data folder and writes its report to the
    # folder its recipe names: all of them must be ignored, so the checkout stays clean.
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    out = re.search(r"reports/build\.py .*--out (\S+)", recipe).group(1)
    written = [
        "mlruns/mlflow.db",
        "mlruns/artifacts/1/x/model.pt",
        "mlruns/checkpoints/x.pt",
        "data/synthetic_default_s0/query/x.jpg",
        f"{out}/table2/README.md",
    ]
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "--no-index", *written],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except OSError:
        pytest.skip("git is not installed")
    if proc.returncode == 128:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    ignored = proc.stdout.split()
    assert sorted(ignored) == sorted(written), f"not ignored by git: {set(written) - set(ignored)}"
    assert "reports/build.py --table 2 --out" in recipe and not out.startswith("reports")
