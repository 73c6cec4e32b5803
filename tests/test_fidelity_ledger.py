"""docs/FIDELITY.md cannot drift from the code: every table row with a `code` cell resolves to the value its `ours`
cell states, a row whose note records a difference names the switch that restores the release's behaviour, and a
`test` cell names a test that exists.

`code` forms (the ledger's header): ``module:attr.attr`` (an attribute, a dataclass field's default -- its factory's
value -- or a dict key), ``module:function#param`` (a parameter default), ``module:NodeClass@input`` (a node input's
default); ``module`` is a dotted path inside the pack."""
import ast
import dataclasses
import importlib
import inspect
import math
import operator
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / "docs" / "FIDELITY.md"
COLUMNS = ["setting", "release", "source", "ours", "code", "test", "note"]
SECTIONS_OF_THIS_LEDGER = ("Refinement", "Mesh", "Score")  # the stages whose rows must be there


def _cells(line: str) -> list[str]:
    """The cells of a markdown table line; a '|' inside backticks stays in its cell."""
    cells, current, in_code = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += ch
    cells.append(current.strip())
    return cells


def parse_ledger(text: str) -> list[dict]:
    """Every row of every table: a dict of the columns plus its ``section`` (the last ## heading) and ``line``."""
    rows, section, header = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            section, header = line[3:].strip(), None
        elif not line.startswith("|"):
            header = None
        elif header is None:
            header = [c.lower() for c in _cells(line)]
        elif not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*\|?", line.strip()):
            cells = _cells(line)
            assert len(cells) == len(header), f"FIDELITY.md line {number}: {len(cells)} cells, header has {len(header)}"
            rows.append({**dict(zip(header, cells)), "section": section, "line": number, "header": header})
    return rows


ROWS = parse_ledger(LEDGER.read_text(encoding="utf-8"))
CODE_ROWS = [r for r in ROWS if r.get("code", "").strip("` ")]

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def literal(text: str):
    """A Python literal, with arithmetic on numbers allowed (``15001 / 60000``, ``2 ** 19``)."""
    def value(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, (ast.Tuple, ast.List)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        return ast.literal_eval(node)

    return value(ast.parse(text, mode="eval").body)


def _backticked(cell: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell.strip())
    assert match, f"expected one `literal` in backticks, got {cell!r}"
    return match.group(1)


def _field_default(cls, name: str):
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def resolve(code: str):
    """The value a `code` cell points at."""
    module_name, _, target = code.partition(":")
    assert target, f"{code!r}: expected module:target"
    module = importlib.import_module(f"geodream_pack.{module_name}")
    if "@" in target:
        cls_name, _, name = target.partition("@")
        inputs = getattr(module, cls_name).INPUT_TYPES()
        spec = {**inputs.get("required", {}), **inputs.get("optional", {})}[name]
        return spec[1]["default"]
    if "#" in target:
        fn_name, _, name = target.partition("#")
        fn = module
        for part in fn_name.split("."):
            fn = getattr(fn, part)
        default = inspect.signature(fn).parameters[name].default
        assert default is not inspect.Parameter.empty, f"{code!r}: {name} has no default"
        return default
    obj = module
    for part in target.split("."):
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and part in {f.name for f in dataclasses.fields(obj)}:
            obj = _field_default(obj, part)
        elif isinstance(obj, dict):
            obj = obj[part]
        else:
            obj = getattr(obj, part)
    return obj


def same(ours, actual) -> bool:
    if dataclasses.is_dataclass(actual) and not isinstance(actual, type):
        actual = dataclasses.asdict(actual)
    if isinstance(ours, bool) or isinstance(actual, bool):
        return type(ours) is type(actual) and ours == actual
    if isinstance(ours, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(ours, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(ours, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(ours) == len(actual) and all(same(a, b) for a, b in zip(ours, actual))
    if isinstance(ours, dict) and isinstance(actual, dict):
        return ours.keys() == actual.keys() and all(same(ours[k], actual[k]) for k in ours)
    return ours == actual


# --- the checks ---------------------------------------------------------------------------------------------------
def test_every_table_has_the_ledger_columns():
    headers = {tuple(r["header"]) for r in ROWS}
    assert headers == {tuple(COLUMNS)}, headers
    for section in SECTIONS_OF_THIS_LEDGER:
        assert any(r["section"] == section for r in ROWS), f"no rows under ## {section}"


@pytest.mark.parametrize("row", CODE_ROWS, ids=[f"L{r['line']}-{r['setting'][:40]}" for r in CODE_ROWS])
def test_code_resolves_to_ours(row):
    code = _backticked(row["code"])
    ours = literal(_backticked(row["ours"]))
    actual = resolve(code)
    assert same(ours, actual), f"FIDELITY.md line {row['line']} ({row['setting']}): ledger says {ours!r}, {code} is {actual!r}"


def test_every_difference_names_a_switch():
    """A non-empty note is a deliberate difference or a choice beside the release's: it names, in backticks after the
    word 'switch', what restores (or changes from) the release's behaviour (a setting, a node input, a widget
    choice); or it starts 'No switch:' and says why none is needed (an order, a rounding, reproducibility)."""
    bad = [f"line {r['line']} ({r['setting']})" for r in ROWS
           if r["note"].strip() and not re.search(r"switch[^`]*`[^`]+`", r["note"], re.IGNORECASE)
           and not r["note"].strip().startswith("No switch: ")]
    assert not bad, f"notes without a switch: {bad}"


def test_named_tests_exist():
    """A `test` cell naming ``file.py::test_name`` points at a test that is there."""
    missing = []
    for r in ROWS:
        for file_name, test_name in re.findall(r"([\w/]+\.py)::(\w+)", r.get("test", "")):
            path = ROOT / file_name if (ROOT / file_name).exists() else ROOT / "tests" / Path(file_name).name
            if not path.exists() or not re.search(rf"^def {test_name}\(", path.read_text(encoding="utf-8"), re.M):
                missing.append(f"line {r['line']}: {file_name}::{test_name}")
    assert not missing, missing


def test_the_checker_checks():
    """The resolver reads each `code` form, and a wrong `ours` is caught (so the parametrised check can fail)."""
    assert resolve("geodream_ops.refine.refine_neus:RefineSettings.lr.volume") == 1e-3  # factory default, then a dict key
    assert resolve("geodream_ops.refine.refine_neus:RefineSettings.cameras.elevation_range") == (-35.0, 35.0)
    assert resolve("geodream_ops.cameras:view_direction#back_threshold") == 40.0
    assert resolve("nodes.refine:GeoDreamVSDRefineNeuS@steps") == 20000
    assert literal("15001 / 60000") == pytest.approx(0.250016666)
    assert same([-35.0, 35.0], (-35.0, 35.0)) and not same(20000, 8337) and not same(True, 1)
    table = "## X\n\n| " + " | ".join(COLUMNS) + " |\n|---|---|---|---|---|---|---|\n| a | b | c | `1` | `m:x` | | |\n"
    (row,) = parse_ledger(table)
    assert row["section"] == "X" and row["ours"] == "`1`" and row["code"] == "`m:x`"
