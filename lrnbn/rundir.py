"""The run directory: the only module that knows its file names.

RUNS_DIR/<experiment>/<YYYYmmdd-HHMMSS>-<6 hex>/
  config.yaml    the resolved config, every default filled in (loads back through the schema)
  env.json       versions, device, threads, host, git commit, dataset identity
  metrics.jsonl  one JSON object per finished epoch, each line written whole and flushed
  summary.json   status (running | completed | diverged | failed | interrupted) and final figures
  checkpoint.pt  the last checkpoint: model, optimizer, scheduler, position in the run, RNG states, metrics so far
  probes.jsonl   with probes enabled: one JSON object per probe point (see probes.py)
  conv1-filters.png  with probes enabled: the first layer's filters at the end of the run
  tensorboard/   with log.tensorboard: TensorBoard event files (a view of metrics.jsonl, see tblog.py)
  .lock          the pid of the process training the run (which holds an flock on the run directory itself)

Whole files are written atomically (temp file, fsync, rename) so a reader never sees half of one; a write the
machine refuses (a full disk, a quota, a read-only folder) leaves the previous file and ends in WriteFailed. Readers
(lrnbn/records.py) need nothing but these names and the files, so tables and plots can be rebuilt on another
machine. Under torchrun
only rank 0 writes; the other ranks hold a FollowerRunDir.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from lrnbn.errors import EXIT_BUSY, UserError, WriteFailed, writing
from lrnbn.safeyaml import one_line

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
PROBES_FILE = "probes.jsonl"
FILTERS_FILE = "conv1-filters.png"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"

STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


FINAL_STATUSES = ("completed", "diverged")  # ended: training it again would give the same result


class DamagedRun(UserError):
    """A run directory whose files cannot be read as a run: the message says which file and what is wrong."""


class RunBusy(UserError):
    """Another process holds the run's lock."""

    exit_code = EXIT_BUSY


def atomic_write(path: Path, write) -> None:
    """Write through `write(file)` into a temp file beside `path`, fsync it, and rename it over `path`, so that a
    reader sees the old file or the new one, never half of one. A refused write (a full disk) leaves the old file and
    no temp file, and raises WriteFailed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path):
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


class RunDir:
    """A run directory. Every change to it goes through three primitives (_replace, _append, _remove), so that a
    FollowerRunDir, which overrides them, writes nothing, whatever write method is added here later."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir: Path, experiment: str) -> RunDir:
        """A new, empty, uniquely named run directory."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        parent = Path(runs_dir) / experiment
        try:
            parent.mkdir(parents=True, exist_ok=True)
            path = parent / f"{stamp}-{secrets.token_hex(3)}"
            path.mkdir()
        except OSError as exc:
            raise UserError(f"cannot create a run directory under {runs_dir}: {exc.strerror or exc}") from None
        return cls(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    # The write primitives -------------------------------------------------------------------------------------

    def _replace(self, name: str, write) -> None:
        """Replace a whole file atomically; `write(file)` writes its bytes."""
        with self.writing(name):
            atomic_write(self.path / name, write)

    def _append(self, name: str, text: str, durable: bool) -> None:
        """Append whole lines in one write call, flushed (and synced when durable): a crash leaves at most a
        truncated last line."""
        with self.writing(name), open(self.path / name, "a") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())

    @contextmanager
    def writing(self, name: str):
        """A refused write of one of the run's files ends in WriteFailed (errors.writing), saying how to go on: once
        the run has its config and summary it resumes where its last checkpoint left it; before, it starts again."""
        try:
            with writing(self.path / name):
                yield
        except WriteFailed as failure:
            if not self.is_run():
                raise
            raise failure.then_do(f"`lrnbn train --resume {self.path}`") from None

    def _remove(self, names: tuple[str, ...], folders: tuple[str, ...] = ()) -> None:
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        for folder in folders:
            shutil.rmtree(self.path / folder, ignore_errors=True)

    # Writing -------------------------------------------------------------------------------------------------

    def write_config(self, config_yaml: str) -> None:
        self._replace(CONFIG_FILE, lambda f: f.write(config_yaml.encode()))

    def write_env(self, env: dict) -> None:
        self._replace(ENV_FILE, lambda f: f.write(_json(env).encode()))

    def write_summary(self, summary: dict) -> None:
        assert summary.get("status") in STATUSES, summary.get("status")
        self._replace(SUMMARY_FILE, lambda f: f.write(_json(summary).encode()))

    def append_metrics(self, record: dict) -> None:
        self._append(METRICS_FILE, _jsonl([record]), durable=True)

    def append_probe(self, record: dict) -> None:
        self._append(PROBES_FILE, _jsonl([record]), durable=False)

    def rewrite_probes(self, until_step: int) -> None:
        """Keep the probe records up to a checkpoint's step: the resumed run writes the later ones again."""
        if (self.path / PROBES_FILE).exists():
            try:
                records = self.read_probes()
                kept = [r for r in records if r["step"] <= until_step]
            except (ValueError, KeyError, TypeError) as exc:  # ValueError: bad JSON or undecodable bytes
                raise UserError(
                    f"{self.path / PROBES_FILE} is damaged ({one_line(exc)}); delete it to resume "
                    f"without the earlier probe records"
                ) from None
            self._replace(PROBES_FILE, lambda f: f.write(_jsonl(kept).encode()))

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Replace metrics.jsonl by exactly these records (on resume: the checkpoint's, so none is lost or doubled)."""
        self._replace(METRICS_FILE, lambda f: f.write(_jsonl(records).encode()))

    def write_filter_grid(self, draw) -> None:
        """conv1-filters.png; `draw(file)` writes the PNG (probes.save_filter_grid)."""
        self._replace(FILTERS_FILE, draw)

    def save_checkpoint(self, state: dict) -> None:
        import torch

        self._replace(CHECKPOINT_FILE, lambda f: torch.save(state, f))

    def clear(self) -> None:
        """Remove a previous attempt's files (the lock stays: its holder is clearing)."""
        self._remove(
            (CONFIG_FILE, ENV_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_FILE, PROBES_FILE, FILTERS_FILE),
            (TENSORBOARD_DIR,),
        )

    @contextmanager
    def lock(self):
        """Hold the run's lock for the duration; a second holder gets a RunBusy error instead of waiting.

        The lock is an flock on the run directory itself (an open descriptor), so deleting or replacing any file in
        it does not release it; .lock only tells the holder's pid to whoever is refused."""
        try:
            directory = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UserError(f"cannot open the run directory {self.path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = (self.path / LOCK_FILE).read_text().strip() if (self.path / LOCK_FILE).is_file() else ""
                raise RunBusy(f"{self.path} is being trained by another process (pid {holder or '?'})") from None
            with self.writing(LOCK_FILE):
                (self.path / LOCK_FILE).write_text(str(os.getpid()))
            yield
        finally:
            os.close(directory)

    # Reading -------------------------------------------------------------------------------------------------

    def load_checkpoint(self, map_location) -> dict | None:
        import torch

        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # truncated, empty or foreign bytes fail in many ways inside torch.load
            raise UserError(
                f"{path} is damaged ({exc.__class__.__name__}); delete it to restart the run's epoch from "
                f"the beginning of the run, or delete the run directory"
            ) from None

    def read_probes(self) -> list[dict]:
        path = self.path / PROBES_FILE
        if not path.exists():
            return []
        lines = path.read_text().split("\n")
        # As for metrics: only a last line without its newline can be cut short; it is dropped.
        return [json.loads(line) for line in lines[:-1] if line.strip()]

    def read_config_text(self) -> str:
        return (self.path / CONFIG_FILE).read_text()

    def read_env(self) -> dict:
        return self._read_mapping(ENV_FILE)

    def read_summary(self) -> dict:
        summary = self._read_mapping(SUMMARY_FILE)
        if summary.get("status") not in STATUSES:
            raise DamagedRun(
                f"{self.path / SUMMARY_FILE} is damaged (no valid status); delete the run directory to redo the run"
            )
        return summary

    def _read_mapping(self, name: str) -> dict:
        try:
            value = json.loads(_read_text(self.path / name))
        except (ValueError, OSError) as exc:  # ValueError covers bad JSON and undecodable bytes
            raise DamagedRun(
                f"{self.path / name} is damaged ({one_line(exc)}); delete the run directory to redo the run"
            ) from None
        if not isinstance(value, dict):
            raise DamagedRun(f"{self.path / name} is damaged (not a mapping); delete the run directory to redo the run")
        return value

    def read_metrics(self) -> tuple[list[dict], bool]:
        """The per-epoch records, and whether a truncated last line was dropped."""
        path = self.path / METRICS_FILE
        if not path.exists():
            return [], False
        lines = path.read_text().split("\n")
        records, truncated = [], False
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # Every whole line ends with a newline, so only the final piece can have been cut short by a crash.
                if number != len(lines):
                    raise ValueError(f"{path}: line {number} is not valid JSON") from None
                truncated = True
        return records, truncated

    def is_run(self) -> bool:
        return (self.path / CONFIG_FILE).is_file() and (self.path / SUMMARY_FILE).is_file()


class FollowerRunDir(RunDir):
    """A run directory as ranks other than 0 of a torchrun run see it: they read it (to resume) and write nothing,
    so that one process owns every file."""

    def _replace(self, name: str, write) -> None:
        pass

    def _append(self, name: str, text: str, durable: bool) -> None:
        pass

    def _remove(self, names: tuple[str, ...], folders: tuple[str, ...] = ()) -> None:
        pass

    @contextmanager
    def lock(self):
        yield  # rank 0 holds the run's lock for the whole torchrun job


MAX_RUN_FILE_BYTES = 64 << 20  # far above any run's records (a 10,000-epoch metrics.jsonl is a few MB)


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_RUN_FILE_BYTES:
        raise DamagedRun(f"{path.name} is larger than {MAX_RUN_FILE_BYTES >> 20} MB")
    return path.read_text()
