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
