"""Faults from the machine, not the user: a write refused (a full disk, a quota, an I/O error, a folder turned
read-only) ends in one line and exit 74, keeps what was finished, and a resume after the fault is cleared ends where
an uninterrupted run ends.

How each fault is simulated: CI runs as root, for whom a read-only chmod stops nothing, and a small tmpfs needs
mount rights; so every test monkeypatches the `open` that lrnbn's writes go through (rundir's, which every run file,
the import cache and report.md use) to hand back a file whose write raises the OSError the kernel would raise.
TensorBoard's and matplotlib's own writes are refused the same way at their lowest Python call.
"""

import errno
import os
from pathlib import Path

import pytest

import lrnbn.rundir
from lrnbn.config import validate
from lrnbn.data import CACHE_NAME
from lrnbn.errors import EXIT_WRITE_FAILED
from lrnbn.lifecycle import run_training
from lrnbn.rundir import RunDir
from tests.conftest import TINY
from tests.rundirs import make_run
from tests.test_data import make_image_tree
from tests.test_resume import without_times

PROBED = {"probes": {"enabled": True, "every": 5, "batch_size": 32}}
STRERROR = {code: os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)}


class _RefusedFile:
    """An open file whose writes raise `cause`, as writes to a full (or read-only, or failing) disk do."""

    def __init__(self, file, cause: int):
        self.file, self.cause = file, cause

    def write(self, data):
        raise OSError(self.cause, os.strerror(self.cause))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def refuse_writes(monkeypatch, name: str | None, after: int = 0, cause: int = errno.ENOSPC, whole_disk=False):
    """Refuse writes to the file called `name` (its atomic write's temp file included) once `after` of them have
    gone through; with `whole_disk`, every write from then on is refused too (a disk that stays full)."""
    real_open = open
    seen = {"writes": 0, "refusing": False}

    def open_(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        if "r" in mode:
            return opened
        if Path(file).name in (name, f".{name}.tmp"):
            seen["writes"] += 1
            seen["refusing"] = seen["refusing"] or seen["writes"] > after
        if seen["refusing"] and (whole_disk or Path(file).name in (name, f".{name}.tmp")):
            return _RefusedFile(opened, cause)
        return opened

    monkeypatch.setattr(lrnbn.rundir, "open", open_, raising=False)


def _one_line_exit_74(result, line: str) -> None:
    """The command ended with exit 74 and this line, after nothing but its progress lines (a run's epochs)."""
    assert result.exit_code == EXIT_WRITE_FAILED, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == line and "Traceback" not in result.output, result.stderr[-800:]
    assert [text for text in lines if not text.startswith(("tiny -> ", "  alexnet", "epoch "))] == [line]


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run's metrics, times aside: what every faulted run must end with once resumed."""
    run = run_training(validate(TINY), tmp_path_factory.mktemp("reference")).run_dir
    return without_times(run.read_metrics()[0])


def _train(cli, write_config, runs: Path, overrides: dict | None = None):
    """`lrnbn train` of TINY (with `overrides`) in `runs`: its result and the one run directory it made."""
    result = cli("train", "--config", write_config(overrides), "--runs-dir", runs)
    (run_dir,) = (runs / TINY["experiment"]["name"]).iterdir()
    return result, RunDir(run_dir)


def _resume_matches(cli, run: RunDir, reference) -> None:
    resumed = cli("train", "--resume", run.path)
    assert resumed.exit_code == 0, resumed.output
    assert run.read_summary()["status"] == "completed"
    assert without_times(run.read_metrics()[0]) == reference


# A refused write in the middle of a run: the name of the file, when it is refused (after how many writes of it
# went through), the cause, the probes setting that makes the file exist, and the epochs that must be kept.
MID_RUN = [
    ("checkpoint.pt", 1, errno.ENOSPC, {}, 1),
    ("metrics.jsonl", 1, errno.EDQUOT, {}, 1),
    ("probes.jsonl", 1, errno.EIO, PROBED, 1),
    ("conv1-filters.png", 0, errno.EROFS, PROBED, 2),
]
REMEDY = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space (or raise the quota)",
    errno.EIO: "check the disk and the path",
    errno.EROFS: "make it writable",
}


@pytest.mark.parametrize("name,after,cause,overrides,kept", MID_RUN, ids=[case[0] for case in MID_RUN])
def test_a_refused_write_mid_run_is_one_line_keeps_the_finished_epochs_and_resumes_exactly(
    cli, write_config, tmp_path, monkeypatch, reference, name, after, cause, overrides, kept
):
    with monkeypatch.context() as patch:
        refuse_writes(patch, name, after, cause)
        result, run = _train(cli, write_config, tmp_path / "runs", overrides)
    _one_line_exit_74(
        result,
        f"error: cannot write {run.path / name}: {STRERROR[cause]}; {REMEDY[cause]}, then "
        f"`lrnbn train --resume {run.path}`",
    )
    summary = run.read_summary()
    assert summary["status"] == "interrupted" and summary["epochs_done"] == kept
    assert summary["error"].startswith(f"WriteFailed: cannot write {run.path / name}: {STRERROR[cause]}")
    assert [r["epoch"] for r in run.read_metrics()[0]] == list(range(1, kept + 1))
    _no_temp_files(run.path)
    _resume_matches(cli, run, reference)


def test_a_disk_that_stays_full_leaves_the_last_summary_as_it_was(cli, write_config, tmp_path, monkeypatch, reference):
    with monkeypatch.context() as patch:
        refuse_writes(patch, "checkpoint.pt", after=1, whole_disk=True)  # epoch 2's checkpoint, and all after it
        result, run = _train(cli, write_config, tmp_path / "runs")
    _one_line_exit_74(
        result,
        f"error: cannot write {run.path / 'checkpoint.pt'}: {STRERROR[errno.ENOSPC]}; free space, then "
        f"`lrnbn train --resume {run.path}`",
    )
    summary = run.read_summary()  # the summary written when the run started: the failed rewrite left it whole
    assert summary["status"] == "running" and "error" not in summary and summary["epochs_done"] == 0
    assert [r["epoch"] for r in run.read_metrics()[0]] == [1]
    _no_temp_files(run.path)
    _resume_matches(cli, run, reference)


def test_a_refused_final_summary_keeps_every_epoch_and_a_resume_completes_it(
    cli, write_config, tmp_path, monkeypatch, reference
):
    with monkeypatch.context() as patch:
        refuse_writes(patch, "summary.json", after=1)  # the start's summary goes through, the final one does not
        result, run = _train(cli, write_config, tmp_path / "runs")
    _one_line_exit_74(
        result,
        f"error: cannot write {run.path / 'summary.json'}: {STRERROR[errno.ENOSPC]}; free space, then "
        f"`lrnbn train --resume {run.path}`",
    )
    assert run.read_summary()["status"] == "running"
    assert without_times(run.read_metrics()[0]) == reference
    _no_temp_files(run.path)
    _resume_matches(cli, run, reference)


@pytest.mark.parametrize("name", ["config.yaml", "env.json", "summary.json"])
def test_a_write_refused_before_the_run_has_its_summary_says_to_start_again(
    cli, write_config, tmp_path, monkeypatch, reference, name
):
    with monkeypatch.context() as patch:
        refuse_writes(patch, name, cause=errno.EROFS)
        result, run = _train(cli, write_config, tmp_path / "runs")
    _one_line_exit_74(
        result,
        f"error: cannot write {run.path / name}: {STRERROR[errno.EROFS]}; make it writable, then run the command again",
    )
    assert not run.is_run() and not (run.path / "checkpoint.pt").exists()
    _no_temp_files(run.path)
    again, again_run = _train(cli, write_config, tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert without_times(again_run.read_metrics()[0]) == reference


def test_a_refused_rewrite_on_resume_is_one_line_and_the_next_resume_still_matches(
    cli, write_config, tmp_path, monkeypatch, reference
):
    with monkeypatch.context() as patch:
        refuse_writes(patch, "checkpoint.pt", after=1)
        _, run = _train(cli, write_config, tmp_path / "runs")
    with monkeypatch.context() as patch:
        refuse_writes(patch, "metrics.jsonl")  # resume rewrites it from the checkpoint first
        result = cli("train", "--resume", run.path)
    _one_line_exit_74(
        result,
        f"error: cannot write {run.path / 'metrics.jsonl'}: {STRERROR[errno.ENOSPC]}; free space, then "
        f"`lrnbn train --resume {run.path}`",
    )
    assert [r["epoch"] for r in run.read_metrics()[0]] == [1]
    _resume_matches(cli, run, reference)


def test_a_refused_lock_file_is_one_line(cli, write_config, tmp_path, monkeypatch):
    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == ".lock":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    result, run = _train(cli, write_config, tmp_path / "runs")
    _one_line_exit_74(
        result,
        f"error: cannot write {run.path / '.lock'}: {STRERROR[errno.ENOSPC]}; free space, then run the command again",
    )
    assert list(run.path.iterdir()) == []  # refused before anything of the run was written


def test_a_refused_tensorboard_write_is_one_line_and_resumes_exactly(
    cli, write_config, tmp_path, monkeypatch, reference
):
    from tensorboard.summary.writer.record_writer import RecordWriter

    real_write = RecordWriter.write
    writes = {"count": 0}

    def write(self, data):
        writes["count"] += 1
        if writes["count"] > 3:  # the header event, the config, and some scalars of epoch 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    with monkeypatch.context() as patch:
        patch.setattr(RecordWriter, "write", write)
        result, run = _train(cli, write_config, tmp_path / "runs", {"log": {"tensorboard": True}})
    _one_line_exit_74(
        result,
        f"error: cannot write {run.tensorboard_dir}: {STRERROR[errno.ENOSPC]}; free space, then "
        f"`lrnbn train --resume {run.path}`",
    )
    assert run.read_summary()["status"] == "interrupted"
    _resume_matches(cli, run, reference)


def test_a_refused_import_cache_is_one_line_and_leaves_nothing_behind(cli, tmp_path, monkeypatch):
    make_image_tree(tmp_path / "src")
    with monkeypatch.context() as patch:
        refuse_writes(patch, CACHE_NAME)
        result = cli("data", "import", tmp_path / "src", "--root", tmp_path / "cache")
    _one_line_exit_74(
        result,
        f"error: cannot write {tmp_path / 'cache' / CACHE_NAME}: {STRERROR[errno.ENOSPC]}; free space, then run the "
        f"command again",
    )
    assert list((tmp_path / "cache").iterdir()) == []
    assert cli("data", "import", tmp_path / "src", "--root", tmp_path / "cache").exit_code == 0
    assert (tmp_path / "cache" / CACHE_NAME).is_file()


def test_a_refused_report_file_is_one_line(cli, tmp_path, monkeypatch):
    make_run(tmp_path / "runs", "one", "a", {"model.norm": "bn"}, [0.2, 0.4, 0.6])
    with monkeypatch.context() as patch:
        refuse_writes(patch, "report.md")
        result = cli("report", tmp_path / "runs", "--out", tmp_path / "out")
    _one_line_exit_74(
        result,
        f"error: cannot write {tmp_path / 'out' / 'report.md'}: {STRERROR[errno.ENOSPC]}; free space, then run the "
        f"command again",
    )
    assert not (tmp_path / "out" / "report.md").exists()
    _no_temp_files(tmp_path / "out")


def test_a_refused_report_plot_is_one_line_naming_the_plot(cli, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    make_run(tmp_path / "runs", "one", "a", {"model.norm": "bn"}, [0.2, 0.4, 0.6])

    def savefig(self, *args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(Figure, "savefig", savefig)
    result = cli("report", tmp_path / "runs", "--out", tmp_path / "out")
    _one_line_exit_74(
        result,
        f"error: cannot write {tmp_path / 'out' / 'one-accuracy.png'}: {STRERROR[errno.EDQUOT]}; free space (or raise "
        f"the quota), then run the command again",
    )
    assert not (tmp_path / "out" / "report.md").exists()
