"""Which config keys define an experiment: the one home of these rules, for the trainer and the readers alike.

Configs travel as nested dicts (a run's config.yaml) or as the validated schema (lrnbn.config.Config); keys are
dotted paths (`model.lrn.k`). No torch here: the report reads runs without importing it.
"""

from __future__ import annotations

from lrnbn.registry import NORMS

# Keys that say where and how fast a run computes, not what it computes: a resumed run may change them, a stale-run
# check ignores them, and they never split a study's variants. (train.threads and train.channels_last can change the
# order of float sums, so a run resumed with other values is equal to an uninterrupted one only up to rounding.)
MACHINE_KEYS = frozenset(
    {"data.root", "data.download", "train.eval_batch_size", "train.threads", "train.channels_last", "log.tensorboard"}
)

# Keys that name a run within its study rather than describe its setting: the seeds of one variant differ here.
IDENTITY_KEYS = frozenset({"experiment.seed", "experiment.name"})

NORM_KEY = "model.norm"
LRN_PREFIX = "model.lrn."


def lookup(config, dotted: str):
    """The value at a dotted key of a nested dict or of the config schema; None where a part is missing (a run
    written before the key existed)."""
    value = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        if value is None:
            return None
    return value


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"lrn": {"k": 2}}} -> {"model.lrn.k": 2}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_keys(saved: dict, wanted: dict) -> list[str]:
    """Keys (of two flattened configs) on which they describe different experiments."""
    keys = list(dict.fromkeys([*saved, *wanted]))
    return [k for k in keys if k not in MACHINE_KEYS and saved.get(k) != wanted.get(k)]


def norms_owning(key: str) -> tuple[str, ...]:
    """The normalizations that declare `key`, or a section holding it, as their own (lrnbn.registry.NORMS): the key
    tunes those alone. Empty for every other key."""
    return tuple(
        choice.name
        for choice in NORMS.choices.values()
        if any(key == own or key.startswith(own + ".") for own in choice.owns)
    )


def variant_settings(flat: dict) -> dict:
    """What makes a run's setting: its flattened config without machine and identity keys, and without the keys of
    normalizations the run does not have (LRN's keys mean nothing to a BN run)."""
    norm = flat.get(NORM_KEY)

    def applies(key: str) -> bool:
        owners = norms_owning(key)
        return not owners or norm in owners

    return {k: v for k, v in flat.items() if k not in MACHINE_KEYS and k not in IDENTITY_KEYS and applies(k)}


def is_norm_key(key: str) -> bool:
    """Keys that choose or tune the normalization: the keys in which a fair comparison of norms may differ."""
    return key == NORM_KEY or bool(norms_owning(key))


def effective_norm(settings: dict) -> str | None:
    """The normalization a run really has: an LRN with alpha 0 is the identity, so it counts as none; BN without its
    affine and LRN with learned parameters are the ablations "bn-noaffine" and "lrn-learnable", not the BN and LRN
    the note compares."""
    norm = settings.get(NORM_KEY)
    if norm == "lrn" and settings.get(f"{LRN_PREFIX}alpha") == 0:
        return "none"
    if norm == "lrn" and settings.get(f"{LRN_PREFIX}learnable"):
        return "lrn-learnable"
    if norm == "bn" and settings.get("model.norm_affine") is False:
        return "bn-noaffine"
    return norm
