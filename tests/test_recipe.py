"""The note's author's recipe as config keys: initialisations, norm positions, per-image standardization.

References are written out here from their sources, not taken from lrnbn: the AlexNet paper's section 5 for the
initialisation, Glorot & Bengio's bound for glorot-uniform, TensorFlow's documented per_image_standardization."""

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from lrnbn.config import ConfigError, ModelConfig, load_config, validate
from lrnbn.data import DeviceSplit, Split, per_image_standardization
from lrnbn.errors import UserError
from lrnbn.initialisation import initialise, weight_layers
from lrnbn.models import build_model
from lrnbn.norms import NormSlot
from lrnbn.trainer import Trainer

from .conftest import TINY, merged

# Krizhevsky et al. 2012, section 5: biases 1 in conv2, conv4, conv5 and the hidden fully connected layers, else 0.
PAPER_BIASES = {"alexnet": [0, 1, 0, 1, 1, 1, 1, 0], "cifar-full": [0, 1, 0, 0]}


def _initialised(**keys) -> nn.Module:
    cfg = ModelConfig(**keys)
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    initialise(model, cfg)
    return model


@pytest.mark.parametrize("arch", ["alexnet", "cifar-full"])
def test_alexnet_paper_init_draws_weights_of_std_0_01_and_sets_the_papers_biases(arch):
    layers = weight_layers(_initialised(arch=arch, width=1.0, init="alexnet-paper"))
    for layer, bias in zip(layers, PAPER_BIASES[arch], strict=True):
        w = layer.weight.detach().double()
        # The sample std of n draws has a relative standard error of 1/sqrt(2n): 5 of those is far from chance.
        assert abs(w.std().item() / 0.01 - 1) < 5 / math.sqrt(2 * w.numel())
        assert abs(w.mean().item()) < 5 * 0.01 / math.sqrt(w.numel())
        assert torch.equal(layer.bias.detach(), torch.full_like(layer.bias, bias))


def test_alexnet_paper_init_takes_per_layer_stds_and_biases_when_given():
    stds, biases = [0.1, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08], [0.5, 0, 0, 0, 0, 0, 0, 2.0]
    layers = weight_layers(_initialised(init="alexnet-paper", init_std=stds, init_bias=biases))
    for layer, std, bias in zip(layers, stds, biases, strict=True):
        assert abs(layer.weight.detach().std().item() / std - 1) < 5 / math.sqrt(2 * layer.weight.numel())
        assert torch.all(layer.bias == bias)


def test_glorot_uniform_stays_inside_keras_bound_with_its_variance_and_zero_biases():
    for layer in weight_layers(_initialised(init="glorot-uniform", width=0.5)):
        w = layer.weight.detach().double()
        receptive = w[0, 0].numel()  # 1 for a linear layer
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max().item() <= bound
        # U(-a, a) has variance a^2 / 3; the sample variance's relative error is about sqrt(0.8 / n).
        assert abs(w.var().item() / (bound**2 / 3) - 1) < 5 * math.sqrt(0.8 / w.numel())
        assert torch.all(layer.bias == 0)


def test_pytorch_default_is_left_as_the_layers_are_built():
    torch.manual_seed(0)
    built = build_model(ModelConfig(), 10)
    initialised = _initialised()
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), initialised.state_dict().values()))


def test_a_config_saved_before_init_reads_init_std_as_caffes_gaussian_filler():
    saved = {"init_std": [1e-4, 1e-2, 1e-2, 1e-2], "arch": "cifar-full"}
    cfg = ModelConfig.model_validate(saved)
    assert cfg.init == "gaussian"
    layers = weight_layers(_initialised(**saved))
    assert all(torch.all(layer.bias == 0) for layer in layers)
    assert abs(layers[0].weight.std().item() / 1e-4 - 1) < 0.1


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"model.init": "pytorch", "model.init_std": [0.1] * 8}, "model.init_std: not used by init pytorch"),
        (
            {"model.init": "glorot-uniform", "model.init_bias": [0] * 8},
            "model.init_bias: not used by init glorot-uniform",
        ),
        ({"model.init": "gaussian"}, "model.init_std: init gaussian needs it"),
        (
            {"model.init": "he"},
            "model.init: Input should be 'pytorch', 'gaussian', 'alexnet-paper' or 'glorot-uniform'",
        ),
        ({"model.norm_at": [5, 2]}, "model.norm_at: expected strictly ascending conv layers from 1, got [5, 2]"),
        ({"model.norm_at": [0]}, "expected strictly ascending conv layers from 1, got [0]"),
        ({"model.norm_at": "all"}, "model.norm_at: expected lrn, every or a list of conv layers"),
        ({"data.input_norm_per": "image", "data.input_norm": False}, "needs data.input_norm: true"),
        ({"data.input_norm_per": "image", "data.pixel_units": True}, "not with input_norm_per: image"),
    ],
)
def test_recipe_keys_refuse_what_they_would_ignore_or_cannot_do(keys, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f"{k}={v}" for k, v in keys.items()])


def test_per_layer_init_values_must_count_the_architectures_layers(tmp_path):
    config = validate(merged(TINY, {"model": {"init": "alexnet-paper", "init_bias": [0, 1]}}))
    with pytest.raises(UserError, match="model.init_bias: alexnet has 8 conv/linear layers, got 2 values"):
        Trainer.build(config)


def _norm_followed_convs(cfg: ModelConfig) -> list[int]:
    """1-based indices of the conv layers that a NormSlot follows, read off the built module sequence."""
    convs, followed = 0, []
    for module in build_model(cfg, 10)[0]:
        convs += isinstance(module, nn.Conv2d)
        if isinstance(module, NormSlot):
            followed.append(convs)
    return followed


@pytest.mark.parametrize(
    "arch, norm_at, expected",
    [
        ("alexnet", "lrn", [1, 2]),
        ("alexnet", "every", [1, 2, 3, 4, 5]),
        ("alexnet", [1, 2, 5], [1, 2, 5]),
        ("alexnet", [4], [4]),
        ("cifar-full", "lrn", [1, 2]),
        ("cifar-full", "every", [1, 2, 3]),
        ("cifar-full", [3], [3]),
    ],
)
@pytest.mark.parametrize("position", ["after_relu", "before_relu"])
def test_norm_at_puts_a_norm_after_exactly_the_named_conv_layers(arch, norm_at, expected, position):
    assert _norm_followed_convs(ModelConfig(arch=arch, norm_at=norm_at, norm="bn", norm_position=position)) == expected


def test_norm_at_beyond_the_architecture_names_its_conv_layers():
    with pytest.raises(UserError, match="model.norm_at: cifar-full has conv layers 1 to 3, got 5"):
        build_model(ModelConfig(arch="cifar-full", norm_at=[1, 5]), 10)


def test_norm_after_every_conv_of_a_saved_config_reads_as_norm_at_every():
    assert ModelConfig.model_validate({"norm_after_every_conv": True}).norm_at == "every"
    assert ModelConfig.model_validate({"norm_after_every_conv": False}).norm_at == "lrn"
    with pytest.raises(ValueError, match="disagrees with norm_at"):
        ModelConfig.model_validate({"norm_after_every_conv": True, "norm_at": [1]})


def _tf_per_image_standardization(image: np.ndarray) -> np.ndarray:
    """tf.image.per_image_standardization as TensorFlow documents it: (x - mean) / max(stddev, 1 / sqrt(N))."""
    adjusted = max(image.std(), 1.0 / math.sqrt(image.size))
    return (image - image.mean()) / adjusted


def test_per_image_standardization_matches_tensorflows_formula_including_flat_images():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (5, 3, 8, 8))
    images[1] = 0.7  # flat: the floor keeps it at zero instead of dividing by zero
    images[2] = 0.5 + 1e-3 * rng.standard_normal((3, 8, 8))  # std below the floor 1/sqrt(192)
    got = per_image_standardization(torch.from_numpy(images)).numpy()
    for image, standardized in zip(images, got):
        np.testing.assert_allclose(standardized, _tf_per_image_standardization(image), rtol=1e-12, atol=1e-12)


def test_input_norm_per_image_feeds_the_net_images_scaled_to_0_1_then_standardized(tmp_path):
    trainer = Trainer.build(validate(merged(TINY, {"data": {"input_norm_per": "image", "augment": False}})))
    images, _ = next(trainer.train_split.eval_batches(16))
    raw = trainer.dataset.train.images[:16].double().numpy() / 255
    for image, fed in zip(raw, images.double().numpy()):
        np.testing.assert_allclose(fed, _tf_per_image_standardization(image), rtol=1e-4, atol=1e-4)
    assert trainer.mean == [0.0] * 3 and trainer.std == [1.0] * 3  # no per-channel statistics on top


def test_device_split_without_per_image_keeps_per_channel_normalisation():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    split = DeviceSplit(Split(images, torch.arange(4)), torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    fed, _ = next(split.eval_batches(4))
    torch.testing.assert_close(fed, (images.float() / 255 - 0.5) / 0.25)


def test_the_note_authors_anchor_loads_as_his_recipe():
    config = load_config("configs/anchors/note-author.yaml")
    assert (config.model.init, config.model.norm_at, config.data.input_norm_per) == (
        "alexnet-paper",
        [1, 2, 5],
        "image",
    )
    lrn = config.model.lrn
    assert (lrn.convention, lrn.size, lrn.alpha, lrn.beta, lrn.k) == ("tensorflow", 11, 1e-4, 0.75, 2.0)
    assert not config.data.augment and config.train.schedule == "constant"
