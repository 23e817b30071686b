"""What a person sees while a run trains: a Rich progress bar per epoch and a table of epochs at the end."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lrnbn.rundir import RunDir


class RichView:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None

    def start(self, run_dir: RunDir, config, dataset, device) -> None:
        self.console.print(
            f"[bold]{config.experiment.name}[/] -> {run_dir.path}\n"
            f"  {config.model.arch} width {config.model.width} norm {config.model.norm} | {dataset.label}: "
            f"{len(dataset.train)} train / {len(dataset.test)} test | device {device}"
        )

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"), console=self.console,
            )
            self.progress.start()
        self.task = self.progress.add_task("", total=steps, epoch=f"{epoch}/{epochs}", stats="")

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=done,
                             stats=f"loss {loss:.3f} acc {100 * acc:.1f}% {images_per_s:.0f} img/s")

    def epoch_done(self, record: dict) -> None:
        stats = (f"loss {record['train_loss']:.3f} acc {100 * record['train_acc']:.1f}% "
                 f"{record['images_per_s']:.0f} img/s | test acc {100 * record['test_acc']:.1f}%")
        self.progress.update(self.task, stats=stats)
        if not self.console.is_terminal:  # a log file gets no live bars: leave one line per epoch instead
            self.console.print(f"epoch {record['epoch']}: {stats} | {record['epoch_time_s']:.1f} s")

    def finished(self, records: list[dict], summary: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
        table = Table(title=f"status: {summary['status']}")
        for column in ("epoch", "train loss", "train acc", "test loss", "test acc", "epoch s", "eval s", "img/s", "lr"):
            table.add_column(column, justify="right")
        for r in records:
            table.add_row(str(r["epoch"]), f"{r['train_loss']:.4f}", f"{100 * r['train_acc']:.2f}%",
                          f"{r['test_loss']:.4f}", f"{100 * r['test_acc']:.2f}%", f"{r['epoch_time_s']:.1f}",
                          f"{r['eval_time_s']:.1f}", f"{r['images_per_s']:.0f}", f"{r['lr']:.3g}")
        self.console.print(table)
        if "stopped_at" in summary:
            where = summary["stopped_at"]
            self.console.print(f"[bold red]{summary['status']}[/] at epoch {where['epoch']}, step {where['step']}")
