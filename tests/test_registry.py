"""The torch-free declarations of lrnbn.registry against the torch-side builders and the config schema: every declared
name has exactly one builder and every builder a declaration, the schema offers exactly the declared names, a norm's
own keys exist, and lookups and registrations that go wrong say what is valid."""

import typing

import pytest

import lrnbn.initialisation  # noqa: F401  (registers the inits)
import lrnbn.models  # noqa: F401  (registers the architectures, and through norms and lrn the norms and LRN impls)
from lrnbn.config import LRNConfig, ModelConfig, all_keys
from lrnbn.keys import is_norm_key, norms_owning, variant_settings
from lrnbn.registry import ARCHITECTURES, INITS, LRN_IMPLS, NORMS, Choice, Registry

# Each registry with the schema field whose values it names.
REGISTRIES = [
    (ARCHITECTURES, ModelConfig, "arch"),
    (NORMS, ModelConfig, "norm"),
    (INITS, ModelConfig, "init"),
    (LRN_IMPLS, LRNConfig, "impl"),
]


@pytest.mark.parametrize("registry,section,field", REGISTRIES, ids=[f for _, _, f in REGISTRIES])
def test_every_declared_name_has_a_builder_and_the_schema_offers_exactly_those(registry, section, field):
    assert sorted(registry.registered) == sorted(registry.names)
    assert typing.get_args(section.model_fields[field].annotation) == registry.names
    assert section.model_fields[field].default in registry.names
    for name in registry.names:
        assert f"{name}: {registry.choices[name].help}" in section.model_fields[field].description


def test_a_builder_without_a_declaration_or_a_second_builder_is_refused():
    registry = Registry("part", Choice("one", "the only one"))
    registry.register("one")(len)
    with pytest.raises(LookupError, match="'two' has a builder but no declaration"):
        registry.register("two")
    with pytest.raises(LookupError, match="'one' has two builders"):
        registry.register("one")
    assert registry["one"] is len


def test_an_unknown_name_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown norm 'wn'; choose one of bn, lrn, gn, ln, none"):
        NORMS["wn"]


def test_the_keys_a_norm_owns_are_schema_keys_or_sections():
    keys = all_keys()
    for choice in NORMS.choices.values():
        for own in choice.owns:
            assert own in keys or any(k.startswith(own + ".") for k in keys), (choice.name, own)


def test_a_norms_own_keys_tune_it_alone():
    assert norms_owning("model.gn_groups") == ("gn",)
    assert norms_owning("model.norm_affine") == ("bn", "gn", "ln")
    assert norms_owning("model.lrn.size") == ("lrn",)
    assert norms_owning("model.width") == () and norms_owning("model.lrn_size") == ()
    assert is_norm_key("model.lrn.impl") and is_norm_key("model.norm") and not is_norm_key("model.init")
    flat = {"model.norm": "bn", "model.norm_affine": True, "model.gn_groups": 32, "model.lrn.size": 5, "model.width": 1}
    assert variant_settings(flat) == {"model.norm": "bn", "model.norm_affine": True, "model.width": 1}
    flat["model.norm"] = "lrn"
    assert variant_settings(flat) == {"model.norm": "lrn", "model.lrn.size": 5, "model.width": 1}
