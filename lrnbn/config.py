"""The config schema: every knob's type, default, valid range and help text, in one place.

YAML files, `--set KEY=VALUE` overrides and the saved `config.yaml` of a run all pass through `load_config`
(or `Config.model_validate`), so a value that is valid in one is valid in all. Everything downstream receives
a validated `Config`, never a raw dict.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# No torch on this side (nor through lrnbn.keys): the choices and their help come from the torch-free declarations of
# lrnbn.registry, so that reading configs and run directories (lrnbn report, config reference) never loads torch.
from lrnbn.conventions import CONVENTIONS, PARAMETER_BOUNDS, REGIONS, LRNParameterError, canonical
from lrnbn.errors import UserError
from lrnbn.keys import differing_keys as _differing_flat
from lrnbn.keys import flatten, lookup
from lrnbn.registry import ARCHITECTURES, INITS, LRN_IMPLS, NORMS
from lrnbn.safeyaml import MAX_YAML_BYTES, load_yaml_text, shorten


class ConfigError(UserError):
    """A config value, key or file the user must fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ExperimentConfig(_Section):
    name: str = Field(
        "default",
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Name of the experiment; runs go to RUNS_DIR/<name>/. Letters, digits, '.', '_' and '-'.",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed for weights, data order, augmentation and synthetic data."
    )


class DataConfig(_Section):
    dataset: Literal["cifar10", "imagefolder", "synthetic"] = Field(
        "cifar10",
        description="cifar10: torchvision's files under root (or an imported copy); imagefolder: what "
        "`lrnbn data import` cached under root; synthetic: generated from the seed, no files.",
    )
    root: str = Field("data", description="Folder holding the dataset files (relative to the working directory).")
    download: bool = Field(False, description="Download CIFAR-10 through torchvision when its files are absent.")
    input_norm: bool = Field(
        True, description="Standardise inputs, as input_norm_per says (else scale them to [0, 1])."
    )
    input_norm_per: Literal["channel", "image"] = Field(
        "channel",
        description="With input_norm: channel: the train split's per-channel mean and std; image: each image by its "
        "own mean and std over all its pixels and channels, in [0, 1] units, the std floored at 1/sqrt(pixels x "
        "channels) (TensorFlow's per_image_standardization, as the note's author fed his nets).",
    )
    pixel_units: bool = Field(
        False,
        description="With input_norm: subtract the train split's per-channel mean but keep pixel units (0-255) "
        "instead of dividing by the std, as Caffe's CIFAR-10 examples feed their nets (they subtract a per-pixel "
        "mean image).",
    )
    augment: bool = Field(True, description="Random crop (pad 4) and horizontal flip of training batches.")
    train_limit: int | None = Field(
        None, ge=1, le=10**8, description="Use the first N training images of a fixed shuffled order; null = all."
    )
    test_limit: int | None = Field(
        None, ge=1, le=10**8, description="Use the first N test images of a fixed shuffled order; null = all."
    )
    synthetic_train_size: int = Field(2048, ge=10, le=1_000_000, description="Synthetic dataset: training images.")
    synthetic_test_size: int = Field(512, ge=10, le=1_000_000, description="Synthetic dataset: test images.")


class LRNConfig(_Section):
    convention: Literal[CONVENTIONS] = Field(
        "pytorch",
        description="Whose parameters size/alpha/beta/k are (see docs/lrn-conventions.md): pytorch and onnx and cudnn "
        "divide alpha by size; tensorflow and alexnet-paper do not; caffe divides by size (across) or size^2 (within).",
    )
    size: int = Field(
        5,
        ge=1,
        le=255,
        description="Window n: channels summed (across) or n x n pixels (within). tensorflow: the window 2r+1 "
        "(odd), or give depth_radius instead. caffe, tensorflow, alexnet-paper: odd only; cudnn: 1..16.",
    )
    depth_radius: int | None = Field(
        None, ge=0, le=127, description="tensorflow only: its depth_radius r, the same as size 2r+1."
    )
    # Bounds shared with conventions.canonical, which refuses the same values in the Python API.
    alpha: float = Field(
        1e-4,
        **PARAMETER_BOUNDS["alpha"],
        allow_inf_nan=False,
        description="Scale alpha, in the convention's own meaning.",
    )
    beta: float = Field(0.75, **PARAMETER_BOUNDS["beta"], allow_inf_nan=False, description="Exponent beta.")
    k: float = Field(
        1.0,
        **PARAMETER_BOUNDS["k"],
        allow_inf_nan=False,
        description="Additive constant k (tensorflow's and onnx's bias, cudnn's K).",
    )
    region: Literal[REGIONS] = Field(
        "across",
        description="across: neighbouring channels; within: Caffe's WITHIN_CHANNEL (convention caffe only), an n x n "
        "spatial window of the same channel with k = 1.",
    )
    learnable: bool = Field(
        False, description="Learn k, alpha and beta per layer (kept positive, starting at the configured values)."
    )
    # The default decides what a saved config without this key means; the Python API (lrnbn.lrn) defaults to it too.
    impl: Literal[LRN_IMPLS.names] = Field("torch", description=LRN_IMPLS.help() + " Same numbers.")

    @model_validator(mode="before")
    @classmethod
    def _depth_radius_sets_size(cls, data):
        if isinstance(data, dict) and data.get("depth_radius") is not None and isinstance(data["depth_radius"], int):
            size = 2 * data["depth_radius"] + 1
            if data.get("size", size) != size:
                raise ValueError(
                    f"size {data['size']} disagrees with depth_radius {data['depth_radius']} "
                    f"(window 2r+1 = {size}); give one of them"
                )
            data = {**data, "size": size}
        return data


class ModelConfig(_Section):
    arch: Literal[ARCHITECTURES.names] = Field("alexnet", description=ARCHITECTURES.help())
    width: float = Field(1.0, gt=0, le=8, description="Multiplier on every layer's channel count.")
    norm: Literal[NORMS.names] = Field(
        "bn", description="Normalisation at the positions where the architecture puts LRN. " + NORMS.help()
    )
    norm_affine: bool = Field(
        True,
        description="bn, gn and ln with their learned per-channel scale and shift; false: without (BN's "
        "statistics without BN's trainable parameters).",
    )
    gn_groups: int = Field(
        32, ge=1, le=1024, description="gn: groups of channels, the largest divisor of the channel count not above it."
    )
    norm_position: Literal["after_relu", "before_relu"] = Field(
        "after_relu", description="Where each norm sits: after its ReLU (AlexNet's LRN) or before it (the BN paper's)."
    )
    norm_at: Literal["lrn", "every"] | Annotated[list[int], Field(min_length=1, max_length=64)] = Field(
        "lrn",
        description="Which conv layers (1-based, ascending) a norm follows: lrn: the architecture's LRN positions "
        "(alexnet: conv1, conv2; cifar-full: its first two stages); every: every conv layer; or a list, e.g. "
        "[1, 2, 5] as the note's author placed LRN.",
    )
    dropout: float = Field(
        0.5, ge=0, lt=1, description="Dropout probability before the fully connected layers (alexnet)."
    )
    sync_bn: bool = Field(
        False,
        description="Under torchrun: batch-norm statistics over the whole global batch (SyncBatchNorm; CUDA "
        "only) instead of each process's slice. No effect in one process or without BN.",
    )
    init: Literal[INITS.names] = Field("pytorch", description="Initial weights and biases. " + INITS.help())
    init_std: Annotated[list[Annotated[float, Field(gt=0)]], Field(max_length=64)] | None = Field(
        None,
        description="init gaussian and alexnet-paper: the weights' standard deviation, one per conv/linear layer in "
        "model order. A file that gives init_std without init means init gaussian (configs written before init).",
    )
    init_bias: Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(max_length=64)] | None = Field(
        None,
        description="init gaussian and alexnet-paper: the bias constant of each conv/linear layer in model order; "
        "null = the init's own (gaussian: 0; alexnet-paper: the paper's 0/1 pattern).",
    )
    lrn: LRNConfig = Field(default_factory=LRNConfig)

    @model_validator(mode="before")
    @classmethod
    def _read_older_keys(cls, data):
        """Configs saved before model.init and model.norm_at: init_std alone meant Caffe's gaussian filler, and
        norm_after_every_conv: true meant norm_at: every."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("init_std") is not None and "init" not in data:
            data["init"] = "gaussian"
        if "norm_after_every_conv" in data and isinstance(data["norm_after_every_conv"], bool):
            every = data.pop("norm_after_every_conv")
            if every and data.setdefault("norm_at", "every") != "every":
                raise ValueError("norm_after_every_conv: true disagrees with norm_at; give norm_at alone")
        return data

    @field_validator("norm_at", mode="before")
    @classmethod
    def _norm_at_names_layers(cls, value):
        if isinstance(value, str) and value not in ("lrn", "every"):
            raise ValueError("expected lrn, every or a list of conv layers, e.g. [1, 2, 5]")
        return value


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, le=10_000, description="Training epochs.")
    batch_size: int = Field(128, ge=1, le=65536, description="Training batch size.")
    eval_batch_size: int = Field(
        500, ge=1, le=65536, description="Batch size for evaluation (does not affect results)."
    )
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="Optimizer.")
    lr: float = Field(0.01, gt=0, le=10, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (adam/adamw: beta1).")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay (L2 for sgd/adam, decoupled for adamw).")
    schedule: Literal["constant", "step", "multistep", "cosine", "onecycle"] = Field(
        "constant",
        description="Learning-rate schedule after warm-up, stepped every batch. step: times step_gamma every "
        "step_every epochs; multistep: times step_gamma at each of milestones (optimizer steps); cosine: to 0 at "
        "the end; onecycle: linear from lr/25 up to lr over warm-up (30% of training when warmup_epochs is 0), "
        "then linearly down to 0.",
    )
    milestones: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=64)] | None = Field(
        None, description="multistep schedule: the optimizer steps (iterations, ascending) where lr is multiplied."
    )
    warmup_epochs: float = Field(0.0, ge=0, le=10_000, description="Linear warm-up from 0 to lr over this many epochs.")
    step_every: int = Field(10, ge=1, le=10_000, description="step schedule: epochs between decays.")
    step_gamma: float = Field(0.1, gt=0, le=1, description="step and multistep schedules: factor at each decay.")
    decay_mult: Annotated[list[Annotated[float, Field(ge=0)]], Field(max_length=64)] | None = Field(
        None,
        description="Weight-decay multiplier of each conv/linear layer's weights, in model order (Caffe's "
        "decay_mult); null = 1 for all.",
    )
    bias_decay_mult: Annotated[list[Annotated[float, Field(ge=0)]], Field(max_length=64)] | None = Field(
        None, description="The same for each conv/linear layer's bias; null = 1 for all."
    )
    bias_lr_mult: float = Field(1.0, gt=0, le=100, description="Learning-rate multiplier of every bias (Caffe: 2).")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Training device; auto picks cuda, then mps, then cpu."
    )
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch; null = torch's default.")
    amp: bool = Field(
        False,
        description="bf16 autocast for the forward pass: on CUDA, and on CPUs with native bf16 (AVX512-BF16 or "
        "AMX); elsewhere it is refused, emulated bf16 being slower than fp32.",
    )
    channels_last: bool = Field(
        True,
        description="Model weights and batches in the channels_last memory format (faster convolutions on CPUs and "
        "on GPUs with tensor cores); numbers equal to the contiguous format's up to float rounding.",
    )


class ProbesConfig(_Section):
    enabled: bool = Field(
        False,
        description="Record activation drift, conv1 filter similarity and update sizes in probes.jsonl "
        "(lrnbn/probes.py); they do not change training, and their time counts in epoch_time_s.",
    )
    every: int = Field(50, ge=1, description="Steps between probe points.")
    batch_size: int = Field(
        256,
        ge=1,
        le=65536,
        description="Images in the fixed probe batch, drawn once from a fixed order of the training split.",
    )


class LogConfig(_Section):
    tensorboard: bool = Field(
        False,
        description="Also write per-epoch scalars and the config to RUN_DIR/tensorboard/ (needs the "
        "tensorboard extra: pip install -e '.[tensorboard]').",
    )


class Config(_Section):
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    log: LogConfig = Field(default_factory=LogConfig)


# ---------------------------------------------------------------------------------------------------------------
# Keys: walking the schema by dotted path.


def _section_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    """The schema class reached by following `path` from Config, or None if the path is not a section."""
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted, in declaration order."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += all_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def unknown_key_message(path: tuple[str, ...]) -> str:
    dotted = ".".join(path)
    section = _section_at(path[:-1])
    siblings = list(section.model_fields) if section else []
    # A valid name in the wrong section is the likeliest slip (train.norm for model.norm); then a typo of a sibling.
    elsewhere = [k for k in all_keys() if k.rsplit(".", 1)[-1] == path[-1]]
    close = [".".join(path[:-1] + (m,)) for m in difflib.get_close_matches(path[-1], siblings, n=1, cutoff=0.5)]
    guess = (elsewhere or close or difflib.get_close_matches(dotted, all_keys(), n=1, cutoff=0.6))[:1]
    hint = f"did you mean {guess[0]}?" if guess else f"valid keys here: {', '.join(siblings)}"
    return f"{dotted}: unknown key; {hint}"


def format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        message = unknown_key_message(loc)
    else:
        value = first.get("input")
        shown = f" (got {shorten(value)})" if not isinstance(value, dict) else ""
        message = f"{'.'.join(loc)}: {first['msg'].removeprefix('Value error, ')}{shown}"
    more = len(err.errors()) - 1
    return f"{source}: {message}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


# ---------------------------------------------------------------------------------------------------------------
# Loading, overriding, dumping.


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`model.lrn.size=10` -> (("model", "lrn", "size"), 10). Values are YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. --set model.norm=lrn")
    key, raw = text.split("=", 1)
    if len(key) > 100:
        raise ConfigError(f"--set {shorten(key)}: no key is that long; see lrnbn config reference")
    path = tuple(key.strip().split("."))
    if not all(path):
        raise ConfigError(f"--set {text}: empty part in key {key!r}")
    section = _section_at(path[:-1])
    if section is None or path[-1] not in section.model_fields:
        raise ConfigError(f"--set {unknown_key_message(path)}")
    if _section_at(path) is not None:
        raise ConfigError(
            f"--set {key}: is a section; set one of its keys, e.g. {all_keys(_section_at(path), key + '.')[0]}"
        )
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {shorten(raw)} is not valid YAML ({exc.__class__.__name__})") from None
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of `raw` with each `KEY=VALUE` override applied (later ones win)."""
    result = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {part} in the config file is not a mapping")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def read_yaml_mapping(path: Path, what: str = "config file") -> dict:
    """Read a YAML file that must hold a mapping; every failure is a one-line ConfigError."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise ConfigError(f"{what} {path} is not a regular file (a pipe or a device would never end)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_YAML_BYTES // 1024} KB: not a config")
        text = data.decode()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.__class__.__name__}: {shorten(getattr(exc, 'strerror', None) or exc)}"
        ) from None
    try:
        raw = load_yaml_text(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [exc.__class__.__name__])[0][:200]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections ({', '.join(Config.model_fields)}), got a {type(raw).__name__}"
        )
    return raw


def validate(raw: dict, source: str = "config") -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    _check_combinations(config)
    return config


def _check_combinations(config: Config) -> None:
    """Rules that involve more than one key."""
    lrn = config.model.lrn
    if config.model.norm == "lrn":
        try:
            canonical(lrn.size, lrn.alpha, lrn.beta, lrn.k, lrn.convention, lrn.region)
        except LRNParameterError as err:
            raise ConfigError(f"model.lrn.{err.key}: {err}") from None
        if lrn.learnable and (lrn.alpha <= 0 or lrn.beta <= 0):
            raise ConfigError(
                f"model.lrn.learnable: needs alpha > 0 and beta > 0 (learned as exp of a free parameter), "
                f"got alpha {lrn.alpha}, beta {lrn.beta}"
            )
        if lrn.depth_radius is not None and lrn.convention != "tensorflow":
            raise ConfigError(
                f"model.lrn.depth_radius: only the tensorflow convention has it; use size with {lrn.convention}"
            )
    model = config.model
    if model.init == "gaussian" and model.init_std is None:
        raise ConfigError("model.init_std: init gaussian needs it, one standard deviation per conv/linear layer")
    for key in ("init_std", "init_bias"):
        if model.init in ("pytorch", "glorot-uniform") and getattr(model, key) is not None:
            raise ConfigError(
                f"model.{key}: not used by init {model.init}; set model.init to gaussian or alexnet-paper"
            )
    if isinstance(model.norm_at, list) and (model.norm_at != sorted(set(model.norm_at)) or model.norm_at[0] < 1):
        raise ConfigError(f"model.norm_at: expected strictly ascending conv layers from 1, got {model.norm_at}")
    data = config.data
    if data.input_norm_per == "image" and not data.input_norm:
        raise ConfigError("data.input_norm_per: image standardises inputs, which needs data.input_norm: true")
    if data.input_norm_per == "image" and data.pixel_units:
        raise ConfigError("data.pixel_units: keeps the per-channel mean's pixel units; not with input_norm_per: image")
    train = config.train
    if train.schedule == "multistep" and not train.milestones:
        raise ConfigError("train.milestones: the multistep schedule needs its milestones (optimizer steps)")
    if train.milestones and list(train.milestones) != sorted(set(train.milestones)):
        raise ConfigError(f"train.milestones: expected strictly ascending steps, got {list(train.milestones)}")
    if config.train.amp and config.train.device == "mps":
        raise ConfigError("train.amp: bf16 autocast runs on CUDA and on CPUs with native bf16, not on mps")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Config file (or all defaults when path is None) + `--set` overrides -> validated Config."""
    raw = read_yaml_mapping(Path(path)) if path is not None else {}
    raw = apply_overrides(raw, list(overrides))
    return validate(raw, source=str(path) if path is not None else "config")


def differing_keys(saved: Config, wanted: Config) -> list[str]:
    """Keys on which two configs describe different experiments (see lrnbn.keys.MACHINE_KEYS)."""
    return _differing_flat(flatten(saved.model_dump(mode="json")), flatten(wanted.model_dump(mode="json")))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------------------------
# Reference documentation, generated so that README cannot drift from the schema.


def _describe_annotation(annotation) -> str:
    """int, float or null, list of float (> 0), a | b | c for a Literal: how the reference table names a type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        kinds = [_describe_annotation(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_describe_annotation(args[0])}"
    if origin is Annotated:
        bounds = _describe_range(args[1:])
        return f"{_describe_annotation(args[0])}" + (f" ({bounds})" if bounds else "")
    return getattr(annotation, "__name__", str(annotation))


def _describe_type(field) -> str:
    return _describe_annotation(field.annotation)


def _describe_range(metadata) -> str:
    parts = []
    # A Field(...) inside Annotated carries its bounds in its own metadata.
    for meta in [inner for m in metadata for inner in getattr(m, "metadata", [m])]:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{symbol} {getattr(meta, attr)}")
    return ", ".join(parts)


def reference_markdown() -> str:
    """A markdown table of every key: type/choices, default, range, help."""
    lines = ["| key | type | default | range | help |", "|---|---|---|---|---|"]
    defaults = Config().model_dump(mode="json")
    for key in all_keys():
        *sections, name = key.split(".")
        section = _section_at(tuple(sections))
        field = section.model_fields[name]
        default = lookup(defaults, key)
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        kind, bounds = _describe_type(field), _describe_range(field.metadata)
        lines.append(f"| `{key}` | {kind} | `{shown}` | {bounds} | {field.description} |")
    return "\n".join(lines) + "\n"
