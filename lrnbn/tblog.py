"""TensorBoard logging (log.tensorboard): each epoch's metrics as scalars, the config as text, in RUN_DIR/tensorboard/.

metrics.jsonl stays the record; these event files are a view of it for people who watch runs in TensorBoard.
The x axis is the epoch. A resumed run opens its writer with purge_step 1 and writes the checkpoint's epochs
again: TensorBoard then drops what the earlier session wrote, so the curves neither overlap nor miss an epoch
that the earlier session finished after its last checkpoint.
"""

from __future__ import annotations

import importlib
import threading

from lrnbn.errors import UserError
from lrnbn.rundir import TENSORBOARD_DIR, RunDir

# metrics.jsonl field -> TensorBoard tag
TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "lr": "lr",
    "epoch_time_s": "time/epoch_s",
    "eval_time_s": "time/eval_s",
    "images_per_s": "throughput/images_per_s",
}


def check_installed() -> None:
    try:
        importlib.import_module("tensorboard")  # torch.utils.tensorboard writes through it
    except ImportError:
        raise UserError(
            "log.tensorboard: the tensorboard package is not installed; pip install -e '.[tensorboard]' "
            "(or pip install tensorboard), or set log.tensorboard: false"
        ) from None


class EpochLog:
    """The event files of one session of a run, in RUN_DIR/tensorboard/. The writer writes from a thread of its own
    and raises a refused write at its next call, which run.writing turns into one line (a full disk)."""

    def __init__(self, run: RunDir, config_yaml: str, records: list[dict], resumed: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.excepthook = threading.excepthook
        threading.excepthook = self._quiet_writer_thread
        try:
            with self._writing():
                self.writer = SummaryWriter(str(run.tensorboard_dir), purge_step=1 if resumed else None)
                if not resumed:
                    self.writer.add_text("config", f"```yaml\n{config_yaml}```", global_step=0)
            for record in records:
                self.add(record)
        except BaseException:
            threading.excepthook = self.excepthook
            raise

    def _writing(self):
        return self.run.writing(TENSORBOARD_DIR)

    def add(self, record: dict) -> None:
        with self._writing():
            for field, tag in TAGS.items():
                self.writer.add_scalar(tag, record[field], global_step=record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        try:
            with self._writing():
                self.writer.close()
        finally:
            threading.excepthook = self.excepthook

    def _quiet_writer_thread(self, args) -> None:
        """The writer's thread also re-raises a refused write as it ends, and Python would print its traceback:
        the next call in the main thread reports that write in one line instead."""
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            self.excepthook(args)
