"""The `lrnbn` command line. Parses arguments, calls one function per command, and turns the project's own errors
into one line on stderr and an exit code (2: bad input; 3: diverged; 130: interrupted). No logic beyond that."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import List, Optional

import typer

from lrnbn.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Batch Normalization versus Local Response Normalization on CIFAR-10: train, compare, report.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the config schema.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file; omitted keys take their defaults.")
SetOption = typer.Option(None, "--set", "-s", help="Override one key: --set model.lrn.size=10 (repeatable; YAML values).")


def user_errors(command):
    """Print a UserError as one line and exit with its code, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


@app.command()
@user_errors
def train(
    config: Optional[Path] = ConfigOption,
    set_: Optional[List[str]] = SetOption,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run directories are created."),
    name: Optional[str] = typer.Option(None, "--name", help="Experiment name (same as --set experiment.name=NAME)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint."),
) -> None:
    """Train one model and write its run directory (or continue one with --resume)."""
    from lrnbn.config import load_config
    from lrnbn.console import RichView
    from lrnbn.train import resume_training, run_training

    overrides = list(set_ or []) + ([f"experiment.name={name}"] if name is not None else [])
    if resume is not None:
        if config is not None:
            raise UserError("--resume uses the run's saved config; drop --config")
        result = resume_training(resume, overrides, view=RichView())
    else:
        result = run_training(load_config(config, overrides), runs_dir, view=RichView())
    typer.echo(f"{result.summary['status']}: {result.run_dir.path}")
    raise typer.Exit(result.exit_code)


@data_app.command("import")
@user_errors
def data_import(
    source: Path = typer.Argument(..., help="Folder or .tar/.tar.gz with train/<class>/* and test/<class>/* images."),
    root: Path = typer.Option(Path("data"), "--root", help="Folder for the decoded cache (data.root in configs)."),
) -> None:
    """Decode an image folder or archive once into a cache that `dataset: imagefolder` (and `cifar10`) load in seconds."""
    from rich.progress import Progress

    from lrnbn.data import import_image_folder

    with Progress(transient=True) as progress:
        task = progress.add_task(f"decoding {source.name}", total=None)
        info = import_image_folder(source, root, lambda done, total: progress.update(task, completed=done, total=total))
    typer.echo(json.dumps(info, indent=2))


@config_app.command("show")
@user_errors
def config_show(config: Optional[Path] = ConfigOption, set_: Optional[List[str]] = SetOption) -> None:
    """Print the resolved config (every default filled in) without running anything."""
    from lrnbn.config import dump_config, load_config

    typer.echo(dump_config(load_config(config, list(set_ or []))), nl=False)


@config_app.command("reference")
def config_reference() -> None:
    """Print every config key with its type, default, range and help, as a markdown table."""
    from lrnbn.config import reference_markdown

    typer.echo(reference_markdown(), nl=False)
