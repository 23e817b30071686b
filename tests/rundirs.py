"""Hand-made run directories: what a trainer would leave, written directly, for the read-only side's tests."""

from pathlib import Path

from lrnbn.config import dump_config, load_config
from lrnbn.rundir import RunDir


def make_run(
    root: Path,
    study: str,
    run_id: str,
    settings: dict,
    test_accs: list[float],
    epoch_times: list[float] | None = None,
    train_accs: list[float] | None = None,
    status: str = "completed",
    classes: int = 10,
) -> RunDir:
    """settings: dotted key -> value on top of the defaults; test_accs: one per epoch."""
    run = RunDir(root / study / run_id)
    run.path.mkdir(parents=True)
    config = load_config(None, [f"{k}={v}" for k, v in settings.items()] + [f"experiment.name={study}"])
    run.write_config(dump_config(config))
    run.write_env(
        {
            "device": {"type": "cpu", "name": "test cpu"},
            "cpu_threads": 2,
            "dataset": {"label": "hand-made", "classes": [f"c{i}" for i in range(classes)]},
            "model": {"trainable": 1000, "norm_trainable": 16 if config.model.norm == "bn" else 0},
        }
    )
    epoch_times = epoch_times or [10.0] * len(test_accs)
    train_accs = train_accs or test_accs
    for epoch, (acc, seconds, train_acc) in enumerate(zip(test_accs, epoch_times, train_accs), 1):
        run.append_metrics(
            {
                "epoch": epoch,
                "train_loss": 1.0,
                "train_acc": train_acc,
                "test_loss": 1.0,
                "test_acc": acc,
                "epoch_time_s": seconds,
                "eval_time_s": 1.0,
                "images_per_s": 100.0,
                "lr": 0.01,
                "steps": epoch,
            }
        )
    run.write_summary(
        {"status": status, "epochs_done": len(test_accs), "final_test_acc": test_accs[-1] if test_accs else None}
    )
    return run
