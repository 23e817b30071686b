"""Shared helpers: tiny configs on synthetic data, and the CLI driven through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lrnbn.cli import app

# Small enough for a 2-core CI machine, big enough to learn: see test_train.py for what each test needs.
TINY = {
    "experiment": {"name": "tiny", "seed": 0},
    "data": {"dataset": "synthetic", "synthetic_train_size": 256, "synthetic_test_size": 128},
    "model": {"arch": "alexnet", "width": 0.125, "norm": "bn"},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.02, "device": "cpu", "threads": 1},
}


def merged(base: dict, overrides: dict) -> dict:
    result = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(result.get(section), dict):
            result[section] = merged(result[section], values)
        else:
            result[section] = values
    return result


@pytest.fixture
def write_config(tmp_path):
    """write_config({"train": {"epochs": 1}}) -> path of a YAML file: TINY with those keys replaced."""

    def write(overrides: dict | None = None, name: str = "config.yaml", base: dict = TINY) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(merged(base, overrides or {})))
        return path

    return write


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# Property tests explore at random on a developer's machine and replay a fixed sequence in CI (CI=true), so that a
# CI run is reproducible; a failure found locally is saved in .hypothesis/ and replayed first.
def _hypothesis_profiles() -> None:
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profiles()
