"""Nothing lost, nothing doubled: kills at random moments, resumed, end where an uninterrupted run ends."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lrnbn.config import validate
from lrnbn.errors import UserError
from lrnbn.lifecycle import resume_training, run_training
from lrnbn.rundir import METRICS_FILE, RunDir
from lrnbn.views import NullView
from tests.conftest import TINY, merged
from tests.test_train import MACHINE_FIGURES

# Dropout (alexnet) and augmentation both draw random numbers, so an RNG restored wrongly shows in the metrics.
RESUMED = {
    "model": {"width": 0.125},
    "train": {"epochs": 4, "batch_size": 16},
    "data": {"synthetic_train_size": 768, "synthetic_test_size": 64},
}
KILLS = int(os.environ.get("LRNBN_TEST_KILLS", "3"))  # the closing note's figure used 5


def without_times(records):
    return [{k: v for k, v in r.items() if k not in MACHINE_FIGURES} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = run_training(validate(merged(TINY, RESUMED)), tmp_path_factory.mktemp("reference")).run_dir
    return without_times(run.read_metrics()[0])


def _start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "lrnbn", "train", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def test_sigkill_at_random_moments_then_resume_gives_identical_metrics(tmp_path, write_config, reference):
    rng = random.Random(7)
    process = _start(["--config", write_config(RESUMED), "--runs-dir", tmp_path / "runs"])
    _wait_for(lambda: list((tmp_path / "runs").rglob("summary.json")))
    run_dir = next((tmp_path / "runs").rglob("summary.json")).parent
    kills = 0
    while kills < KILLS:
        time.sleep(rng.uniform(0.0, 3.0))  # about 4 s of training in all, after a process's start-up
        if process.poll() is not None:
            break  # it finished before this kill
        process.send_signal(signal.SIGKILL)
        process.wait()
        if RunDir(run_dir).read_summary()["status"] == "completed":
            break  # it had finished training and was only exiting: nothing left to resume
        kills += 1
        process = _start(["--resume", run_dir])
        # Wait until the resumed process has restored its checkpoint and recorded the resume.
        _wait_for(
            lambda k=kills, p=process: (
                len(RunDir(run_dir).read_summary().get("resumed", [])) == k or p.poll() is not None
            )
        )
    _, stderr = process.communicate(timeout=300)
    # 0, or -SIGKILL when the last kill caught a process that had completed the run and was exiting.
    assert process.returncode in (0, -signal.SIGKILL), stderr.decode()
    summary = RunDir(run_dir).read_summary()
    assert kills >= 1 and summary["status"] == "completed" and len(summary["resumed"]) == kills
    records, truncated = RunDir(run_dir).read_metrics()
    assert not truncated
    assert without_times(records) == reference
    print(f"{kills} kills at {[(r['epoch'], r['step']) for r in summary['resumed']]} (epoch, step), metrics identical")


class SignalAtStep(NullView):
    """Sends SIGTERM to this very process when a chosen step of a chosen epoch is reported."""

    def __init__(self, epoch: int, step: int):
        self.target, self.epoch = (epoch, step), 0

    def epoch_started(self, epoch, epochs, steps):
        self.epoch = epoch

    def step(self, done, loss, acc, images_per_s):
        if (self.epoch, done) == self.target:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_mid_epoch_checkpoints_at_that_step_and_resume_matches(tmp_path, reference):
    stopped = run_training(validate(merged(TINY, RESUMED)), tmp_path, view=SignalAtStep(epoch=2, step=10))
    assert stopped.exit_code == 130
    assert stopped.summary["status"] == "interrupted" and stopped.summary["stopped_at"] == {"epoch": 2, "step": 10}
    assert len(stopped.run_dir.read_metrics()[0]) == 1
    result = resume_training(stopped.run_dir.path, [])
    assert result.summary["status"] == "completed"
    assert result.summary["resumed"] == [{"at": result.summary["resumed"][0]["at"], "epoch": 2, "step": 10}]
    assert without_times(result.run_dir.read_metrics()[0]) == reference


def test_resume_refuses_changes_to_the_experiment_but_allows_moving_the_data(tmp_path, write_config, cli):
    run_dir = run_training(validate(merged(TINY, {"train": {"epochs": 1}})), tmp_path).run_dir
    refused = cli("train", "--resume", run_dir.path, "--set", "train.lr=0.5")
    assert refused.exit_code == 2
    assert refused.stderr.strip().startswith(
        f"error: {run_dir.path}: the run was made with train.lr = 0.02, not 0.5; a run keeps its config"
    )
    assert len(refused.stderr.strip().splitlines()) == 1
    allowed = cli("train", "--resume", run_dir.path, "--set", "train.eval_batch_size=7")
    assert allowed.exit_code == 0, allowed.output  # completed already: nothing to do, nothing changed
    assert run_dir.read_summary()["epochs_done"] == 1


def test_resume_of_something_that_is_not_a_run(tmp_path, cli, write_config):
    result = cli("train", "--resume", tmp_path)
    assert result.exit_code == 2 and "is not a run directory" in result.stderr
    result = cli("train", "--resume", tmp_path, "--config", write_config())
    assert result.exit_code == 2 and "drop --config" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_run_held_by_another_process_is_not_trained_twice(tmp_path):
    run_dir = run_training(validate(merged(TINY, {"train": {"epochs": 1}})), tmp_path).run_dir
    summary = run_dir.read_summary()
    run_dir.write_summary({**summary, "status": "interrupted"})
    with run_dir.lock():
        with pytest.raises(UserError, match="being trained by another process"):
            resume_training(run_dir.path, [])
        (run_dir.path / ".lock").unlink()  # deleting the pid file does not release the lock: it is on the folder
        with pytest.raises(UserError, match=r"being trained by another process \(pid \?\)"):
            resume_training(run_dir.path, [])


def test_readers_tolerate_a_truncated_last_line_and_say_so(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.append_metrics({"epoch": 1, "test_acc": 0.5})
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"epoch": 2, "test_a')
    assert run_dir.read_metrics() == ([{"epoch": 1, "test_acc": 0.5}], True)
    (tmp_path / METRICS_FILE).write_text('{"epoch": 1\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        run_dir.read_metrics()
