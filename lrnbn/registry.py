"""The named parts a config chooses from: architectures (`model.arch`), normalizations (`model.norm`), initialisations
(`model.init`) and LRN implementations (`model.lrn.impl`), each declared here with its help text.

The declarations are plain data, so the config schema builds its choices and help from them without importing torch,
and so do the readers of run directories. The builders live with torch (models.py, norms.py, initialisation.py,
lrn.py) and register against these names; a name that is declared without a builder, or a builder whose name is not
declared, fails tests/test_registry.py. To add a part: declare it here, register its builder there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Choice:
    name: str
    help: str  # one clause, without a final period: the help texts of one key are joined with "; "
    # Config keys, or whole sections, that tune this part alone (a norm's own knobs): they mean nothing to a run that
    # chose another part, so they never split its study's variants (lrnbn.keys).
    owns: tuple[str, ...] = ()


class Registry(Generic[T]):
    """The values one config key may take, in declaration order, and the builder registered for each."""

    def __init__(self, kind: str, *choices: Choice):
        self.kind = kind  # what a value names, for errors: "norm", "impl", ...
        self.choices = {choice.name: choice for choice in choices}
        self._builders: dict[str, T] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.choices)

    @property
    def registered(self) -> tuple[str, ...]:
        return tuple(self._builders)

    def help(self) -> str:
        """'name: help; ...': the help text of the config key whose values these are."""
        return "; ".join(f"{choice.name}: {choice.help}" for choice in self.choices.values()) + "."

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that makes its function the builder of the declared `name`."""
        if name not in self.choices:
            raise LookupError(f"{self.kind} {name!r} has a builder but no declaration in lrnbn/registry.py")
        if name in self._builders:
            raise LookupError(f"{self.kind} {name!r} has two builders")

        def add(builder: T) -> T:
            self._builders[name] = builder
            return builder

        return add

    def __getitem__(self, name: str) -> T:
        """The builder of `name`; a name without one is refused, naming the valid choices."""
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names)}")
        return self._builders[name]


ARCHITECTURES = Registry(
    "arch",
    Choice("alexnet", "5 conv + 3 fully connected layers with dropout (AlexNet's layout for 32x32 inputs)"),
    Choice("cifar-full", "Caffe's cifar10_full (cuda-convnet's '18% error' net)"),
)

NORMS = Registry(
    "norm",
    Choice(
        "bn",
        "Batch Normalization (batch statistics per channel, a learned scale and shift gamma, beta)",
        owns=("model.norm_affine",),
    ),
    Choice(
        "lrn",
        "Local Response Normalization with the model.lrn.* parameters (hand-set, or learned with lrn.learnable)",
        owns=("model.lrn",),
    ),
    Choice(
        "gn",
        "Group Normalization (statistics per image over groups of channels; model.gn_groups)",
        owns=("model.norm_affine", "model.gn_groups"),
    ),
    Choice(
        "ln",
        "Layer Normalization over channels, height and width of each image (one group), per-channel scale and shift",
        owns=("model.norm_affine",),
    ),
    Choice("none", "no normalization (an empty slot)"),
)

INITS = Registry(
    "init",
    Choice(
        "pytorch",
        "PyTorch's default (Kaiming-uniform weights with a = sqrt(5), uniform biases), as the layers are built",
    ),
    Choice("gaussian", "Caffe's gaussian filler: weights N(0, init_std^2) per layer, biases init_bias (default 0)"),
    Choice(
        "alexnet-paper",
        "The AlexNet paper's: weights N(0, 0.01^2) (or init_std), biases 1 on conv2, conv4, conv5 and the hidden fully "
        "connected layers, 0 elsewhere (or init_bias)",
    ),
    Choice(
        "glorot-uniform",
        "Keras's default: glorot-uniform weights (U(-a, a), a = sqrt(6 / (fan_in + fan_out))), biases 0",
    ),
)

# Across-channel LRN only: Caffe's within-channel region has one implementation (lrn.apply_lrn).
LRN_IMPLS = Registry(
    "impl",
    Choice(
        "torch",
        "PyTorch's stock LRN (cost grows with size, as that of TensorFlow's, which the note timed)",
    ),
    Choice("fast", "lrnbn's banded sum with a hand-written backward (cost independent of size)"),
    Choice(
        "fused",
        "one kernel per direction (C++ on CPU, Triton on CUDA, built on first use; falls back to fast where it cannot "
        "be built)",
    ),
)
