"""The tables of docs/ that are generated from the code, printed as markdown: `python scripts/doc_tables.py [NAME]`.

- `study-file`: the keys of a study file (lrnbn.compare.StudyFile and VariantSpec), for docs/studies.md.
- `claims-constants`: the constants behind the verdicts (lrnbn/claims.py, lrnbn/chance.py and the two they share
  from lrnbn/stats.py and lrnbn/results.py) with their values, for docs/claims.md. The meanings are written by hand:
  this prints the ones docs/claims.md has, and "(to write)" for a new constant.
- `machine-keys`: lrnbn.keys.MACHINE_KEYS as docs/rundir.md lists them.
- `bench-step`, `bench-layer`, `bench-peers`: docs/benchmarks.md's tables of the training step, of one LRN layer
  against BN and of every framework's LRN, from the benchmark records in results/ (BENCH_RECORDS).

The config reference is `lrnbn config reference` (docs/config.md). tests/test_docs.py checks that every page holds
what this prints.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

REPO = Path(__file__).resolve().parent.parent

# Modules whose top-level numeric constants are all listed in docs/claims.md, and modules whose constants may be.
CONSTANT_MODULES = ("claims", "chance")
SHARED_CONSTANT_MODULES = ("stats", "results")
CONSTANTS_HEADER = "| constant | in | value | meaning |"


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if origin in (list, tuple):
        return f"{origin.__name__} of " + ", ".join(_type_name(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _rule(field) -> str:
    parts = []
    for meta in field.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{symbol} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"at least {meta.min_length}")
        if getattr(meta, "pattern", None) is not None:
            parts.append(f"matches `{meta.pattern}`")
    return ", ".join(parts)


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def study_file_table() -> str:
    """Every key of a study file, `variants` entries' keys as `variants[].KEY`, with type, default, rule and help."""
    from lrnbn.compare import StudyFile, VariantSpec

    lines = ["| key | type | default | rule | help |", "|---|---|---|---|---|"]
    rows = [(name, f) for name, f in StudyFile.model_fields.items()]
    rows += [(f"variants[].{name}", f) for name, f in VariantSpec.model_fields.items()]
    for name, field in rows:
        kind = _type_name(field.annotation).replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {_rule(field)} | {field.description} |")
    return "\n".join(lines) + "\n"


def show_value(value) -> str:
    """A constant as the docs write it: numbers by `:g`, a tuple as its items."""
    if isinstance(value, tuple):
        return ", ".join(f"({show_value(v)})" if isinstance(v, tuple) else show_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _is_number_or_numbers(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)) or value is None:
        return True
    return isinstance(value, tuple) and all(_is_number_or_numbers(v) for v in value)


def numeric_constants(module: str) -> dict[str, object]:
    """The UPPER_CASE names that lrnbn/<module>.py assigns at its top level to a number or a tuple of numbers."""
    source = (REPO / "lrnbn" / f"{module}.py").read_text()
    names = [
        target.id
        for node in ast.parse(source).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id.isupper()
    ]
    values = vars(importlib.import_module(f"lrnbn.{module}"))
    return {name: values[name] for name in names if _is_number_or_numbers(values[name]) and values[name] is not None}


def constants_table_rows(doc: str) -> list[tuple[str, str, str, str]]:
    """The rows (constant, module file, value, meaning) of the constants table in a page's text."""
    lines = doc.splitlines()
    start = lines.index(CONSTANTS_HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2], cells[3]))
    return rows


def claims_constants_table(doc: str) -> str:
    """The constants table with the values the code has now: every constant of CONSTANT_MODULES, then the shared
    ones the page lists; meanings kept from the page."""
    kept = {(name, where): (value, meaning) for name, where, value, meaning in constants_table_rows(doc)}
    lines = [CONSTANTS_HEADER, "|---|---|---|---|"]
    listed = [(name, where) for name, where in kept]
    for module in CONSTANT_MODULES:
        for name in numeric_constants(module):
            if (name, f"{module}.py") not in kept:
                listed.append((name, f"{module}.py"))
    for name, where in listed:
        module = where.removesuffix(".py")
        value = vars(importlib.import_module(f"lrnbn.{module}")).get(name, "(missing)")
        meaning = kept.get((name, where), ("", "(to write)"))[1]
        lines.append(f"| `{name}` | `{where}` | {show_value(value)} | {meaning} |")
    return "\n".join(lines) + "\n"


def machine_keys_list() -> str:
    from lrnbn.keys import MACHINE_KEYS

    return ", ".join(f"`{key}`" for key in sorted(MACHINE_KEYS))


# The benchmark records docs/benchmarks.md tabulates, and which precision and layout each `bench lrn` record holds.
BENCH_RECORDS = REPO / "results" / "benchmarks-2026-12-05"
LAYER_RECORDS = {
    ("fp32", "contiguous"): "lrn-float32---no-channels-last.json",
    ("fp32", "channels_last"): "lrn-float32---channels-last.json",
    ("bf16", "contiguous"): "lrn-bfloat16---no-channels-last.json",
    ("bf16", "channels_last"): "lrn-bfloat16---channels-last.json",
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  # bench lrn's --dtype for each precision
LRNS = ("lrn-torch", "lrn-fused")  # the step table's two LRN columns: the stock layer and the fused one


def _record(name: str) -> dict:
    import json

    return json.loads((BENCH_RECORDS / name).read_text())


def bench_step_table() -> str:
    """`bench train`'s record: BN's step, none's ratio, and each LRN's ratio to BN at every n."""
    rows = _record("train.json")["rows"]
    sizes = " / ".join(str(size) for size in dict.fromkeys(r["size"] for r in rows if r["norm"] == "lrn-fused"))
    lines = [
        f"| precision, format | BN step, ms | none (ratio to BN) | stock LRN at n {sizes} | fused LRN at n {sizes} |",
        "|---|---|---|---|---|",
    ]
    for precision, layout in LAYER_RECORDS:
        alike = [r for r in rows if (r["precision"], r["format"]) == (precision, layout)]
        bn, none = (next(r for r in alike if r["norm"] == norm) for norm in ("bn", "none"))
        stock, fused = (" / ".join(f"{r['ratio_to_bn']:.2f}" for r in alike if r["norm"] == lrn) for lrn in LRNS)
        lines.append(
            f"| {precision} {layout} | {bn['median_ms']:.1f} | {none['median_ms']:.1f} ({none['ratio_to_bn']:.2f}) "
            f"| {stock} | {fused} |"
        )
    return "\n".join(lines) + "\n"


def bench_layer_table() -> str:
    """`bench lrn`'s records: BN's time, each LRN's range over n (max/min), the fused LRN at every n and over BN."""
    records = {setting: _record(name) for setting, name in LAYER_RECORDS.items()}
    sizes = [r["size"] for r in next(iter(records.values()))["rows"] if r["impl"] == "fused"]
    lines = [
        "| dtype, format | BN, ms | stock LRN, ms over n (max/min) | fast LRN | fused LRN | fused at n "
        + ", ".join(map(str, sizes))
        + " | fused / BN |",
        "|---|---|---|---|---|---|---|",
    ]
    for (precision, layout), record in records.items():
        setting = record.get("setting")  # records made before bench lrn wrote one say so only in their file name
        if setting and (setting["dtype"], setting["channels_last"]) != (DTYPES[precision], layout == "channels_last"):
            name = LAYER_RECORDS[precision, layout]
            raise SystemExit(f"{name} holds {setting['dtype']}, channels_last {setting['channels_last']}")
        rows = record["rows"]
        bn = next(r["median_ms"] for r in rows if r["impl"] == "bn")
        ms = {impl: [r["median_ms"] for r in rows if r["impl"] == impl] for impl in ("torch", "fast", "fused")}
        spans = {impl: (min(v), max(v), max(v) / min(v)) for impl, v in ms.items()}
        stock, fast = (f"{lo:.0f}-{hi:.0f} ({flat:.2f})" for lo, hi, flat in (spans["torch"], spans["fast"]))
        lo, hi, flat = spans["fused"]
        lines.append(
            f"| {precision} {layout} | {bn:.1f} | {stock} | {fast} | {lo:.1f}-{hi:.1f} ({flat:.2f}) | "
            + " ".join(f"{v:.1f}" for v in ms["fused"])
            + f" | {lo / bn:.2f}-{hi / bn:.2f} |"
        )
    return "\n".join(lines) + "\n"


def bench_peers_table() -> str:
    """`bench lrn --peers`'s record: each LRN's median time at every depth_radius and its largest errors."""
    rows = _record("peers.json")["rows"]
    radii = list(dict.fromkeys(r["depth_radius"] for r in rows))
    lines = [
        "| LRN | version | timed | depth_radius " + " / ".join(map(str, radii)) + ", ms | max rel error | "
        "on wide magnitudes |",
        "|---|---|---|---|---|---|",
    ]
    for peer in dict.fromkeys(r["peer"] for r in rows):
        own = [r for r in rows if r["peer"] == peer]
        times = " / ".join(f"{r['median_ms']:.1f}" for r in own)
        error = max(r["max_rel_error"] for r in own)
        lines.append(
            f"| {peer} | {own[0]['version']} | {own[0]['direction']} | {times} | {error:.1e} | "
            f"{own[0]['max_rel_error_wide']:.1e} |"
        )
    return "\n".join(lines) + "\n"


# Every table by the name `python scripts/doc_tables.py NAME` prints it under.
TABLES = {
    "study-file": study_file_table,
    "claims-constants": lambda: claims_constants_table((REPO / "docs" / "claims.md").read_text()),
    "machine-keys": lambda: machine_keys_list() + "\n",
    "bench-step": bench_step_table,
    "bench-layer": bench_layer_table,
    "bench-peers": bench_peers_table,
}


def main(argv: list[str]) -> None:
    for name in argv or TABLES:
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r}; one of {', '.join(TABLES)}")
        print(TABLES[name](), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
