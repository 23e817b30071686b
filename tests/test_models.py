import pytest
import torch
from torch import nn

from lrnbn.config import ModelConfig
from lrnbn.lrn import LRN
from lrnbn.models import build_model, count_parameters
from lrnbn.norms import NormSlot

ARCHS, NORMS = ["alexnet", "cifar-full"], ["bn", "lrn", "none"]
NORM_TYPES = {"bn": nn.BatchNorm2d, "lrn": LRN}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("every", [False, True])
def test_every_arch_and_norm_gives_logits_per_class(arch, norm, every):
    cfg = ModelConfig(arch=arch, norm=norm, width=0.25, norm_after_every_conv=every)
    model = build_model(cfg, num_classes=10)
    logits = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    norm_layers = [m for m in model.modules() if norm != "none" and isinstance(m, NORM_TYPES[norm])]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    expected = len(convs) if every else 2  # both nets had LRN at two positions
    assert len(norm_layers) == (0 if norm == "none" else expected)


def test_norm_sits_after_the_relu_of_conv1_in_alexnet():
    layers = list(build_model(ModelConfig(norm="bn", width=0.25), 10)[0])
    assert [type(m) for m in layers[:4]] == [nn.Conv2d, nn.ReLU, NormSlot, nn.MaxPool2d]
    assert isinstance(layers[2].inner, nn.BatchNorm2d)


def test_variants_differ_only_by_the_norm_layers_parameters():
    counts = {n: count_parameters(build_model(ModelConfig(norm=n, width=0.5), 10)) for n in NORMS}
    assert counts["lrn"] == counts["none"]  # LRN has no trainable parameters: the note's C1
    bn_extra = counts["bn"]["trainable"] - counts["none"]["trainable"]
    assert bn_extra == counts["bn"]["norm_trainable"] == 2 * (32 + 96)  # gamma and beta per channel


def test_width_scales_channels_and_other_class_counts_work():
    model = build_model(ModelConfig(arch="cifar-full", width=2.0, norm="none"), num_classes=7)
    assert model[0][0].out_channels == 64
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_norm_parameter_count_sees_batch_norm_turned_into_sync_batch_norm():
    # torchrun with model.sync_bn swaps every BatchNorm2d for SyncBatchNorm, which is not a subclass of it.
    model = build_model(ModelConfig(norm="bn", width=0.5), 10)
    plain = count_parameters(model)
    synced_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced_model.modules())
    synced = count_parameters(synced_model)
    assert synced == plain and synced["norm_trainable"] == 2 * (32 + 96)


def _norm_layers(cfg: ModelConfig) -> list[nn.Module]:
    return [slot.inner for slot in build_model(cfg, 10).modules() if isinstance(slot, NormSlot)]


@pytest.mark.parametrize("affine", [True, False])
def test_group_and_layer_norm_match_torchs_own_layers(affine):
    torch.manual_seed(0)
    x = torch.randn(4, 48, 5, 5) * 3 + 1
    gn = _norm_layers(ModelConfig(norm="gn", width=0.25, norm_affine=affine))[1]  # conv2 at width 0.25: 48 channels
    assert gn.num_groups == 24  # 32 does not divide 48: the largest divisor below it
    ln = _norm_layers(ModelConfig(norm="ln", width=0.25, norm_affine=affine))[1]
    for layer in (gn, ln):
        if affine:
            with torch.no_grad():
                layer.weight.uniform_(0.5, 2)
                layer.bias.uniform_(-1, 1)
        else:
            assert not list(layer.parameters())
    torch.testing.assert_close(gn(x), nn.functional.group_norm(x, 24, gn.weight, gn.bias, eps=gn.eps))
    reference = nn.LayerNorm([48, 5, 5], elementwise_affine=False, eps=ln.eps)(x)
    if affine:
        reference = reference * ln.weight[:, None, None] + ln.bias[:, None, None]
    torch.testing.assert_close(ln(x), reference, rtol=1e-5, atol=1e-5)


def test_batch_norm_without_affine_is_torchs_and_has_no_trainable_parameters():
    model = build_model(ModelConfig(norm="bn", width=0.25, norm_affine=False), 10)
    bn = _norm_layers(ModelConfig(norm="bn", width=0.25, norm_affine=False))[0]
    reference = nn.BatchNorm2d(16, affine=False)
    x = torch.randn(8, 16, 6, 6)
    torch.testing.assert_close(bn(x), reference(x))
    assert count_parameters(model)["norm_trainable"] == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_norm_position_puts_the_norm_before_or_after_the_relu(arch):
    for position, expected in (("after_relu", (nn.ReLU, NormSlot)), ("before_relu", (NormSlot, nn.ReLU))):
        layers = list(build_model(ModelConfig(arch=arch, norm="bn", width=0.25, norm_position=position), 10)[0])
        first_norm = next(i for i, m in enumerate(layers) if isinstance(m, NormSlot))
        pair = (
            (layers[first_norm - 1], layers[first_norm])
            if position == "after_relu"
            else layers[first_norm : first_norm + 2]
        )
        assert tuple(type(m) for m in pair) == expected
        assert sum(isinstance(m, NormSlot) for m in layers) == 2


def test_a_learnable_lrn_counts_its_three_parameters_per_layer():
    from lrnbn.config import LRNConfig

    model = build_model(ModelConfig(norm="lrn", width=0.25, lrn=LRNConfig(learnable=True)), 10)
    assert count_parameters(model)["norm_trainable"] == 2 * 3
