"""The image-folder import on a real CIFAR-10 copy, where one lies beside the repository (this project's CI keeps a
JPEG copy at ../shared/data/; LRNBN_CIFAR10_ARCHIVE names another). Skipped, saying why, where there is none."""

import os
from pathlib import Path

import pytest

from lrnbn.config import DataConfig
from lrnbn.data import CIFAR10_CLASSES, channel_stats, import_image_folder, load_dataset

ARCHIVE = Path(
    os.environ.get(
        "LRNBN_CIFAR10_ARCHIVE",
        Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpg.tar.gz",
    )
)

# The copy's own description gives these per-channel figures over its train split (the original binary release:
# mean 0.4914/0.4822/0.4465, std 0.2470/0.2435/0.2616; the JPEG copy is lossy).
JPEG_COPY_MEAN, JPEG_COPY_STD = (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)


@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"no offline CIFAR-10 copy at {ARCHIVE}")
def test_a_real_cifar10_archive_imports_to_the_full_dataset_with_its_published_statistics(tmp_path):
    info = import_image_folder(ARCHIVE, tmp_path)
    assert (info["train_size"], info["test_size"]) == (50_000, 10_000)
    dataset = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    assert dataset.classes == CIFAR10_CLASSES
    assert dataset.train.images.shape[1:] == (3, 32, 32)
    assert sorted(dataset.train.labels.bincount().tolist()) == [5000] * 10
    mean, std = channel_stats(dataset.train.images)
    assert mean == pytest.approx(JPEG_COPY_MEAN, abs=1e-4) and std == pytest.approx(JPEG_COPY_STD, abs=1e-4)
