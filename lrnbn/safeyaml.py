"""YAML and messages with bounds: what lrnbn reads from a user (configs, studies) or from disk (a run's config.yaml)
cannot make it hang or fill memory, and no message repeats a huge value. No torch here: the report uses it too."""

from __future__ import annotations

import yaml

MAX_YAML_BYTES = 1 << 20  # a config or study file is a few kilobytes; an endless one must not fill memory
# Nested aliases expand exponentially when a value is walked (a "billion laughs" file of a few hundred bytes): the
# document's size with every alias expanded is bounded, as is its nesting.
MAX_YAML_NODES = 10_000  # a config has about 50 values, a large study a few hundred
MAX_YAML_DEPTH = 32


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds on the expanded size and the nesting, and duplicate keys refused (PyYAML
    keeps the last silently)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = self.total = 0
        self.expanded: dict[int, int] = {}  # id(node) -> its size with aliases expanded

    def compose_node(self, parent, index):
        # Count as nodes arrive (an alias counts its anchor's expanded size), so that a long list is stopped at the
        # bound rather than after it has been read whole.
        if self.check_event(yaml.AliasEvent):
            anchored = self.anchors.get(self.peek_event().anchor)
            self.total += self.expanded.get(id(anchored), 1)
        else:
            self.total += 1
        if self.total > MAX_YAML_NODES:
            raise yaml.YAMLError(f"more than {MAX_YAML_NODES} values once its aliases are expanded")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if id(node) not in self.expanded:  # an alias returns its anchor's node, already counted
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            )
            self.expanded[id(node)] = 1 + sum(self.expanded.get(id(child), 1) for child in children)
        return node

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if repeated is not None:
            raise yaml.YAMLError(f"key {shorten(repeated)} appears twice in one mapping")
        return super().construct_mapping(node, deep=deep)


def shorten(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a message never repeats a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc: BaseException, limit: int = 120) -> str:
    """An exception as one short line: its class and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml_text(text: str):
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a safe loader with bounds)
