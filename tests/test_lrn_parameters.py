"""The Python API refuses LRN parameters as the config does, from one rule (conventions.PARAMETER_BOUNDS, checked in
conventions.canonical), for every convention: a ValueError naming the parameter and its valid range, before any
tensor is computed."""

import math

import pytest
import torch
from pydantic import ValidationError

from lrnbn.config import ConfigError, LRNConfig, validate
from lrnbn.conventions import CONVENTIONS, LRNParameterError
from lrnbn.lrn import LRN, local_response_norm
from tests.conftest import TINY, merged

VALID = {"alpha": 1e-4, "beta": 0.75, "k": 1.0}
# The values the issue found accepted, each with the range its message must give.
REFUSED = [
    ("alpha", -1.0, ">= 0"),
    ("k", 0.0, "> 0"),
    ("k", -2.0, "> 0"),
    ("beta", -0.75, ">= 0"),
    ("alpha", math.nan, ">= 0"),
    ("k", math.inf, "> 0"),
]


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("key,value,valid_range", REFUSED, ids=[f"{k}={v}" for k, v, _ in REFUSED])
def test_the_function_and_the_module_refuse_a_parameter_outside_its_range(convention, key, value, valid_range):
    params = {**VALID, key: value}
    message = f"^{key} must be a finite number {valid_range}, got {value}$"
    x = torch.randn(2, 6, 3, 3)
    with pytest.raises(LRNParameterError, match=message) as refused:
        local_response_norm(x, 3, params["alpha"], params["beta"], params["k"], convention=convention)
    assert isinstance(refused.value, ValueError) and refused.value.key == key
    with pytest.raises(LRNParameterError, match=message):
        LRN(3, **params, convention=convention)


def _refused_by_the_api(convention: str, params: dict) -> bool:
    try:
        LRN(3, **params, convention=convention)
    except LRNParameterError:
        return True
    return False


def _refused_by_the_config(convention: str, params: dict) -> bool:
    try:
        validate(merged(TINY, {"model": {"norm": "lrn", "lrn": {"convention": convention, "size": 3, **params}}}))
    except ConfigError:
        return True
    return False


# Around each bound, and beyond: cuDNN's own lower limits (k >= 1e-5, beta >= 0.01) sit inside the shared ranges.
CANDIDATES = (
    [("alpha", v) for v in (-1.0, -1e-12, 0.0, 1e-4, 10.0, math.inf, -math.inf, math.nan)]
    + [("beta", v) for v in (-0.75, 0.0, 0.005, 0.75, 3.0, math.inf, math.nan)]
    + [("k", v) for v in (-2.0, 0.0, 1e-6, 1e-5, 1.0, math.inf, math.nan)]
)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_the_api_refuses_exactly_what_the_config_refuses(convention):
    for key, value in CANDIDATES:
        params = {**VALID, key: value}
        assert _refused_by_the_api(convention, params) == _refused_by_the_config(convention, params), (key, value)


def test_the_config_refuses_a_non_finite_parameter_even_where_no_lrn_is_built():
    with pytest.raises(ValidationError, match="Input should be a finite number"):
        LRNConfig(k=math.inf)


# cuDNN refuses beta 0 itself (lrnBeta >= 0.01), in the API and the config alike.
@pytest.mark.parametrize("convention", [c for c in CONVENTIONS if c != "cudnn"])
def test_parameters_at_their_bounds_are_accepted_and_leave_the_input_as_it_is(convention):
    x = torch.randn(2, 6, 3, 3)
    out = local_response_norm(x, 3, alpha=0.0, beta=0.0, k=1e-9, convention=convention)
    torch.testing.assert_close(out, x)  # alpha 0 and beta 0: nothing to normalize by
