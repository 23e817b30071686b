"""What a person sees: a Rich progress bar per epoch and a table of epochs at the end of a run; for a study, an
overall bar (runs done / total, time left) above each running run's own."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lrnbn.rundir import METRICS_FILE, RunDir
from lrnbn.views import NullView, RunView


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
    )


def wide_console(stderr: bool = False) -> Console:
    """A terminal's own width; else (a log file, a pipe) wide enough not to fold tables and progress lines."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=200)


def print_table(console: Console, rows: list[dict], title: str) -> None:
    if not rows:
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


class RichView:
    """A RunView (views.py) that shows one run. Alone, it owns its progress display and ends with a table of epochs;
    inside a study (`progress` given) it adds its bar to the study's display and removes it when the run ends."""

    def __init__(self, console: Console | None = None, progress: Progress | None = None, label: str = ""):
        self.console = console or wide_console(stderr=True)
        self.progress, self.shared, self.label = progress, progress is not None, label
        self.task = None

    def start(self, run_dir: RunDir, config, dataset, device) -> None:
        if not self.shared:
            self.console.print(
                f"[bold]{config.experiment.name}[/] -> {run_dir.path}\n"
                f"  {config.model.arch} width {config.model.width} norm {config.model.norm} | {dataset.label}: "
                f"{len(dataset.train)} train / {len(dataset.test)} test | device {device}"
            )

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.progress is None:
            self.progress = _progress(self.console)
            self.progress.start()
        if self.shared and self.task is not None:
            self.progress.remove_task(self.task)  # in a study, only the current epoch's bar stays
        self.task = self.progress.add_task(f"{self.label} epoch {epoch}/{epochs}".strip(), total=steps, stats="")

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        self.progress.update(
            self.task, completed=done, stats=f"loss {loss:.3f} acc {100 * acc:.1f}% {images_per_s:.0f} img/s"
        )

    def epoch_done(self, record: dict) -> None:
        stats = (
            f"loss {record['train_loss']:.3f} acc {100 * record['train_acc']:.1f}% "
            f"{record['images_per_s']:.0f} img/s | test acc {100 * record['test_acc']:.1f}%"
        )
        self.progress.update(self.task, stats=stats)
        if not self.console.is_terminal:  # a log file gets no live bars: leave one line per epoch instead
            self.console.print(
                f"{self.label} epoch {record['epoch']}: {stats} | {record['epoch_time_s']:.1f} s".strip()
            )

    def finished(self, records: list[dict], summary: dict) -> None:
        if self.shared:
            if self.task is not None:
                self.progress.remove_task(self.task)
            return
        if self.progress is not None:
            self.progress.stop()
        print_table(
            self.console,
            [
                {
                    "epoch": r["epoch"],
                    "train loss": f"{r['train_loss']:.4f}",
                    "train acc": f"{100 * r['train_acc']:.2f}%",
                    "test loss": f"{r['test_loss']:.4f}",
                    "test acc": f"{100 * r['test_acc']:.2f}%",
                    "epoch s": f"{r['epoch_time_s']:.1f}",
                    "eval s": f"{r['eval_time_s']:.1f}",
                    "img/s": f"{r['images_per_s']:.0f}",
                    "lr": f"{r['lr']:.3g}",
                }
                for r in records
            ],
            f"status: {summary['status']}",
        )
        if "stopped_at" in summary:
            where = summary["stopped_at"]
            self.console.print(f"[bold red]{summary['status']}[/] at epoch {where['epoch']}, step {where['step']}")


class StudyDisplay:
    """A StudyView (views.py): the overall bar of a study, and a bar per running run: fed directly by in-process runs,
    or by reading the runs' metrics.jsonl when they train in other processes."""

    def __init__(self, console: Console | None = None):
        self.console = console or wide_console(stderr=True)
        self.progress = _progress(self.console)
        self.overall = None
        self.polled: dict[str, tuple[int, Path]] = {}

    def study_started(self, study, already_done: int) -> None:
        self.progress.start()
        self.overall = self.progress.add_task(
            f"study {study.name}", total=len(study.runs), completed=already_done, stats=""
        )

    def run_started(self, run_id: str, config, path: Path | None = None) -> RunView:
        if path is None:
            return RichView(self.console, self.progress, run_id)
        task = self.progress.add_task(f"{run_id} epochs", total=config.train.epochs, stats="")
        self.polled[run_id] = (task, path)
        return NullView()  # the run reports from its own process; this display reads its metrics.jsonl

    def poll(self) -> None:
        for task, path in self.polled.values():
            metrics = path / METRICS_FILE
            if metrics.exists():
                self.progress.update(task, completed=metrics.read_text().count("\n"))

    def run_finished(self, run_id: str, status: str) -> None:
        if run_id in self.polled:
            self.progress.remove_task(self.polled.pop(run_id)[0])
        self.progress.advance(self.overall)
        self.progress.console.print(f"{run_id}: {status}")

    def stop(self) -> None:
        self.progress.stop()
