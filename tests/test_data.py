import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrnbn.config import DataConfig
from lrnbn.data import (
    CACHE_NAME,
    DataError,
    DeviceSplit,
    Split,
    channel_stats,
    import_image_folder,
    load_dataset,
    synthetic_dataset,
)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_tree(root: Path, classes=("cat", "dog", "emu"), per_class=(4, 2), size=8, seed=0) -> dict:
    """train/<class>/i.png and test/<class>/i.png with known pixels; returns {(split, class, i): pixels}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split, count in zip(("train", "test"), per_class):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                (root / split / cls / f"{i}.png").write_bytes(_png(pixels))
                truth[(split, cls, i)] = pixels
    return truth


def tar_of(folder: Path, target: Path, prefix: str = "mydata") -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=prefix)
    return target


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_import_decodes_every_image_with_sorted_class_labels(tmp_path, packed):
    truth = make_image_tree(tmp_path / "src", classes=("emu", "cat", "dog"))
    source = tar_of(tmp_path / "src", tmp_path / "src.tar.gz") if packed else tmp_path / "src"
    info = import_image_folder(source, tmp_path / "data")
    assert info["classes"] == ["cat", "dog", "emu"] and (info["train_size"], info["test_size"]) == (12, 6)
    assert (info["source_sha256"] is not None) == packed
    dataset = load_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path / "data")), seed=0)
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        for cls_index, cls in enumerate(dataset.classes):
            got = split.images[split.labels == cls_index].permute(0, 2, 3, 1).numpy()
            expected = [truth[(split_name, cls, i)] for i in range(len(got))]
            np.testing.assert_array_equal(got, np.stack(expected))  # PNG is lossless: exact pixels


def test_imported_cifar_shaped_copy_serves_dataset_cifar10_when_the_original_files_are_absent(tmp_path):
    from lrnbn.data import CIFAR10_CLASSES

    make_image_tree(tmp_path / "src", classes=CIFAR10_CLASSES, per_class=(2, 1), size=32)
    import_image_folder(tmp_path / "src", tmp_path / "data")
    dataset = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "data")), seed=0)
    assert dataset.name == "cifar10" and "imported copy" in dataset.label
    assert tuple(dataset.train.images.shape) == (20, 3, 32, 32)


def test_non_cifar_import_is_refused_as_cifar10(tmp_path):
    make_image_tree(tmp_path / "src")
    import_image_folder(tmp_path / "src", tmp_path / "data")
    with pytest.raises(DataError, match="is not CIFAR-10.*use data.dataset: imagefolder"):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "data")), seed=0)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda root: _rmtree(root / "test"), "no test/ split"),
        (
            lambda root: [p.unlink() for p in (root / "train" / "dog").iterdir()],
            "class folder train/dog/ holds no images",
        ),
        (lambda root: (root / "train" / "cat" / "notes.txt").write_text("hi"), "notes.txt: not an image"),
        (lambda root: (root / "train" / "cat" / "bad.png").write_bytes(b"not a png"), "bad.png: cannot decode image"),
        (
            lambda root: (root / "test" / "cat" / "big.png").write_bytes(_png(np.zeros((9, 9, 3), np.uint8))),
            "big.png: image is 9x9",
        ),
        (lambda root: _rmtree(root / "test" / "emu"), "test/ lacks class folder(s) emu"),
    ],
)
def test_import_rejects_malformed_folders_and_writes_nothing(tmp_path, damage, message):
    make_image_tree(tmp_path / "src")
    damage(tmp_path / "src")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_image_folder(tmp_path / "src", tmp_path / "data")
    assert not (tmp_path / "data" / CACHE_NAME).exists()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_corrupted_cache_is_detected(tmp_path):
    make_image_tree(tmp_path / "src")
    import_image_folder(tmp_path / "src", tmp_path / "data")
    cache = tmp_path / "data" / CACHE_NAME
    blob = torch.load(cache, weights_only=True)
    blob["train_images"][0, 0, 0, 0] ^= 1
    torch.save(blob, cache)
    with pytest.raises(DataError, match="does not match its recorded content hash"):
        load_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path / "data")), seed=0)
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.raises(DataError, match="not a readable lrnbn cache"):
        load_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path / "data")), seed=0)


def test_cifar10_files_failing_torchvisions_check_are_reported(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    ]:
        (folder / name).write_bytes(b"truncated")
    with pytest.raises(DataError, match="failed torchvision's check"):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)


def test_wrong_labels_or_shapes_are_rejected():
    from lrnbn.data import check_split

    good = Split(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2, 1]))
    check_split(good, 3, "x")
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        check_split(good, 2, "x")
    with pytest.raises(DataError, match="images must be uint8"):
        check_split(Split(good.images.float(), good.labels), 3, "x")
    with pytest.raises(DataError, match="expected 4 labels"):
        check_split(Split(good.images, good.labels[:3]), 3, "x")


def test_synthetic_data_is_seeded_and_balanced_enough():
    a, b, c = (synthetic_dataset(500, 100, seed) for seed in (1, 1, 2))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.shape == (500, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert a.train.labels.bincount(minlength=10).min() > 25


def test_limits_take_the_same_subset_whatever_the_seed():
    cfg = DataConfig(
        dataset="synthetic", train_limit=50, test_limit=20, synthetic_train_size=300, synthetic_test_size=60
    )
    first, second = load_dataset(cfg, seed=3), load_dataset(cfg, seed=3)
    assert len(first.train) == 50 and len(first.test) == 20
    assert torch.equal(first.train.images, second.train.images)
    full = synthetic_dataset(300, 60, 3)
    rows = {bytes(img.numpy()) for img in full.train.images}
    assert all(bytes(img.numpy()) in rows for img in first.train.images)


def test_channel_stats_match_numpy():
    images = torch.randint(0, 256, (37, 3, 5, 6), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=8)
    as_float = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, as_float.std(axis=(0, 2, 3)), rtol=1e-9)


def test_batches_are_normalised_and_crops_are_real_shifted_flipped_copies():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    # Labels are the image indices, so each augmented image names its source.
    split = DeviceSplit(Split(images, torch.arange(64)), torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    plain = torch.cat([x for x, _ in split.eval_batches(10)])
    torch.testing.assert_close(plain, (images.float() / 255 - 0.5) / 0.25)

    padded = torch.nn.functional.pad(images.float() / 255, (4, 4, 4, 4))
    seen_offsets, flips, seen_sources = set(), 0, []
    for batch, sources in split.train_batches(16, torch.Generator().manual_seed(0), augment=True):
        for x, source in zip(batch, sources.tolist()):
            img = x * 0.25 + 0.5
            matches = [
                (dy, dx, flipped)
                for dy in range(9)
                for dx in range(9)
                for flipped in (False, True)
                if torch.allclose(img, _crop(padded[source], dy, dx, flipped), atol=1e-5)
            ]
            assert matches, "an augmented image is not a padded crop (or its mirror) of its source image"
            seen_offsets.add(matches[0][:2])
            flips += matches[0][2]
            seen_sources.append(source)
    assert sorted(seen_sources) == list(range(64))  # one epoch: every image once
    assert len(seen_offsets) > 20 and 10 < flips < 54  # offsets vary; about half the images are mirrored


def _crop(padded: torch.Tensor, dy: int, dx: int, flipped: bool) -> torch.Tensor:
    crop = padded[:, dy : dy + 8, dx : dx + 8]
    return crop.flip(-1) if flipped else crop


@pytest.mark.parametrize(
    "damage,fragment",
    [
        (lambda blob: blob.update(train_labels=blob["train_labels"] + 7), "labels must lie in 0..2"),
        (lambda blob: blob.update(test_images=blob["test_images"][:, :2]), "images must be uint8 [N, 3, H, W]"),
        (
            lambda blob: blob["train_images"].__setitem__((0, 0, 0, 0), 255 - blob["train_images"][0, 0, 0, 0]),
            "does not match its recorded content hash",
        ),
    ],
)
def test_training_on_a_damaged_cache_exits_2_with_one_line_and_writes_nothing(
    cli, tmp_path, write_config, damage, fragment
):
    make_image_tree(tmp_path / "src", per_class=(12, 4))
    import_image_folder(tmp_path / "src", tmp_path / "data")
    cache = tmp_path / "data" / CACHE_NAME
    blob = torch.load(cache, weights_only=True)
    damage(blob)
    torch.save(blob, cache)
    config = write_config(
        {"data": {"dataset": "imagefolder", "root": str(tmp_path / "data")}, "train": {"batch_size": 8}}
    )
    result = cli("train", "--config", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert fragment in result.stderr and not (tmp_path / "runs").exists()


def test_the_fixed_sample_holds_every_class_of_a_split_stored_class_by_class_and_leaves_training_rng_alone():
    # An imported image folder is stored class by class: its first 256 images would all be of class 0.
    labels = torch.arange(10).repeat_interleave(200)
    images = labels.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    split = DeviceSplit(Split(images, labels), torch.device("cpu"), [0.0] * 3, [1.0] * 3)
    state = torch.random.get_rng_state()
    batch, sample_labels = split.fixed_sample(256)
    assert torch.equal(torch.random.get_rng_state(), state)
    counts = torch.bincount(sample_labels, minlength=10)
    assert counts.min() > 0 and counts.max() / 256 <= 0.2, counts
    # The images are the labels' own (pixel value = class), and the same sample comes back every time.
    torch.testing.assert_close(batch[:, 0, 0, 0] * 255, sample_labels.float())
    again, again_labels = split.fixed_sample(256)
    assert torch.equal(again_labels, sample_labels) and torch.equal(again, batch)
