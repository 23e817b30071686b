"""The read side never imports torch: `lrnbn report`, `lrnbn config reference` and `lrnbn compare --dry-run` each run
in a fresh interpreter, which says at exit whether torch was loaded (this test process has it loaded already)."""

import subprocess
import sys

import pytest
import yaml

from tests.rundirs import make_run

# Runs one lrnbn command in-process, then prints its exit code and whether torch is in sys.modules.
PROBE = """
import sys
from typer.testing import CliRunner
from lrnbn.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(result.output, result.exception or "")
print(f"exit {result.exit_code} torch {'torch' in sys.modules}")
"""


def probe(*args, cwd) -> tuple[str, str]:
    """(the command's output, 'exit CODE torch True|False')."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    *output, verdict = done.stdout.strip().splitlines()
    return "\n".join(output), verdict


@pytest.fixture
def study(tmp_path):
    """A two-variant study, its bn run already completed on disk, and one more study of two seeds per norm."""
    spec = {"base": {}, "variants": [{"name": n, "set": {"model.norm": n}} for n in ("bn", "lrn")]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    make_run(tmp_path / "runs", "s", "bn,seed=0", {"model.norm": "bn"}, [0.3, 0.5])
    for seed in (0, 1):
        for norm in ("bn", "lrn"):
            make_run(tmp_path / "runs", "pair", f"{norm}-{seed}", {"model.norm": norm, "experiment.seed": seed}, [0.4])
    return tmp_path


@pytest.mark.parametrize(
    "args,shown",
    [
        (["config", "reference"], "| `model.lrn.impl` |"),
        (["compare", "s.yaml", "--dry-run", "--runs-dir", "runs"], "bn,seed=0  (completed)"),
        (["report", "runs", "--out", "report"], "report: report/report.md"),
    ],
    ids=["config reference", "compare --dry-run", "report"],
)
def test_read_side_commands_never_import_torch(study, args, shown):
    output, verdict = probe(*args, cwd=study)
    assert shown in output
    assert verdict == "exit 0 torch False", output


def test_the_probe_sees_torch_where_a_command_loads_it(study):
    # --devices checks the GPUs through torch: the same probe must then report it, or the test above proves nothing.
    _, verdict = probe("compare", "s.yaml", "--dry-run", "--runs-dir", "runs", "--devices", "cuda:0", cwd=study)
    assert verdict.endswith("torch True")
