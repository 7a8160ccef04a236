"""An ablation study as a TOML file: rows (config diffs), an optional sweep of one field, and
claims that the paired intervals judge. The paper's Tables 1–3 are such files (``studies/``).

A file is read and checked whole before anything runs; every problem is one ``FTNError`` line
naming the file, the row and what is wrong (``docs/studies.md`` lists the format and the cases).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import shlex
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ablations.store import experiment_name, experiment_prefix
from ftn_core.config import Config, ModelConfig, config_hash, flatten, override, validate
from ftn_core.errors import FTNError
from ftn_core.presets import preset_config

STUDIES = Path(__file__).with_name("studies")
"""The paper's tables as study files: ``table1.toml`` … ``table3.toml``."""
PAPER_TABLE_NUMBERS = (1, 2, 3)
METRICS = {"R-1": "rank1", "rank1": "rank1", "mAP": "mAP"}
"""A claim's ``metric``: its name in the file → the ``val/<name>`` it is judged on."""
NAME_RE = re.compile(r"^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*$")
KEY_RE = re.compile(r"^[A-Za-z0-9_.=+]+$")
SWEEP_KEY_RE = re.compile(r"^[A-Za-z0-9_.=+,-]+$")
"""A sweep row's key (``w_grad=1e-05``, ``milestones=3,5``): it names runs and checkpoint files."""
TOP_KEYS = {
    "name",
    "description",
    "base",
    "set",
    "reference",
    "paper_table",
    "rows_on_different_data",
    "row",
    "sweep",
    "claim",
    "reference_name",
    "full",
}
ROW_KEYS = {"key", "label", "set", "control", "reference", "short", "explains"}
CLAIM_KEYS = {"text", "holds_if", "metric", "source", "check", "row"}
CHECKS = {
    "order": "the paired 95 % interval of every A − B in `holds_if` is above 0",
    "cfa_cost": "CFA's parameters and MACs, and its saving against PAM-CAM, as the runs measured "
    "them at the paper's setting, are the paper's",
    "focus": "the normalised foreground focus of CFA's output A′ in the row `row` is above 0 "
    "(95 % interval over seeds)",
}
"""What a ``[[claim]]`` can check (``check``; ``order`` when it is not given)."""
SWEEP_KEYS = {"field", "values", "label"}
NOT_IN_A_STUDY = {
    "train.seed": "a run's seed comes only from --seeds (run.py --seeds 0 1 2 trains every row at each)",
    "data.dataset": "the dataset comes from --dataset (one experiment per dataset)",
    "data.root": "where the data lives comes from --root",
}
"""Keys a study file may not set, and where they come from instead."""
DATA_KEYS = (
    "data.synthetic_size",
    "data.synthetic_seed",
    "data.synthetic_test_ids",
    "data.skip_bad_images",
)
"""The keys that choose a row's data (with ``--dataset`` and ``--root``): rows that set them
differently see other test queries, so no Δ can pair them (``rows_on_different_data``)."""


@dataclass(frozen=True)
class Variant:
    """One row of a study: a diff of the config (dotted keys) from the full FTN (``Config()``)."""

    key: str
    """Short id used on the command line and in run names (``base``, ``a`` … ``g``, ``cfa``)."""
    label: str
    """The row label of the table."""
    changes: tuple[tuple[str, Any], ...]
    """Dotted config keys (``model.mask``, ``train.matched_updates``) and their values."""
    control: bool = False
    """Not a row of the paper: a control that tells mechanisms apart (run with ``--controls``)."""
    reference: str | None = None
    """The row this row is compared with in its own sentence (a control's); None: the study's."""
    short: str = ""
    """The row's name in a figure's column heading (``key`` when empty)."""
    explains: str | None = None
    """A control against the study's reference: the row whose Δ its own Δ accounts for a share
    of (Table 2's ``base_matched`` explains (g)'s loss); None: none."""

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with this row's changes."""
        return override(cfg, dict(self.changes))

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """``base`` with this row's ``model.*`` changes (the network alone)."""
        return override(
            Config(model=base), {k: v for k, v in self.changes if k.startswith("model.")}
        ).model


@dataclass(frozen=True)
class Claim:
    """What ``check`` (``CHECKS``) tests: "A > B" for every (A, B) in ``pairs``, on ``metric``,
    judged by the paired 95 % interval (``order``); CFA's measured cost (``cfa_cost``); the
    foreground focus of the row ``row`` (``focus``)."""

    text: str
    pairs: tuple[tuple[str, str], ...]
    metric: str = "rank1"
    source: str = ""
    check: str = "order"
    row: str = ""


@dataclass(frozen=True)
class Sweep:
    """One config field over several values: one row per value (``Study.sweep_values``)."""

    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    rows: tuple[Variant, ...]
    reference: str
    """The row every Δ is taken against (the paper's Baseline in its tables)."""
    claims: tuple[Claim, ...] = ()
    base: str | None = None
    sweep: Sweep | None = None
    sweep_values: tuple[tuple[str, Any], ...] = ()
    """(row key, swept value) of the rows the sweep made, in order."""
    table: int | None = None
    """The paper table whose R-1 / mAP (``paper_tables.csv``) are set beside ours; None: none."""
    path: str = ""
    text: str = ""
    """The file as read: logged with the runs, and its hash tagged."""
    shared: tuple[str, ...] = ()
    """The keys the file's top-level ``set`` gives every row (``--set`` may not change them)."""
    rows_on_different_data: bool = False
    """The file says its rows choose different data (``DATA_KEYS``): reports never pair those."""
    reference_name: str = ""
    """What the reports call the reference row ("Baseline" in the paper's tables: "our
    Baseline"); empty: "the reference row"."""
    full: str | None = None
    """The row the report's figures and rank lists set beside the reference (the paper's full
    model: ``cfa`` in Table 1, ``g`` in Table 2); None: the reference alone."""

    def __str__(self) -> str:
        return self.name

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @property
    def is_paper(self) -> bool:
        """One of the shipped paper tables (its experiments keep their ``table{N}-…`` names)."""
        return self.table is not None and self.name == f"table{self.table}"

    @property
    def prefix(self) -> str:
        """The start of its experiments' names: ``table2`` or ``study-<name>``."""
        return experiment_prefix(self.table if self.is_paper else self.name)

    def experiment(self, dataset: str, preset: str) -> str:
        """Its experiment on ``dataset`` with ``preset`` (``ablations.store.experiment_name``)."""
        return experiment_name(self.table if self.is_paper else self.name, dataset, preset)

    def row(self, key: str) -> Variant:
        return next(v for v in self.rows if v.key == key)

    def reference_of(self, key: str) -> str:
        """The row ``key``'s own sentence compares it with (a control's reference, else the study's)."""
        found = [v for v in self.rows if v.key == key]
        return (found[0].reference if found else None) or self.reference

    @property
    def config_keys(self) -> set[str]:
        """Every config key some row of the file sets (its ``base``, ``set``, rows and sweep)."""
        return {k for v in self.rows for k, _ in v.changes}

    @property
    def command(self) -> str:
        """How the file's runs are trained: ``--table N`` or ``--study FILE``."""
        return f"--table {self.table}" if self.is_paper else f"--study {shlex.quote(self.path)}"


def data_choice(v: Variant) -> tuple:
    """The values of ``DATA_KEYS`` the row ``v`` trains and tests on (before any ``--set``)."""
    flat = flatten(v.apply(Config()))
    return tuple(flat[k] for k in DATA_KEYS)


def row_setting(v: Variant, key: str) -> Any:
    """The value of the dotted ``key`` that the row ``v`` itself gives (before any ``--set``)."""
    return flatten(v.apply(Config()))[key]


def planned_config(
    v: Variant, preset: str, dataset: str, root: str, sets: dict[str, Any], seed: int = 0
) -> Config:
    """The configuration the runner trains row ``v`` with: the preset on ``dataset`` at ``root``
    (the ``cpu`` preset reads a real dataset at 128×64), the user's ``--set``, the row's changes,
    then the seed. Reports compare each run with it, so a run of an older row is never reported."""
    data = {"data.dataset": dataset, "data.root": root}
    if dataset != "synthetic" and preset == "cpu":
        data.update({"data.height": 128, "data.width": 64})
    cfg = v.apply(override(preset_config(preset, data), sets))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


@functools.cache
def paper_study(table: int) -> Study:
    """The paper's Table ``table`` (``studies/table{N}.toml``)."""
    if table not in PAPER_TABLE_NUMBERS:
        raise FTNError(
            f"--table {table}: unknown; one of {', '.join(map(str, PAPER_TABLE_NUMBERS))}"
        )
    return load(STUDIES / f"table{table}.toml")


def _shipped(path: Path) -> bool:
    """Whether ``path`` is one of the shipped paper tables (``studies/table{N}.toml``)."""
    try:
        return (
            path.resolve().parent == STUDIES.resolve()
            and re.fullmatch(r"table\d+\.toml", path.name) is not None
        )
    except OSError:
        return False


def paper_row(key: str) -> Variant | None:
    """A row of the paper's tables by key (``g``, ``cfa``, ``ftn`` …), None if there is none."""
    for n in PAPER_TABLE_NUMBERS:
        for v in paper_study(n).rows:
            if v.key == key:
                return v
    return None


def as_study(table: int | Study) -> Study:
    return table if isinstance(table, Study) else paper_study(table)


def load(path: str | Path) -> Study:
    """Read and check the study file at ``path`` (``FTNError``, one line, on any problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FTNError(f"--study {path}: cannot read it ({err.strerror or err})") from None
    return parse(text, str(path), shipped=_shipped(path))


def parse(text: str, where: str, shipped: bool = False) -> Study:
    """The study in ``text`` (``where`` names the file in every error); ``shipped``: the file is
    a paper table of ``studies/`` (only those may keep a paper table's name)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FTNError(f"{where}: not valid TOML: {err}") from None

    def fail(problem: str, row: str | None = None) -> typing.NoReturn:
        raise FTNError(f"{where}: {f'row {row!r}: ' if row else ''}{problem}")

    _unknown(doc, TOP_KEYS, "", fail)
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        fail(
            "`name` must be a string of letters, digits, '_', '.' and '-', e.g. name = \"mask-width\""
        )
    table = doc.get("paper_table")
    if table is not None and table not in PAPER_TABLE_NUMBERS:
        fail(f"paper_table = {table!r}: must be one of {', '.join(map(str, PAPER_TABLE_NUMBERS))}")
    if re.fullmatch(r"table\d+", name) and name != f"table{table}":
        fail(f"name = {name!r} is kept for the paper's tables; choose another name")
    if re.fullmatch(r"table\d+", name) and not (shipped and Path(where).stem == name):
        fail(
            f"name = {name!r} is the paper's Table {table} (its runs and reports are the shipped "
            f"table's, ablations/studies/{name}.toml): give the copy a name of its own, "
            f'e.g. name = "my-{name}"'
        )
    different_data = doc.get("rows_on_different_data", False)
    if not isinstance(different_data, bool):
        fail("`rows_on_different_data` must be true or false")
    description = doc.get("description", "")
    if not isinstance(description, str):
        fail("`description` must be a string")
    base_changes: dict[str, Any] = {}
    base = doc.get("base")
    if base is not None:
        row = paper_row(base) if isinstance(base, str) else None
        if row is None:
            fail(f"base = {base!r}: not a row of the paper's tables (e.g. base, cfa, g, ftn)")
        base_changes = dict(row.changes)
    shared = doc.get("set", {})
    if not isinstance(shared, dict):
        fail(
            '`set` must be a table of config keys every row takes, e.g. set = { "loss.w_l1" = 0.03 }'
        )
    where_shared = functools.partial(_fail_shared, fail)
    base_changes |= {k: _value(k, v, where_shared) for k, v in shared.items()}
    _checked(Variant("set", "", tuple(base_changes.items())), where_shared)

    rows = [_row(entry, i, base_changes, fail) for i, entry in enumerate(_tables(doc, "row", fail))]
    sweep, sweep_values = None, ()
    if "sweep" in doc:
        sweep, swept = _sweep(doc["sweep"], rows, base_changes, set(shared), fail)
        rows += swept
        sweep_values = tuple((v.key, value) for v, value in zip(swept, sweep.values))
    if not rows:
        fail("no rows: add [[row]] entries or a [sweep]")
    seen: dict[str, str] = {}
    keys: set[str] = set()
    for v in rows:
        if v.key in keys:
            fail("two rows have this key", v.key)
        keys.add(v.key)
        h = config_hash(v.apply(Config()))
        if h in seen:
            fail(f"the same configuration as row {seen[h]!r} (two rows would be one run)", v.key)
        seen[h] = v.key
    if not different_data:
        _same_data(rows, fail)
    reference = doc.get("reference", rows[0].key)
    if reference not in keys:
        fail(f"reference = {reference!r}: not a row (rows: {', '.join(v.key for v in rows)})")
    for v in rows:
        if v.reference is not None and v.reference not in keys:
            fail(f"reference = {v.reference!r}: not a row", v.key)
        if v.explains is not None and not v.control:
            fail("`explains` is for a control row (control = true)", v.key)
        if v.explains is not None and v.explains not in keys:
            fail(f"explains = {v.explains!r}: not a row", v.key)
        if v.explains in (v.key, reference):
            fail(
                f"explains = {v.explains!r}: a control explains a share of another row's Δ "
                f"against the reference, not its own or the reference's",
                v.key,
            )
        if v.explains is not None and (v.reference or reference) != reference:
            fail(
                f"explains = {v.explains!r}: only a row compared with the study's reference "
                f"({reference!r}) can explain a share of another row's Δ against it",
                v.key,
            )
    full = doc.get("full")
    if full is not None and full not in keys:
        fail(f"full = {full!r}: not a row (rows: {', '.join(v.key for v in rows)})")
    if full is not None and full == reference:
        fail(f"full = {full!r} is the reference row: name the row shown beside it")
    reference_name = doc.get("reference_name", "")
    if not isinstance(reference_name, str):
        fail('`reference_name` must be a string, e.g. reference_name = "Baseline"')
    orderings: dict[str, list[tuple[str, str, str, str]]] = {}
    claims = tuple(
        _claim(entry, i, keys, name, orderings, fail)
        for i, entry in enumerate(_tables(doc, "claim", fail))
    )
    return Study(
        name,
        description,
        tuple(rows),
        reference,
        claims,
        base,
        sweep,
        sweep_values,
        table,
        where,
        text,
        tuple(shared),
        different_data,
        reference_name,
        full,
    )


def _same_data(rows: list[Variant], fail) -> None:
    """Refuse rows that choose different data (``DATA_KEYS``) in a study that does not say so."""
    first = data_choice(rows[0])
    for v in rows[1:]:
        other = data_choice(v)
        for key, a, b in zip(DATA_KEYS, first, other):
            if a != b:
                fail(
                    f"{key} = {_toml(b)}, but {_toml(a)} in row {rows[0].key!r}: the rows of a study share "
                    f"their data, so that every Δ pairs the same test queries; set it for every row (the "
                    f"study's `set` or --set), or say rows_on_different_data = true (rows on different data "
                    f"are then never paired)",
                    v.key,
                )


def _unknown(entry: dict, allowed: set[str], what: str, fail) -> None:
    extra = sorted(set(entry) - allowed)
    if extra:
        fail(
            f"unknown {what}key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))} "
            f"(known: {', '.join(sorted(allowed))})"
        )


def _tables(doc: dict, name: str, fail) -> list[dict]:
    entries = doc.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        fail(f"`{name}` must be written as [[{name}]] tables")
    return entries


def _row(entry: dict, i: int, base: dict[str, Any], fail) -> Variant:
    key = entry.get("key")
    if not isinstance(key, str) or not KEY_RE.match(key):
        fail(
            f"[[row]] number {i + 1}: `key` must be a short string of letters, digits and '_', e.g. key = \"narrow\""
        )
    where = functools.partial(_fail_row, fail, key)
    _unknown(entry, ROW_KEYS, "row ", where)
    label = entry.get("label", key)
    sets = entry.get("set", {})
    if not isinstance(label, str):
        where("`label` must be a string")
    if not isinstance(sets, dict):
        where('`set` must be a table of config keys, e.g. set = { "model.gauss_sy" = 0.25 }')
    control = entry.get("control", False)
    if not isinstance(control, bool):
        where("`control` must be true or false")
    reference = entry.get("reference")
    if reference is not None and not isinstance(reference, str):
        where("`reference` must be a row key")
    short = entry.get("short", "")
    if not isinstance(short, str):
        where("`short` must be a string")
    explains = entry.get("explains")
    if explains is not None and not isinstance(explains, str):
        where("`explains` must be a row key")
    changes = {**base, **{k: _value(k, v, where) for k, v in sets.items()}}
    row = Variant(key, label, tuple(changes.items()), control, reference, short, explains)
    return _checked(row, where)


def _fail_row(fail, row: str, problem: str) -> typing.NoReturn:
    fail(problem, row)


def _fail_shared(fail, problem: str) -> typing.NoReturn:
    fail(f"set: {problem}")


def _checked(v: Variant, where) -> Variant:
    """``v`` if its changes make a valid config (``config.validate``), else the one line."""
    try:
        validate(v.apply(Config()))
    except FTNError as err:
        where(
            str(err)
            .replace(" (from --set, --params-file or the preset)", "")
            .removeprefix("--set ")
        )
    return v


def _hint(key: str) -> Any:
    """The type of the config field ``key`` (``model.gauss_sy`` → float), None if unknown."""
    node: Any = Config
    for part in key.split("."):
        if not (
            dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}
        ):
            return None
        node = typing.get_type_hints(node)[part]
    return None if dataclasses.is_dataclass(node) else node


def _value(key: str, value: Any, where) -> Any:
    """``value`` for the field ``key`` if its TOML type is the field's (no "1" for 1, no 1 for
    true); lists become tuples. Unknown keys and bad choices get ``override``'s own message."""
    if key in NOT_IN_A_STUDY:
        where(f"{key}: {NOT_IN_A_STUDY[key]}; remove it from the study file")
    hint = _hint(key)
    if hint is None:
        try:
            override(Config(), {key: value})
        except FTNError as err:
            where(str(err).removeprefix("--set "))
    origin = typing.get_origin(hint)
    if origin is Literal:
        ok, what = isinstance(value, str), "a string"
    elif origin is tuple:
        ok = isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        )
        what, value = "a list of integers", tuple(value) if isinstance(value, list) else value
    elif hint is bool:
        ok, what = isinstance(value, bool), "true or false"
    elif hint is int:
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif hint is float:
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, what = isinstance(value, str), "a string"
    if not ok:
        where(f"{key} = {_toml(value)}: expected {what}")
    try:
        override(Config(), {key: value})
    except FTNError as err:
        where(str(err).removeprefix("--set "))
    return float(value) if hint is float else value


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def _sweep(
    entry: Any, rows: list[Variant], base: dict[str, Any], shared: set[str], fail
) -> tuple[Sweep, list[Variant]]:
    if not isinstance(entry, dict):
        fail('`sweep` must be a table: [sweep] with field = "loss.w_grad" and values = [...]')
    _unknown(entry, SWEEP_KEYS, "sweep ", fail)
    field, values = entry.get("field"), entry.get("values")
    if not isinstance(field, str):
        fail('[sweep]: `field` must be a config key, e.g. field = "loss.w_grad"')
    if not isinstance(values, list) or not values:
        fail(
            f"[sweep] {field}: `values` is empty; give at least one value, e.g. values = [0.1, 1.0]"
        )
    if field in NOT_IN_A_STUDY:
        fail(f"[sweep] {field}: {NOT_IN_A_STUDY[field]}; sweep another field")
    if field in shared:
        fail(
            f"[sweep] {field}: the study's `set` sets the swept field too (every sweep row would override it)"
        )
    for v in rows:
        if field in dict(v.changes) and field not in base:
            fail(
                f"[sweep] {field}: this row sets the swept field too (a sweep row would override it)",
                v.key,
            )
    leaf = field.rsplit(".", 1)[-1]
    label = entry.get("label", f"{field} = {{}}")
    if not isinstance(label, str):
        fail("[sweep]: `label` must be a string with {} where the value goes")
    out = []
    for value in values:
        written = (
            ",".join(map(str, value)) if isinstance(value, list) else _toml(value).strip(chr(39))
        )
        key = f"{leaf}={written}"
        if not SWEEP_KEY_RE.match(key):
            fail(
                f"[sweep] {field}: the value {_toml(value)} makes the row key {key!r}, and a row key may hold "
                f"only letters, digits and _ . = + , - (it names runs and checkpoint files): write these "
                f"rows as [[row]] entries with keys of their own"
            )
        where = functools.partial(_fail_row, fail, key)
        checked = _value(field, value, where)
        out.append(
            _checked(
                Variant(
                    key,
                    label.replace("{}", _toml(value).strip(chr(39))),
                    tuple({**base, field: checked}.items()),
                ),
                where,
            )
        )
    return Sweep(field, tuple(dict(v.changes)[field] for v in out)), out


def _claim(
    entry: dict,
    i: int,
    keys: set[str],
    study: str,
    orderings: dict[str, list[tuple[str, str, str, str]]],
    fail,
) -> Claim:
    """One ``[[claim]]``; ``orderings`` (per metric: a, b, the item as written, the claim) holds
    the earlier claims' orderings, and one that closes a cycle with them is refused."""
    text = entry.get("text")
    where = f"[[claim]] number {i + 1}"
    if not isinstance(text, str) or not text:
        fail(f'{where}: `text` must say what is claimed, e.g. text = "a narrower Gm helps"')
    where = f"claim {text!r}"
    _unknown(entry, CLAIM_KEYS, f"{where} ", fail)
    metric = entry.get("metric", "R-1")
    if metric not in METRICS:
        fail(f"{where}: metric = {metric!r}: unknown; one of R-1, mAP")
    source = entry.get("source", study)
    if not isinstance(source, str):
        fail(f"{where}: `source` must be a string")
    check = entry.get("check", "order")
    if check not in CHECKS:
        fail(f"{where}: check = {check!r}: unknown; one of {', '.join(map(repr, CHECKS))}")
    row = entry.get("row", "")
    if check != "order":
        if "holds_if" in entry:
            fail(f'{where}: check = {check!r} takes no `holds_if` (it is for check = "order")')
        if check == "focus" and row not in keys:
            fail(
                f'{where}: check = "focus" needs `row`, the row whose focus is claimed '
                f"(rows: {', '.join(sorted(keys))})"
            )
        if check != "focus" and row:
            fail(f'{where}: `row` is for check = "focus" only')
        return Claim(text, (), METRICS[metric], source, check, row)
    if row:
        fail(f'{where}: `row` is for check = "focus" only')
    holds = entry.get("holds_if")
    items = [holds] if isinstance(holds, str) else holds
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        fail(f'{where}: `holds_if` must be "A > B" or a list of them, with A and B row keys')
    pairs = []
    for item in items:
        m = re.fullmatch(r"\s*(\S+)\s*([<>])\s*(\S+)\s*", item)
        if m is None:
            fail(f'{where}: holds_if {item!r}: expected "A > B" or "A < B" with row keys')
        a, op, b = m.groups()
        for k in (a, b):
            if k not in keys:
                fail(
                    f"{where}: holds_if {item!r}: {k!r} is not a row (rows: {', '.join(sorted(keys))})"
                )
        if a == b:
            fail(
                f"{where}: holds_if {item!r}: a row cannot beat itself; compare two different rows"
            )
        pair = (a, b) if op == ">" else (b, a)
        known = orderings.setdefault(METRICS[metric], [])
        cycle = _path(known, pair[1], pair[0])
        if cycle is not None:
            said = ", ".join(f"{x!r} (claim {t!r})" for *_, x, t in cycle)
            fail(
                f"{where}: holds_if {item!r} contradicts {said}: no ordering of the rows makes all of "
                f"them hold (on {metric})"
            )
        known.append((*pair, item, text))
        pairs.append(pair)
    return Claim(text, tuple(pairs), METRICS[metric], source)


def _path(edges: list[tuple[str, str, str, str]], start: str, end: str) -> list | None:
    """The orderings that lead from ``start`` to ``end`` (``start`` > … > ``end``), if any."""
    came: dict[str, tuple | None] = {start: None}
    todo = [start]
    while todo:
        node = todo.pop(0)
        if node == end:
            path = []
            while came[node] is not None:
                path.append(came[node])
                node = came[node][0]
            return path[::-1]
        for edge in edges:
            if edge[0] == node and edge[1] not in came:
                came[edge[1]] = edge
                todo.append(edge[1])
    return None


def spans_decades(values: list[float]) -> bool:
    """Whether a sweep's values are best drawn on a log axis (all > 0, max/min ≥ 20)."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return (
        len(nums) == len(values)
        and len(nums) > 1
        and min(nums) > 0
        and max(nums) / min(nums) >= 20
        and all(math.isfinite(v) for v in nums)
    )
