import subprocess
import sys

from lrnbn.data import CACHE_NAME
from tests.test_data import make_image_tree, tar_of


def test_train_through_the_cli_writes_one_run_and_prints_its_path(cli, tmp_path, write_config):
    result = cli(
        "train",
        "--config",
        write_config(),
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "cli-run",
        "--set",
        "train.epochs=1",
    )
    assert result.exit_code == 0, result.output
    runs = list((tmp_path / "runs" / "cli-run").iterdir())
    assert len(runs) == 1 and f"completed: {runs[0]}" in result.stdout
    assert "test acc" in result.stderr  # the epoch table


def test_data_import_from_an_archive_then_train_on_it(cli, tmp_path, write_config):
    make_image_tree(tmp_path / "src", per_class=(12, 4))
    archive = tar_of(tmp_path / "src", tmp_path / "tiny.tar.gz")
    result = cli("data", "import", archive, "--root", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert '"train_size": 36' in result.stdout and (tmp_path / "data" / CACHE_NAME).exists()
    config = write_config(
        {
            "data": {"dataset": "imagefolder", "root": str(tmp_path / "data")},
            "model": {"arch": "cifar-full"},
            "train": {"epochs": 1, "batch_size": 8},
        }
    )
    result = cli("train", "--config", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output


def test_data_import_of_a_missing_path_is_one_line(cli, tmp_path):
    result = cli("data", "import", tmp_path / "nope.tar.gz", "--root", tmp_path / "data")
    assert (
        result.exit_code == 2 and result.stderr.strip() == f"error: {tmp_path / 'nope.tar.gz'}: no such file or folder"
    )
    assert not (tmp_path / "data").exists()


def test_python_dash_m_lrnbn_shows_train_help():
    result = subprocess.run([sys.executable, "-m", "lrnbn", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--config" in result.stdout and "--set" in result.stdout


def test_version_prints_the_packages_version(cli):
    from pathlib import Path

    import tomllib

    declared = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["version"]
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"lrnbn {declared}"


def test_the_gpu_check_script_says_it_needs_a_gpu_on_a_machine_without_one():
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is present: run scripts/gpu_check.py itself")
    from pathlib import Path

    script = Path(__file__).parent.parent / "scripts" / "gpu_check.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "no CUDA device: this script checks lrnbn's GPU paths and needs one"
