"""Installing: the ranges pyproject.toml declares, the exact set .ci/constraints.txt pins, and the
Makefile that installs through it (CI's .ci/run installs only through `make test`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / ".ci" / "constraints.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
UPPER = {"<", "<=", "==", "===", "~="}
"""Operators that cap a version: each needs its reason written beside it."""


def pins() -> dict[str, Version]:
    """The constraints file as {canonical name: version}; every line a plain ``name==version``."""
    out: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.extras and not req.marker, line
        name = canonicalize_name(req.name)
        assert name not in out, f"{req.name} pinned twice"
        out[name] = Version(spec.version)
    return out


def declared(extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """What installing the package with ``extras`` asks for (``make``: dev), and what building it
    needs."""
    project = PYPROJECT["project"]
    wanted = [r for extra in extras for r in project["optional-dependencies"][extra]]
    return [
        Requirement(r)
        for r in (*project["dependencies"], *wanted, *PYPROJECT["build-system"]["requires"])
    ]


def test_every_pin_satisfies_every_declared_range():
    pinned = pins()
    missing = [str(r) for r in declared() if canonicalize_name(r.name) not in pinned]
    assert not missing, f"what make installs is not all pinned in {CONSTRAINTS.name}: {missing}"
    every = declared(tuple(PYPROJECT["project"]["optional-dependencies"]))
    outside = [
        f"{r.name}=={pinned[canonicalize_name(r.name)]} not in {r}"
        for r in every
        if canonicalize_name(r.name) in pinned
        and not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, outside


def test_the_constraints_pin_the_installers_and_torch_not_the_package():
    pinned = pins()
    assert "ftn-ablation-suite" not in pinned  # the package itself is installed from the tree
    assert {"pip", "setuptools", "torch", "torchvision"} <= set(pinned)


def test_the_ranges_admit_both_tested_combinations():
    """This machine: Python 3.11 + torch 2.14.1; the GPU machines: Python 3.12 + torch 2.11."""
    python = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert all(python.contains(v) for v in ("3.11", "3.12", "3.13")), python
    ranges = {canonicalize_name(r.name): r.specifier for r in declared()}
    for name, versions in {
        "torch": ("2.11.0", "2.14.1"),
        "torchvision": ("0.26.0", "0.29.1"),
    }.items():
        assert all(ranges[name].contains(v) for v in versions), (name, ranges[name])


def test_an_upper_bound_has_its_reason_beside_it():
    """A cap (``<``, ``==``, ``~=``) on a requirement needs a comment on its line saying why."""
    bare = []
    for line in (REPO / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        quoted = re.match(r'\s*"([^"]+)",?\s*(#.*)?$', line)
        try:
            req = Requirement(quoted.group(1)) if quoted else None
        except InvalidRequirement:  # a glob, a pytest option
            continue
        if req and any(s.operator in UPPER for s in req.specifier) and not quoted.group(2):
            bare.append(line.strip())
    assert not bare, f"upper bounds without a reason beside them: {bare}"


def test_the_makefile_installs_through_the_constraints():
    proc = subprocess.run(
        ["make", "-n", "-B", "venv", f"PY={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    installs = [line for line in proc.stdout.splitlines() if "pip install" in line]
    assert len(installs) == 2 and all("-c .ci/constraints.txt" in line for line in installs), (
        proc.stdout
    )
    # The package is built with the pinned setuptools, installed the line before, not a fresh one.
    assert "--no-build-isolation" in installs[1] and "setuptools" in installs[0]


def test_ci_installs_only_through_make_test():
    script = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert script[-1] == "make test"
    assert not [line for line in script if re.search(r"\bpip3?\b|python3? -m pip", line)], script
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    # The tests, after the lint and format check of the code (`make lint`: ruff, installed
    # with the dev extra through the constraints like everything else).
    assert re.search(r"^test: venv lint$", make, flags=re.M)
    assert re.search(
        r"^lint: venv\n\t\$\(BIN\)/ruff check \.\n\t\$\(BIN\)/ruff format --check \.$",
        make,
        flags=re.M,
    )


def make_tree(tmp_path: Path) -> Path:
    """The Makefile with its two inputs, in a folder of its own: ``make`` there touches nothing here."""
    (tmp_path / ".ci").mkdir(parents=True)
    shutil.copy(REPO / "Makefile", tmp_path)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copy(CONSTRAINTS, tmp_path / ".ci")
    return tmp_path


def test_a_new_constraints_file_reinstalls(tmp_path):
    tree = make_tree(tmp_path)
    (tree / ".venv").mkdir()
    stamp = tree / ".venv" / ".installed"
    stamp.touch()
    later = stamp.stat().st_mtime + 10
    os.utime(stamp, (later, later))
    fresh = subprocess.run(
        ["make", "-n", "venv", f"PY={sys.executable}"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pip install" not in fresh.stdout
    os.utime(tree / ".ci" / "constraints.txt", (later + 10, later + 10))
    stale = subprocess.run(
        ["make", "-n", "venv", f"PY={sys.executable}"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pip install" in stale.stdout


def fake_pythons(folder: Path, working: list[str], broken: list[str]) -> dict[str, str]:
    """A PATH holding ``working`` names that run this Python and ``broken`` ones that fail as a
    pyenv shim of an unselected version does; the environment to run ``make`` with."""
    folder.mkdir()
    for name in working:
        (folder / name).symlink_to(sys.executable)
    for name in broken:
        (folder / name).write_text('#!/bin/sh\necho "pyenv: $0: command not found" >&2\nexit 127\n')
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin"}


def test_make_finds_the_first_python_that_runs(tmp_path):
    tree = make_tree(tmp_path / "tree")
    env = fake_pythons(
        tmp_path / "bin", working=["python3.12", "python3.13"], broken=["python3.11"]
    )
    proc = subprocess.run(
        ["make", "-n", "venv"], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    assert "|| python3.12 -m venv .venv" in proc.stdout, proc.stdout


def test_make_says_in_one_line_when_no_python_is_there(tmp_path):
    tree = make_tree(tmp_path / "tree")
    env = fake_pythons(tmp_path / "bin", working=[], broken=["python3.11", "python3.12"])
    proc = subprocess.run(["make", "venv"], cwd=tree, env=env, capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: none of python3.11 python3.12 python3.13 found;")
    assert "make PY=" in errors[0] and not (tree / ".venv").exists()
    proc = subprocess.run(
        ["make", "venv", "PY=python3.11"], cwd=tree, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: python3.11 does not run or is older than 3.11;"), (
        proc.stderr
    )


@pytest.mark.slow
def test_installing_without_deps_beside_a_torch_leaves_it_in_place(tmp_path):
    """A researcher's environment that already holds a torch (here: this one's, seen through a
    .pth file) gets the package with ``pip install -e . --no-deps``, offline, and keeps its torch;
    ``pip install -e .`` with the dependencies would install nothing else either."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "tested.pth").write_text(f"{purelib}\n")  # torch, pip and setuptools from here
    src = tmp_path / "src"  # a copy of the package, so the build writes nothing into the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src)
    shutil.copytree(
        REPO / "ftn_core", src / "ftn_core", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [
        python,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-build-isolation",
        "--disable-pip-version-check",
    ]
    subprocess.run(
        [*pip, "--no-deps", "-e", str(src)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    dry = subprocess.run(
        [*pip, "--dry-run", "-e", str(src)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    would = [line for line in dry.stdout.splitlines() if line.startswith("Would install")]
    assert would == ["Would install ftn-ablation-suite-0.1.0"], dry.stdout[-2000:]
    check = (
        "import importlib.metadata as m, torch, ftn_core; "
        "print(torch.__version__, torch.__file__, ftn_core.__file__, m.version('ftn-ablation-suite'))"
    )
    out = subprocess.run(
        [python, "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout.split()
    assert out[0] == torch.__version__ and Path(out[1]).is_relative_to(purelib), out
    assert Path(out[2]).is_relative_to(src) and out[3] == "0.1.0", out
    assert not list(site.glob("torch*")), "pip put a torch into the new environment"


def test_the_commands_are_installed_and_run_from_any_folder(tmp_path):
    """pyproject.toml's commands are this environment's (``make venv`` installs them), each starts
    a ``main`` of the repository's code (through ``start_command``, which makes Ctrl-C during the
    imports one line), and a command and a script run from another folder."""
    import ast
    import importlib.metadata
    import importlib.util

    scripts = PYPROJECT["project"]["scripts"]
    dist = importlib.metadata.distribution("ftn-ablation-suite")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == scripts, "the environment's commands are stale: run `make venv`"
    for name, target in scripts.items():
        module, func = target.split(":")
        origin = Path(importlib.util.find_spec(module).origin)
        assert origin.is_relative_to(REPO), (name, origin)  # the tree, not a copy
        defined = {
            n.name: n
            for n in ast.parse(origin.read_text(encoding="utf-8")).body
            if isinstance(n, ast.FunctionDef)
        }
        assert func in defined, f"{name}: no {func}() in {origin.relative_to(REPO)}"
        (started,) = [
            c.args[0].value
            for c in ast.walk(defined[func])
            if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "start_command"
        ]
        main_origin = Path(importlib.util.find_spec(started).origin)
        assert main_origin.is_relative_to(REPO), (name, main_origin)
        assert "def main(" in main_origin.read_text(encoding="utf-8"), (
            f"{name}: {started} has no main"
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv, prog in (
        ([Path(sys.executable).with_name("ftn-report"), "--help"], "ftn-report"),
        ([sys.executable, REPO / "ablations" / "run.py", "--help"], "run.py"),
    ):
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith(f"usage: {prog} "), proc.stdout[:200]
        if prog == "run.py":  # its options, as a researcher's first look at the runner
            assert "--table" in proc.stdout and "--dry-run" in proc.stdout


@pytest.mark.slow
def test_the_wheel_holds_the_three_packages_and_their_data(tmp_path):
    """A plain (not editable) install gets ftn_core, ablations and reports with the study files,
    the paper's numbers and the shipped backbone, and not the committed report folders under reports/."""
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src)
    for package in ("ftn_core", "ablations", "reports"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "ftn_core/model.py",
        "ablations/run.py",
        "reports/build.py",
        "ablations/paper_tables.csv",
        "ablations/studies/table2.toml",
        "ftn_core/weights/people.pt",
    } <= names  # the cpu preset's start
    assert not [n for n in names if n.startswith("reports/") and n.count("/") > 1]  # table1/ …
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ftn-run = ablations.commands:run" in zipfile.ZipFile(wheel).read(entry).decode()
