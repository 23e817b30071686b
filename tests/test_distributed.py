"""torchrun: two gloo processes on the CPU train one run that matches a one-process run, stop together, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lrnbn.config import validate
from lrnbn.errors import UserError
from lrnbn.lifecycle import resume_training, run_training
from lrnbn.rundir import ENV_FILE, RunDir
from lrnbn.trainer import Trainer
from tests.conftest import TINY, merged
from tests.test_resume import SignalAtStep, without_times

# cifar-full with LRN learns from the first epoch here and has no dropout, so two processes can match one: the
# only difference left is the order in which float sums are added. Measured: 1e-7 or less on the losses after
# 2 epochs and the same accuracies; the gap grows once training turns chaotic (2e-4 on the training loss at epoch
# 3), so the comparison stops at 2 epochs.
MATCHES = {
    "model": {"arch": "cifar-full", "width": 0.25, "norm": "lrn"},
    "train": {"epochs": 2, "lr": 0.01, "batch_size": 32},
    "data": {"synthetic_train_size": 512, "synthetic_test_size": 128},
}
# Two processes add the same float32 numbers in another order (gradient all-reduce, loss sums): measured 2e-8 here.
# At lr 0.05 this net trains chaotically and the same rounding grew to 5e-4 by epoch 2 on a Zen 4 CPU (1e-5 after
# epoch 1), so MATCHES uses lr 0.01.
LOSS_TOLERANCE = 1e-5


def torchrun(*args, processes: int = 2, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "lrnbn",
            "train",
            *map(str, args),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def only_run(root) -> RunDir:
    runs = [p.parent for p in root.rglob("summary.json")]
    assert len(runs) == 1, runs
    return RunDir(runs[0])


def test_two_gloo_processes_write_one_run_that_matches_one_process(tmp_path, write_config):
    config = write_config(MATCHES)
    code, stdout, stderr = finish(torchrun("--config", config, "--runs-dir", tmp_path / "ddp"))
    assert code == 0, stderr
    parallel = only_run(tmp_path / "ddp")
    assert stdout.count("completed:") == 1  # rank 0 alone reports
    single = run_training(validate(merged(TINY, MATCHES)), tmp_path / "single").run_dir

    assert sorted(p.name for p in parallel.path.iterdir()) == sorted(p.name for p in single.path.iterdir())
    assert parallel.read_env()["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert single.read_env()["distributed"] == {"world_size": 1, "backend": None}
    assert parallel.read_summary()["status"] == "completed"
    ours, theirs = parallel.read_metrics()[0], single.read_metrics()[0]
    assert [r["epoch"] for r in ours] == [1, 2]
    for a, b in zip(ours, theirs):
        for key in ("train_loss", "test_loss"):
            assert abs(a[key] - b[key]) <= LOSS_TOLERANCE, (key, a, b)
        assert round(a["train_acc"] * 512) == round(b["train_acc"] * 512)
        assert round(a["test_acc"] * 128) == round(b["test_acc"] * 128)
        assert a["steps"] == b["steps"] == 16 * a["epoch"]  # global batches of 32, as in one process


# alexnet has dropout, which draws from each rank's own generator: a resume must restore every rank's.
STOPPED = {
    "model": {"width": 0.125},
    "train": {"epochs": 6, "batch_size": 16},
    "data": {"synthetic_train_size": 256, "synthetic_test_size": 64},
}


def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_resume_matches_an_uninterrupted_run(
    tmp_path, write_config
):
    config = write_config(STOPPED)
    process = torchrun("--config", config, "--runs-dir", tmp_path / "stopped")
    deadline = time.time() + 120
    while not list((tmp_path / "stopped").rglob("metrics.jsonl")):  # the first epoch is done
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    finish(process)
    run = only_run(tmp_path / "stopped")
    summary = run.read_summary()
    assert summary["status"] == "interrupted" and summary["stopped_at"]["epoch"] < 6, summary

    code, _, stderr = finish(torchrun("--resume", run.path))
    assert code == 0, stderr
    code, _, stderr = finish(torchrun("--config", config, "--runs-dir", tmp_path / "whole"))
    assert code == 0, stderr
    assert run.read_summary()["status"] == "completed" and len(run.read_summary()["resumed"]) == 1
    assert without_times(run.read_metrics()[0]) == without_times(only_run(tmp_path / "whole").read_metrics()[0])


def test_a_run_is_resumed_only_by_as_many_processes_as_trained_it(tmp_path, cli):
    stopped = run_training(validate(merged(TINY, STOPPED)), tmp_path, view=SignalAtStep(epoch=2, step=3))
    env_path = stopped.run_dir.path / ENV_FILE
    env = json.loads(env_path.read_text())
    env_path.write_text(json.dumps({**env, "distributed": {"world_size": 2, "backend": "gloo"}}))
    result = cli("train", "--resume", stopped.run_dir.path)
    assert result.exit_code == 2
    assert "trained by 2 process(es) and this is 1" in result.stderr and "torchrun --nproc_per_node 2" in result.stderr
    env_path.write_text(json.dumps(env))
    assert resume_training(stopped.run_dir.path, []).summary["status"] == "completed"


def test_an_error_on_rank_0_stops_every_rank_with_its_message(tmp_path, write_config):
    config = write_config({"data": {"dataset": "cifar10", "root": str(tmp_path / "absent")}})
    code, _, stderr = finish(torchrun("--config", config, "--runs-dir", tmp_path / "runs"))
    assert code != 0
    assert f"error: CIFAR-10 not found under {tmp_path / 'absent'}" in stderr
    assert f"error (rank 1): CIFAR-10 not found under {tmp_path / 'absent'}" in stderr  # not a lost connection
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def launched(monkeypatch):
    """This process as torchrun's rank 0 of 2 (the checks below all come before it would join the group)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"train": {"batch_size": 31}}, "train.batch_size: 31 does not split evenly over 2 processes"),
        ({"model": {"sync_bn": True}}, "model.sync_bn: SyncBatchNorm runs on CUDA only, but the device is cpu"),
    ],
)
def test_torchrun_specific_checks(launched, overrides, message):
    with pytest.raises(UserError, match=message):
        Trainer.build(validate(merged(TINY, overrides)))


def test_compare_under_torchrun_is_refused(launched, cli, tmp_path):
    result = cli("compare", tmp_path / "study.yaml")
    assert result.exit_code == 2 and "lrnbn compare runs each run in one process" in result.stderr
