"""Opt-in measurements of the mechanisms the note names, taken during training without changing it.

Every `probes.every` steps, on a fixed probe batch (`probes.batch_size` training images drawn once from a fixed
order, normalised, never augmented, the same at every probe point and in every run; its class counts go to env.json):
- at each normalization position (BN, LRN or the empty slot of `norm: none`), per-channel mean and std of the
  layer's input and output, and their drift since the previous probe point:
  drift = mean over channels of |mean_now - mean_before| / std_before (a shift measured in the old spread);
- conv1 filter similarity: mean |cosine| between distinct conv1 filters, each flattened and mean-removed;
- at each normalization position, the share of the layer's input values <= 0 and of its channels <= 0 throughout
  the batch (behind a ReLU: the dead units and channels);
- the accuracy on the probe batch (in eval mode): where a run leaves chance, to the probe interval rather than the
  epoch; and the logits' spread between images beside the spread of their class means (how much the output depends
  on the input at all);
- per weight tensor, the gradient norm and the relative update ||W_after - W_before|| / ||W_before|| of every step,
  averaged over the steps since the previous probe point.
The probe forward runs in eval mode without gradients: it uses no random numbers and leaves BN's running
statistics alone, so a run with probes follows the same trajectory as one without (a test checks it on CPU).
"""

from __future__ import annotations

import torch
from torch import nn

from lrnbn.norms import NormSlot

EPS = 1e-8


def filter_similarity(weight: torch.Tensor) -> float:
    """Mean |cosine similarity| over distinct pairs of filters (rows of the flattened, mean-removed weight)."""
    flat = weight.detach().reshape(len(weight), -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(EPS)
    cosine = (unit @ unit.T).abs()
    n = len(weight)
    return float((cosine.sum() - cosine.diagonal().sum()) / (n * (n - 1))) if n > 1 else 1.0


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over batch and space (one reduction, no copy of the activations)."""
    var, mean = torch.var_mean(x.detach().float(), dim=(0, 2, 3), unbiased=False)
    return mean.double(), var.sqrt().double()


def zero_shares(x: torch.Tensor) -> dict:
    """Of a norm slot's input: the share of values <= 0 and the share of channels <= 0 on every image and pixel of the
    batch. Behind a ReLU (norm_position after_relu) these are the units and the channels the ReLU zeroed: dead ones."""
    off = x.detach() <= 0
    return {
        "input_zero_share": float(off.float().mean()),
        "dead_channel_share": float(off.all(dim=3).all(dim=2).all(dim=0).float().mean()),
    }


def logit_spreads(logits: torch.Tensor) -> dict:
    """How much the logits depend on the image: their spread between images (std over the batch, averaged over
    classes), beside the spread of the class means (std over classes of the batch mean). A net that answers every
    image alike has the first near 0, whatever the second."""
    var, mean = torch.var_mean(logits.detach().double(), dim=0, unbiased=False)
    return {"logit_spread": float(var.sqrt().mean()), "logit_class_spread": float(mean.std(unbiased=False))}


def drift(before: tuple[torch.Tensor, torch.Tensor], now: tuple[torch.Tensor, torch.Tensor]) -> float:
    return float(((now[0] - before[0]).abs() / before[1].clamp_min(EPS)).mean())


class Probes:
    def __init__(self, model: nn.Module, probe_images: torch.Tensor, probe_labels: torch.Tensor, every: int):
        self.model, self.images, self.labels, self.every = model, probe_images, probe_labels, every
        self.slots = [m for m in model.modules() if isinstance(m, NormSlot)]
        self.conv1 = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        self.weights = [(name, p) for name, p in model.named_parameters() if p.ndim > 1]
        self.previous: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._before: list[torch.Tensor] | None = None
        # Sums over the interval of each weight's gradient norm and update ratio; on the device, read at probe points.
        self._sums = torch.zeros(len(self.weights), 2, dtype=torch.float64, device=probe_images.device)
        self._steps = 0

    # Per step ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def before_step(self) -> None:
        """After backward, before the optimizer: gradient norms, and a copy of the weights to measure the update."""
        params = [p.detach() for _, p in self.weights]
        if self._before is None:
            self._before = [p.clone() for p in params]
        else:
            torch._foreach_copy_(self._before, params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.weights]
        # The multi-tensor kernels that torch's own clip_grad_norm_ uses: one call for all layers.
        self._sums[:, 0] += torch.stack(torch._foreach_norm(grads)).double()

    @torch.no_grad()
    def after_step(self) -> None:
        changes = torch._foreach_norm(torch._foreach_sub([p.detach() for _, p in self.weights], self._before))
        sizes = torch.stack(torch._foreach_norm(self._before)).clamp_min(EPS)
        self._sums[:, 1] += (torch.stack(changes) / sizes).double()
        self._steps += 1

    def describe(self) -> dict:
        """The probe batch, for env.json: a probe accuracy means "learned" only on a batch that holds every class."""
        counts = torch.bincount(self.labels.cpu(), minlength=int(self.labels.max()) + 1)
        return {"images": len(self.labels), "class_counts": counts.tolist()}

    def due(self, global_step: int) -> bool:
        return global_step % self.every == 0

    # At probe points ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def measure(self, global_step: int, epoch: int) -> dict:
        captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        hooks = [
            slot.register_forward_hook(lambda _m, args, out: captured.append((args[0], out))) for slot in self.slots
        ]
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.model(self.images)
        finally:
            self.model.train(was_training)
            for hook in hooks:
                hook.remove()
        layers = []
        for position, (inputs, outputs) in enumerate(captured):
            record = {"position": position, "layer": type(self.slots[position].inner).__name__}
            record |= zero_shares(inputs)
            for side, tensor in (("input", inputs), ("output", outputs)):
                stats = channel_stats(tensor)
                key = f"{position}.{side}"
                record[f"{side}_mean"] = float(stats[0].abs().mean())
                record[f"{side}_std"] = float(stats[1].mean())
                record[f"{side}_drift"] = drift(self.previous[key], stats) if key in self.previous else None
                self.previous[key] = stats
            layers.append(record)
        steps = max(1, self._steps)
        weights = [
            {
                "name": name,
                "grad_norm": float(self._sums[i, 0] / steps),
                "update_ratio": float(self._sums[i, 1] / steps),
            }
            for i, (name, _) in enumerate(self.weights)
        ]
        self._sums.zero_()
        self._steps = 0
        return {
            "step": global_step,
            "epoch": epoch,
            "filter_similarity": filter_similarity(self.conv1.weight),
            "probe_acc": float((logits.argmax(1) == self.labels).float().mean()),
            **logit_spreads(logits),
            "layers": layers,
            "weights": weights,
        }

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run's probes continue exactly: the previous probe point's
        statistics (for drift) and the sums of the interval in progress."""
        return {
            "previous": {key: list(stats) for key, stats in self.previous.items()},
            "sums": self._sums.clone(),
            "steps": self._steps,
        }

    def restore(self, state: dict) -> None:
        self.previous = {key: (stats[0], stats[1]) for key, stats in state["previous"].items()}
        self._sums.copy_(state["sums"])
        self._steps = state["steps"]


def save_filter_grid(weight: torch.Tensor, file) -> None:
    """The conv1 filters as a grid of small images (RGB when the input has 3 channels), each scaled to its own range,
    as a PNG written to `file` (a path or a binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filters = weight.detach().float().cpu()
    count = len(filters)
    columns = min(16, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, f in zip(axes.flat, filters):
        f = (f - f.min()) / (f.max() - f.min()).clamp_min(EPS)
        ax.imshow(
            f.permute(1, 2, 0).numpy() if f.shape[0] == 3 else f[0].numpy(),
            interpolation="nearest",
            cmap=None if f.shape[0] == 3 else "gray",
        )
    fig.suptitle(f"conv1 filters (similarity {filter_similarity(weight):.2f})", fontsize=8)
    fig.savefig(file, dpi=100, format="png")
    plt.close(fig)
