"""The `lrnbn` command line. Parses arguments, calls one function per command, and turns the project's own errors
into one line on stderr and an exit code (lrnbn/errors.py and docs/rundir.md list them). No logic beyond that."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import typer

import lrnbn
from lrnbn.errors import EXIT_FAILED, EXIT_INTERRUPTED, UserError, writing

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Batch Normalization versus Local Response Normalization on CIFAR-10: train, compare, report.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the config schema.")
bench_app = typer.Typer(no_args_is_help=True, help="Micro-benchmarks that print ratios measured side by side.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lrnbn {lrnbn.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print lrnbn's version and exit."
    ),
) -> None:
    """Batch Normalization versus Local Response Normalization on CIFAR-10: train, compare, report."""


ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file; omitted keys take their defaults.")
SetOption = typer.Option(
    None, "--set", "-s", help="Override one key: --set model.lrn.size=10 (repeatable; YAML values)."
)


def user_errors(command):
    """Print a UserError as one line and exit with its code, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            rank = os.environ.get("RANK", "0")  # under torchrun every process reports; say which one
            typer.echo(f"error{'' if rank == '0' else f' (rank {rank})'}: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


@app.command()
@user_errors
def train(
    config: Path | None = ConfigOption,
    set_: list[str] | None = SetOption,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run directories are created."),
    name: str | None = typer.Option(None, "--name", help="Experiment name (same as --set experiment.name=NAME)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint."),
) -> None:
    """Train one model and write its run directory (or continue one with --resume).

    Under `torchrun --nproc_per_node N -m lrnbn train ...` the N processes train one run data-parallel."""
    from lrnbn import distributed
    from lrnbn.config import load_config
    from lrnbn.console import RichView
    from lrnbn.lifecycle import resume_training, run_training
    from lrnbn.views import NullView

    if name is not None and not name.strip():
        raise UserError("--name: empty; give letters, digits, '.', '_' or '-'")
    overrides = list(set_ or []) + ([f"experiment.name={name}"] if name is not None else [])
    main = distributed.current().main
    view = RichView() if main else NullView()
    if resume is not None and config is not None:
        raise UserError("--resume uses the run's saved config; drop --config")
    if resume is not None:
        result = resume_training(resume, overrides, view=view)
    else:
        result = run_training(load_config(config, overrides), runs_dir, view=view)
    distributed.leave()  # only after a clean end: when a rank fails, torchrun stops the others
    if main:
        typer.echo(f"{result.summary['status']}: {result.run_dir.path}")
    raise typer.Exit(result.exit_code)


@app.command()
@user_errors
def compare(
    study: Path = typer.Argument(
        ..., help="Study file (YAML): base, grid and/or variants, seeds, repeats, interleave."
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Runs go to RUNS_DIR/<study name>/<run id>/."),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        min=1,
        help="Runs at once, in separate processes (CPU threads "
        "split; one per GPU). Default: 1, or one per --devices entry.",
    ),
    devices: str | None = typer.Option(None, "--devices", help="Place runs on these GPUs in turn: cuda:0,cuda:1."),
    shard_spec: str | None = typer.Option(
        None,
        "--shard",
        help="I/N: run only the I-th of N slices of the plan "
        "(N batch jobs, one shared --runs-dir, cover it exactly once).",
    ),
    only_names: str | None = typer.Option(
        None,
        "--only",
        help="Run only these variants (comma-separated names), in the plan's order: the key settings of a long "
        "study first; a later run of the whole study skips what has ended.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what is already done; run nothing."),
    set_: list[str] | None = SetOption,
    target: float = typer.Option(0.5, help="Test accuracy for the 'epochs to target' column."),
) -> None:
    """Run a study: every grid point / variant x seed x repeat, skipping finished runs; end with a comparison."""
    from lrnbn.compare import load_study, only, run_state, run_study, shard
    from lrnbn.console import StudyDisplay, print_table, wide_console
    from lrnbn.records import find_runs
    from lrnbn.report import study_table
    from lrnbn.results import group
    from lrnbn.rundir import FINAL_STATUSES

    if not 0 < target <= 1:
        raise UserError(f"--target: a test accuracy in (0, 1], got {target}")
    if not dry_run:  # a dry run trains nothing, so it may run anywhere, and it stays torch-free
        _refuse_torchrun()
    cuda_indices = _cuda_devices(devices) if devices else []
    plan = load_study(study, list(set_ or []))
    if only_names is not None:
        plan = only(plan, [name.strip() for name in only_names.split(",") if name.strip()])
    slice_note = ""
    if shard_spec is not None:
        index, count = _shard(shard_spec)
        total = len(plan.runs)
        plan = shard(plan, index, count)
        slice_note = f" (shard {index}/{count} of {total})"
    root = runs_dir / plan.name
    states = {run.run_id: run_state(root / run.run_id, run.config) for run in plan.runs}
    done = sum(1 for s in states.values() if s in FINAL_STATUSES)
    console = wide_console(stderr=True)
    console.print(
        f"[bold]{plan.name}[/]: {len(plan.runs)} runs{slice_note}, {done} already ended, "
        f"{len(plan.runs) - done} to run -> {root}/"
    )
    for run_id, state in states.items():
        console.print(f"  {run_id}" + ("" if state == "absent" else f"  ({state})"), markup=False)
    if dry_run:
        return
    display = StudyDisplay(console)
    try:
        outcome = run_study(plan, runs_dir, jobs or max(1, len(cuda_indices)), display, cuda_indices)
    finally:
        display.stop()
    for run_id, message in outcome.errors.items():
        console.print(f"[red]{run_id}[/]: {message}")
    if outcome.busy:
        console.print(f"{len(outcome.busy)} run(s) were being trained by another process and were left to it")
    if any(s != "absent" for s in outcome.statuses.values()):
        for name, variants in group(find_runs([root]).runs).items():
            print_table(wide_console(), study_table(variants, target), f"{name} ({outcome.wall_time_s:.1f} s)")
    failed = [r for r, s in outcome.statuses.items() if s == "failed"] + list(outcome.errors)
    if outcome.interrupted:
        console.print("interrupted: rerun the same command to finish the study")
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        console.print(f"{len(failed)} run(s) failed: rerun the same command to retry them")
        raise typer.Exit(EXIT_FAILED)


@app.command()
@user_errors
def report(
    paths: list[Path] = typer.Argument(..., help="Run directories, study folders or a runs folder."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for the report and its plots."),
    format_: str = typer.Option("md", "--format", help="md or html (images inline)."),
    target: float = typer.Option(0.5, help="Test accuracy for 'epochs to target' (C2 uses it too)."),
) -> None:
    """Tables, plots and verdicts on the note's claims, from run directories on disk only."""
    from lrnbn.console import print_table, wide_console
    from lrnbn.report import build_report

    with writing(out):  # the plots; report.md (or .html) names itself through rundir.atomic_write_text
        path, verdicts, tables, damaged = build_report(list(paths), out, format_, target)
    for run_dir, why in damaged:
        typer.echo(f"skipped damaged run {run_dir}: {why}", err=True)
    console = wide_console()
    for name, rows in tables.items():
        print_table(console, rows, f"study {name}")
    print_table(console, [{"claim": v.claim, "verdict": v.verdict, "reason": v.reason} for v in verdicts], "claims")
    typer.echo(f"report: {path}")


@app.command()
@user_errors
def reproduce(
    run_dir: Path = typer.Argument(..., help="A recorded run directory (its config.yaml, env.json and metrics)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Compare the first N epochs only (faster)."),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", help="A machine key only, e.g. --set data.root=PATH where the data lies elsewhere."
    ),
) -> None:
    """Rerun a recorded run with its recorded config, thread count and device, and compare it epoch by epoch.

    Prints "identical", or the first epoch that differs, the largest difference and what differs between the
    recording machine and this one; exit code 0 when identical, 1 when not."""
    from lrnbn.reproduce import reproduce as rerun

    outcome = rerun(run_dir, epochs, list(set_ or []))
    typer.echo(outcome.text(run_dir))
    raise typer.Exit(0 if outcome.first_differing is None else EXIT_FAILED)


@data_app.command("import")
@user_errors
def data_import(
    source: Path = typer.Argument(..., help="Folder or .tar/.tar.gz with train/<class>/* and test/<class>/* images."),
    root: Path = typer.Option(Path("data"), "--root", help="Folder for the decoded cache (data.root in configs)."),
    max_decoded_mb: float | None = typer.Option(
        None,
        "--max-decoded-mb",
        help="Refuse, before decoding, an import whose image headers add up to more than this many MB of pixels "
        "(default 2048; it needs about three times that memory).",
    ),
) -> None:
    """Decode an image folder or archive once into a cache that `dataset: imagefolder` (and `cifar10`) loads fast."""
    from rich.progress import Progress

    from lrnbn.data import MAX_DECODED_MB, import_image_folder

    with Progress(transient=True) as progress:
        task = progress.add_task(f"decoding {source.name}", total=None)
        info = import_image_folder(
            source,
            root,
            lambda done, total: progress.update(task, completed=done, total=total),
            MAX_DECODED_MB if max_decoded_mb is None else max_decoded_mb,
        )
    typer.echo(json.dumps(info, indent=2))


@config_app.command("show")
@user_errors
def config_show(config: Path | None = ConfigOption, set_: list[str] | None = SetOption) -> None:
    """Print the resolved config (every default filled in) without running anything."""
    from lrnbn.config import dump_config, load_config

    typer.echo(dump_config(load_config(config, list(set_ or []))), nl=False)


@config_app.command("reference")
def config_reference() -> None:
    """Print every config key with its type, default, range and help, as a markdown table."""
    from lrnbn.config import reference_markdown

    typer.echo(reference_markdown(), nl=False)


def _refuse_torchrun() -> None:
    from lrnbn import distributed  # imports torch

    if distributed.current().launched:
        raise UserError(
            "lrnbn compare runs each run in one process; spread a study with --jobs, --devices or "
            "--shard, and use torchrun for `lrnbn train`"
        )


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise UserError(f"--shard: expected I/N such as 2/8, got {text!r}")
    return int(index), int(count)


def _cuda_devices(text: str) -> list[int]:
    """`cuda:0,cuda:1` -> [0, 1], each checked against the GPUs torch sees."""
    import torch

    indices = []
    for part in text.split(","):
        name, _, index = part.strip().partition(":")
        if name != "cuda" or not index.isdigit():
            raise UserError(
                f"--devices: expected cuda:N entries such as cuda:0,cuda:1 (CPU runs need only --jobs), got {part!r}"
            )
        indices.append(int(index))
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wrong = [i for i in indices if i >= visible]
    if wrong:
        raise UserError(
            f"--devices: cuda:{wrong[0]} does not exist; torch sees {visible} CUDA device(s)"
            + (f" (cuda:0 to cuda:{visible - 1})" if visible else "")
        )
    return indices


def _write_bench(path: Path | None, result: dict, device: str) -> None:
    """A benchmark's results as JSON at `path` (when given), with the machine they were measured on, since timings
    compare only within one machine: CPU or GPU name and ISA, threads, versions, git state, the load at the end."""
    if path is None:
        return
    import platform
    import sys

    import torch

    from lrnbn.machine import cpu_bf16_support, device_name, git_state
    from lrnbn.rundir import atomic_write_text

    dev = torch.device(device)
    machine = {
        "device": device_name(dev),
        **({"cpu_bf16": cpu_bf16_support()} if dev.type == "cpu" else {}),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_1m_after": os.getloadavg()[0],
        "lrnbn": lrnbn.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "git": git_state(),
        "command": sys.argv,
    }
    path.parent.mkdir(parents=True, exist_ok=True)  # a missing folder must not cost the minutes just measured
    atomic_write_text(path, json.dumps({**result, "machine": machine}, indent=2) + "\n")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got {text!r}") from None


@bench_app.command("lrn")
@user_errors
def bench_lrn(
    shape: str = typer.Option("128,64,32,32", help="N,C,H,W of the input."),
    device: str = typer.Option("cpu", help="cpu, cuda or mps."),
    dtype: str = typer.Option("float32", help="float32, bfloat16, float16 or float64."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: torch's)."),
    repeats: int = typer.Option(10, min=1, help="Timed rounds; each times every variant once, in a shuffled order."),
    warmup: int = typer.Option(2, min=0, help="Untimed rounds first."),
    sizes: str = typer.Option("1,3,5,7,9,11,15", help="LRN window sizes n."),
    channels_last: bool = typer.Option(False, help="Use a channels_last input."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results as JSON here."),
    peers: bool = typer.Option(
        False,
        "--peers",
        help="Instead: lrnbn's LRN beside every installed framework's (TensorFlow, onnxruntime), the note's layer in "
        "TensorFlow's convention at each --radii, fp32 on the CPU, with each one's error against float64.",
    ),
    radii: str = typer.Option("1,2,5,10", help="With --peers: TensorFlow depth_radius values (windows 2r+1)."),
    impls: str | None = typer.Option(
        None, help="LRN implementations to time beside BN, e.g. fused (torch, fast, fused). Default: every one."
    ),
) -> None:
    """Forward+backward of BatchNorm2d and each LRN implementation over n: medians and ratios to BN."""
    from rich.progress import Progress
    from rich.table import Table

    from lrnbn.bench import bench_lrn as run_bench
    from lrnbn.bench import lrn_targets
    from lrnbn.console import wide_console
    from lrnbn.machine import resolve_device

    dims = _ints(shape, "--shape")
    if len(dims) != 4 or min(dims) < 1:
        raise UserError(f"--shape: expected N,C,H,W with positive sizes, got {shape!r}")
    if peers:
        _bench_peers(dims, threads, repeats, warmup, _ints(radii, "--radii"), json_path)
        return
    resolve_device(device)
    with Progress(transient=True) as progress:
        task = progress.add_task("benchmarking", total=None)
        try:
            results = run_bench(
                dims,
                device,
                dtype,
                threads,
                repeats,
                warmup,
                _ints(sizes, "--sizes"),
                channels_last,
                lambda done, total: progress.update(task, completed=done, total=total),
                [part.strip() for part in impls.split(",") if part.strip()] if impls else None,
            )
        except ValueError as err:
            raise UserError(str(err)) from None
    import torch

    table = Table(
        title=f"LRN vs BN, forward+backward, {dims} {dtype} on {device}, {torch.get_num_threads()} threads, "
        f"median of {repeats}"
    )
    for column in ("impl", "n", "median ms", "min-max ms", "ratio to BN"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["impl"],
            "" if r["size"] is None else str(r["size"]),
            f"{r['median_ms']:.1f}",
            f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
            f"{r['ratio_to_bn']:.2f}",
        )
    console = wide_console()
    console.print(table)
    for name, value in lrn_targets(results).items():
        console.print(f"{name}: {value:.2f}")
    from lrnbn import fused

    kernel = fused.status(torch.device(device).type)
    console.print(f"impl fused ran as: {kernel}")
    setting = {"shape": list(dims), "device": device, "dtype": dtype, "channels_last": channels_last}
    setting |= {"threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup, "fused_kernel": kernel}
    setting["impls"] = list(dict.fromkeys(r["impl"] for r in results if r["size"] is not None))
    _write_bench(json_path, {"rows": results, "targets": lrn_targets(results), "setting": setting}, device)


def _bench_peers(dims, threads, repeats: int, warmup: int, radii, json_path: Path | None) -> None:
    """`bench lrn --peers`: the table of every framework's LRN, its speed and its error against float64."""
    import torch
    from rich.progress import Progress

    from lrnbn import fused
    from lrnbn.bench import bench_peers
    from lrnbn.console import print_table, wide_console

    if threads:
        torch.set_num_threads(threads)
    with Progress(transient=True) as progress:
        task = progress.add_task("benchmarking every LRN", total=None)
        rows, skipped = bench_peers(
            dims, radii, repeats, warmup, lambda d, t: progress.update(task, completed=d, total=t)
        )
    console = wide_console()
    shown = [
        {
            "LRN": r["peer"],
            "timed": r["direction"],
            "depth_radius": r["depth_radius"],
            "median ms": f"{r['median_ms']:.1f}",
            "min-max ms": f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
            "max rel error": f"{r['max_rel_error']:.1e}",
            "max rel error, wide magnitudes": f"{r['max_rel_error_wide']:.1e}",
        }
        for r in rows
    ]
    print_table(
        console, shown, f"LRN across frameworks, {dims} float32, {torch.get_num_threads()} threads, median of {repeats}"
    )
    for name, why in skipped.items():
        console.print(f"skipped {name}: {why}")
    setting = {"shape": list(dims), "radii": list(radii), "threads": torch.get_num_threads(), "repeats": repeats}
    setting |= {"warmup": warmup, "fused_kernel": fused.status("cpu")}
    _write_bench(json_path, {"rows": rows, "skipped": skipped, "setting": setting}, "cpu")


@bench_app.command("train")
@user_errors
def bench_train(
    arch: str = typer.Option("alexnet", help="Model: alexnet or cifar-full."),
    width: float = typer.Option(0.5, help="model.width."),
    batch_size: int = typer.Option(128, min=1, help="Images per step."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: torch's)."),
    repeats: int = typer.Option(5, min=1, help="Timed rounds; each times every variant once, in a shuffled order."),
    warmup: int = typer.Option(2, min=0, help="Untimed rounds first."),
    norms: str | None = typer.Option(
        None, help="Norms to time, e.g. bn,lrn-fused (lrn-IMPL: an LRN implementation). Default: every one."
    ),
    precisions: str = typer.Option("fp32,bf16", help="fp32 and/or bf16 (autocast)."),
    formats: str = typer.Option("contiguous,channels_last", help="Memory formats."),
    sizes: str = typer.Option("5", help="LRN window sizes n (each LRN is timed at every one)."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results as JSON here."),
) -> None:
    """One training step per norm x precision x memory format (LRN at each n): medians and ratios to BN."""
    from rich.progress import Progress

    from lrnbn.bench import FORMATS, PRECISIONS
    from lrnbn.bench import bench_train as run_bench
    from lrnbn.console import print_table, wide_console
    from lrnbn.machine import resolve_device

    chosen = {}
    for option, text, valid in (("--precisions", precisions, PRECISIONS), ("--formats", formats, FORMATS)):
        chosen[option] = [part.strip() for part in text.split(",") if part.strip()]
        wrong = [part for part in chosen[option] if part not in valid]
        if wrong or not chosen[option]:
            raise UserError(f"{option}: expected some of {', '.join(valid)}, got {text!r}")
    from pydantic import ValidationError

    from lrnbn.config import LRNConfig, ModelConfig, format_validation_error

    try:
        ModelConfig(arch=arch, width=width)
    except ValidationError as err:
        raise UserError(format_validation_error(err, "--arch/--width")) from None
    lrn_sizes = _ints(sizes, "--sizes")
    try:
        for size in lrn_sizes:
            LRNConfig(convention="alexnet-paper", size=size)
    except ValidationError as err:
        raise UserError(format_validation_error(err, "--sizes")) from None
    resolve_device(device)
    with Progress(transient=True) as progress:
        task = progress.add_task("benchmarking training steps", total=None)
        try:
            result = run_bench(
                arch,
                width,
                batch_size,
                device,
                threads,
                repeats,
                warmup,
                [n.strip() for n in norms.split(",")] if norms else None,
                chosen["--precisions"],
                chosen["--formats"],
                lrn_sizes,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
        except ValueError as err:
            raise UserError(str(err)) from None
    setting = result["setting"]
    console = wide_console()
    print_table(
        console,
        [_step_row(r) for r in result["rows"]],
        f"training step, {setting['arch']} width {setting['width']}, batch {setting['batch_size']} on {device}, "
        f"{setting['threads']} threads, median of {repeats}",
    )
    for norm, kernel in result["lrn_kernels"].items():
        console.print(f"{norm} ran as: {kernel}")
    if len(lrn_sizes) > 1:
        spans = {}
        for r in result["rows"]:
            if r["size"] is not None and r["ratio_to_bn"] is not None:
                spans.setdefault((r["norm"], r["precision"], r["format"]), []).append(r["ratio_to_bn"])
        for (norm, precision, fmt), ratios in spans.items():
            console.print(f"{norm}, {precision} {fmt}: {min(ratios):.2f}x to {max(ratios):.2f}x BN over n {sizes}")
    for precision, why in result["skipped"].items():
        console.print(f"skipped {precision}: {why}")
    _write_bench(json_path, result, device)


def _step_row(r: dict) -> dict:
    def ratio(value):
        return "-" if value is None else f"{value:.2f}"

    return {
        "norm": r["norm"],
        "n": "-" if r["size"] is None else str(r["size"]),
        "precision": r["precision"],
        "format": r["format"],
        "median ms": f"{r['median_ms']:.1f}",
        "min-max ms": f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
        "ratio to BN (same precision, format)": ratio(r["ratio_to_bn"]),
        "ratio to fp32 contiguous BN": ratio(r["ratio_to_fp32_contiguous_bn"]),
    }


@bench_app.command("probes")
@user_errors
def bench_probes(
    config: Path | None = ConfigOption,
    set_: list[str] | None = SetOption,
    repeats: int = typer.Option(3, min=1, help="Runs with probes off and on, alternating."),
) -> None:
    """The cost of probes: training-phase epoch time with probes off and on, side by side."""
    from rich.progress import Progress

    from lrnbn.bench import bench_probes as run_bench
    from lrnbn.config import load_config

    settings = load_config(config, list(set_ or []))
    with Progress(transient=True) as progress:
        task = progress.add_task("training with probes off and on", total=repeats)
        result = run_bench(settings, repeats, lambda done, total: progress.update(task, completed=done))
    typer.echo(
        f"probes every {settings.probes.every} steps on {settings.probes.batch_size} images: median epoch "
        f"{result['off_median_s']:.2f} s off, {result['on_median_s']:.2f} s on "
        f"({result['epochs_timed']} epochs each): overhead {100 * result['overhead']:+.1f}%"
    )
