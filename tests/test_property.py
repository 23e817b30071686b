"""Property-based checks (hypothesis): random and mutated YAML for the config and study loaders, and random byte
damage to every file of a run directory. Whatever the input: a valid result or one short UserError line, in bounded
time and memory; the report sets damaged runs aside; a resume of a damaged run exits 0 or with one line."""

import shutil
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrnbn.config import load_config
from lrnbn.errors import UserError
from lrnbn.records import DamagedRun, load_run
from tests.conftest import TINY

VALID = yaml.safe_dump(TINY, sort_keys=False)
STUDY = yaml.safe_dump({"name": "s", "base": TINY, "grid": {"model.norm": ["bn", "lrn"]}, "seeds": [0, 1]})
PIECES = [
    "&a",
    "*a",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "!!python/object:os.system",
    "\t",
    "\n  ",
    "'",
    '"',
    "? ",
    "<<: *a",
    "%YAML 1.1\n",
    "---\n",
    "...",
    "1e309",
    "-1",
    "null",
    "~",
    "0x10",
    "2" * 30,
]


@st.composite
def mutated(draw, text: str) -> str:
    """The text with a few random cuts, deletions and insertions of YAML syntax or random characters."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["cut", "delete", "insert", "piece"]))
        if kind == "cut":
            text = text[:at]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif kind == "insert":
            text = text[:at] + draw(st.text(max_size=20)) + text[at:]
        else:
            text = text[:at] + draw(st.sampled_from(PIECES)) + text[at:]
    return text


def _bounded(call) -> None:
    """call() returns or raises one short UserError line, and stays within 100 MB of Python allocations."""
    tracemalloc.start()
    try:
        call()
    except UserError as err:
        message = str(err)
        assert "\n" not in message and len(message) < 600, message[:300]
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 100 << 20, peak


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=300), mutated(VALID)))
def test_random_and_mutated_config_files_give_a_config_or_one_line(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    _bounded(lambda: load_config(path))


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated(STUDY), overrides=st.lists(st.text(max_size=30), max_size=2))
def test_mutated_study_files_and_overrides_give_a_plan_or_one_line(tmp_path, text, overrides):
    from lrnbn.compare import load_study

    path = tmp_path / "study.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    _bounded(lambda: load_study(path, overrides))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """One small run that stopped after its first epoch (with probes), to damage copies of."""
    from lrnbn.config import validate
    from lrnbn.lifecycle import run_training
    from tests.conftest import merged

    config = merged(TINY, {"train": {"epochs": 2}, "probes": {"enabled": True, "every": 3, "batch_size": 16}})
    run_dir = run_training(validate(config), tmp_path_factory.mktemp("origin")).run_dir
    run_dir.write_summary({**run_dir.read_summary(), "status": "interrupted"})
    return run_dir.path


FILES = ["config.yaml", "env.json", "summary.json", "metrics.jsonl", "probes.jsonl", "checkpoint.pt"]


@st.composite
def damage(draw):
    name = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["truncate", "flip", "replace"]))
    fraction = draw(st.floats(0, 1))
    junk = draw(st.binary(max_size=64))
    return name, kind, fraction, junk


def _damaged_copy(origin, target, name, kind, fraction, junk):
    shutil.copytree(origin, target)
    path = target / name
    data = bytearray(path.read_bytes())
    at = int(fraction * len(data))
    if kind == "truncate":
        data = data[:at]
    elif kind == "flip" and data:
        for i in range(at, min(at + 16, len(data))):
            data[i] ^= 0x5A
    else:
        data = bytearray(junk)
    path.write_bytes(bytes(data))
    (target / ".lock").unlink(missing_ok=True)
    return target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged=damage())
def test_random_damage_to_a_run_file_is_read_or_set_aside_with_a_reason(tmp_path_factory, stopped_run, damaged):
    run = _damaged_copy(stopped_run, tmp_path_factory.mktemp("d") / "run", *damaged)
    try:
        load_run(run)
    except DamagedRun as err:
        assert "\n" not in str(err) and len(str(err)) < 300


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged=damage())
def test_resuming_a_randomly_damaged_run_exits_with_a_code_and_at_most_one_error_line(
    tmp_path_factory, stopped_run, cli, damaged
):
    run = _damaged_copy(stopped_run, tmp_path_factory.mktemp("r") / "run", *damaged)
    result = cli("train", "--resume", run)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (damaged, result.exit_code, result.stderr[-500:])
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-500:]
