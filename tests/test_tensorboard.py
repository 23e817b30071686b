"""log.tensorboard: event files with metrics.jsonl's numbers, each epoch once after a resume; an error without it."""

import shutil
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the test extra installs it

from lrnbn.config import validate
from lrnbn.lifecycle import resume_training, run_training
from lrnbn.tblog import TAGS
from tests.conftest import TINY, merged
from tests.test_resume import SignalAtStep

LOGGED = {
    "model": {"arch": "cifar-full", "width": 0.25},
    "train": {"epochs": 3, "batch_size": 16},
    "data": {"synthetic_train_size": 256, "synthetic_test_size": 64},
    "log": {"tensorboard": True},
}


def board(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir.tensorboard_dir))
    accumulator.Reload()
    return accumulator


def test_scalars_equal_metrics_and_a_resume_from_an_older_checkpoint_leaves_each_epoch_once(tmp_path):
    stopped = run_training(validate(merged(TINY, LOGGED)), tmp_path, view=SignalAtStep(epoch=2, step=5))
    run_dir = stopped.run_dir
    assert [e.step for e in board(run_dir).Scalars("accuracy/test")] == [1]
    older = tmp_path / "older"
    older.mkdir()
    for name in ("checkpoint.pt", "summary.json"):
        shutil.copy(run_dir.path / name, older / name)
    assert resume_training(run_dir.path, []).summary["status"] == "completed"
    # Back to the checkpoint of epoch 2, step 5, with epochs 2 and 3 already in the event files: what a crash
    # between an epoch's events and its checkpoint leaves. Without purge_step, TensorBoard would show them twice.
    for name in ("checkpoint.pt", "summary.json"):
        shutil.copy(older / name, run_dir.path / name)
    assert resume_training(run_dir.path, []).summary["status"] == "completed"

    records = run_dir.read_metrics()[0]
    accumulator = board(run_dir)
    assert len(list(run_dir.tensorboard_dir.iterdir())) == 3  # one event file per session
    for field, tag in TAGS.items():
        scalars = accumulator.Scalars(tag)
        assert [e.step for e in scalars] == [1, 2, 3], tag
        assert [e.value for e in scalars] == pytest.approx([r[field] for r in records], rel=1e-6), tag
    texts = accumulator.Tensors("config/text_summary")
    assert len(texts) == 1 and b"tensorboard: true" in texts[0].tensor_proto.string_val[0]


def test_without_tensorboard_installed_the_key_is_a_clear_error(tmp_path, cli, write_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what `import tensorboard` meets when it is absent
    result = cli("train", "--config", write_config(LOGGED), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: log.tensorboard: the tensorboard package is not installed; "
        "pip install -e '.[tensorboard]' (or pip install tensorboard), or set "
        "log.tensorboard: false"
    )
    assert not (tmp_path / "runs").exists()
