"""Datasets as whole uint8 tensors, and a batch iterator that augments whole batches on the training device.

Sources: torchvision's CIFAR-10 files (or their download), an image-folder archive decoded once into a cache by
`lrnbn data import`, and synthetic CIFAR-shaped data generated from the seed. Each ends as a `Dataset` of two
`Split`s (uint8 [N, 3, H, W] images, int64 labels), checked by one function whatever its source.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lrnbn.config import DataConfig
from lrnbn.errors import UserError, writing
from lrnbn.rundir import atomic_write
from lrnbn.safeyaml import one_line

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CACHE_NAME = "lrnbn-imagefolder.pt"
CACHE_FORMAT = 1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# Limits pick from one fixed order, independent of experiment.seed, so that every seed of a study sees the same subset.
LIMIT_ORDER_SEED = 0
# The fixed sample (the probe batch) is drawn the same way, so every run of a study probes the same images.
SAMPLE_ORDER_SEED = 1


class DataError(UserError):
    """A dataset that is absent, corrupted or malformed."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    name: str  # the config's data.dataset
    label: str  # what to call it in reports, e.g. "CIFAR-10 (imported copy: cifar10-jpg.tar.gz)"
    source: str  # where the pixels came from
    classes: tuple[str, ...]
    train: Split
    test: Split
    full_sizes: tuple[int, int]  # before train_limit / test_limit

    def fingerprint(self) -> str:
        return content_hash(self.classes, self.train, self.test)[:16]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "source": self.source,
            "fingerprint": self.fingerprint(),
            "classes": list(self.classes),
            "train_size": len(self.train),
            "test_size": len(self.test),
            "full_train_size": self.full_sizes[0],
            "full_test_size": self.full_sizes[1],
            "image_shape": list(self.train.images.shape[1:]),
        }


def content_hash(classes, train: Split, test: Split) -> str:
    digest = hashlib.sha256("\n".join(classes).encode())
    for split in (train, test):
        digest.update(split.images.contiguous().numpy().tobytes())
        digest.update(split.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_split(split: Split, num_classes: int, where: str) -> None:
    """The one place that decides whether a split is usable, whatever produced it."""
    images, labels = split.images, split.labels
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{where}: images must be uint8 [N, 3, H, W], got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: expected {len(images)} labels, got {tuple(getattr(labels, 'shape', ()))}")
    if len(images) == 0:
        raise DataError(f"{where}: no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"{where}: labels must lie in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Loading a dataset from config.


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    if cfg.dataset == "synthetic":
        dataset = synthetic_dataset(cfg.synthetic_train_size, cfg.synthetic_test_size, seed)
    elif cfg.dataset == "cifar10":
        dataset = _load_cifar10(Path(cfg.root), cfg.download)
    else:
        dataset = _load_import_cache(Path(cfg.root), require_cifar10=False)
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        check_split(split, len(dataset.classes), f"{dataset.label} {split_name} split")
    dataset.train = _limit(dataset.train, cfg.train_limit, "data.train_limit")
    dataset.test = _limit(dataset.test, cfg.test_limit, "data.test_limit")
    return dataset


def _limit(split: Split, limit: int | None, key: str) -> Split:
    if limit is None:
        return split
    if limit > len(split):
        raise DataError(f"{key}: {limit} exceeds the {len(split)} images of the split")
    order = fixed_order(len(split), LIMIT_ORDER_SEED)[:limit]
    return Split(split.images[order], split.labels[order])


def fixed_order(n: int, seed: int) -> torch.Tensor:
    """A permutation of range(n) from a generator of its own: the same in every run, training's RNG untouched."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _load_cifar10(root: Path, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10

    torchvision_dir = root / CIFAR10.base_folder
    cache = root / CACHE_NAME
    if not torchvision_dir.exists() and cache.exists():
        return _load_import_cache(root, require_cifar10=True)
    if not torchvision_dir.exists() and not download:
        raise DataError(
            f"CIFAR-10 not found under {root}/ (no {CIFAR10.base_folder}/ and no {CACHE_NAME}): "
            f"set data.download: true to download it through torchvision, or run "
            f"`lrnbn data import ARCHIVE --root {root}` for an offline copy"
        )
    splits = []
    for train in (True, False):
        try:
            # torchvision checks each batch file's md5 before reading it, and downloads when asked and absent.
            ds = CIFAR10(str(root), train=train, download=download)
        except RuntimeError as exc:
            raise DataError(
                f"CIFAR-10 files under {torchvision_dir}/ failed torchvision's check ({exc}); "
                f"delete the folder and set data.download: true, or import an offline copy"
            ) from None
        except (OSError, ValueError) as exc:  # network failures surface as URLError (an OSError)
            raise DataError(f"CIFAR-10 download into {root}/ failed: {exc}") from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        splits.append(Split(images, torch.tensor(ds.targets, dtype=torch.int64)))
    return Dataset(
        name="cifar10",
        label="CIFAR-10",
        source=f"torchvision files in {torchvision_dir}",
        classes=CIFAR10_CLASSES,
        train=splits[0],
        test=splits[1],
        full_sizes=(len(splits[0]), len(splits[1])),
    )


def _load_import_cache(root: Path, require_cifar10: bool) -> Dataset:
    path = root / CACHE_NAME
    if not path.exists():
        raise DataError(f"no imported image folder at {path}: run `lrnbn data import PATH --root {root}` first")
    try:
        blob = torch.load(path, weights_only=True)
        classes = tuple(blob["classes"])
        train = Split(blob["train_images"], blob["train_labels"])
        test = Split(blob["test_images"], blob["test_labels"])
        stored_hash, source = blob["content_sha256"], blob["source"]
    except Exception as exc:  # a truncated or foreign file can fail in many ways; all mean the same to the user
        raise DataError(
            f"{path} is not a readable lrnbn cache ({exc.__class__.__name__}): run `lrnbn data import` again"
        ) from None
    for split_name, split in (("train", train), ("test", test)):
        check_split(split, len(classes), f"{path} {split_name} split")
    if content_hash(classes, train, test) != stored_hash:
        raise DataError(f"{path} does not match its recorded content hash (corrupted): run `lrnbn data import` again")
    if require_cifar10 and (classes != CIFAR10_CLASSES or tuple(train.images.shape[1:]) != (3, 32, 32)):
        raise DataError(
            f"data.dataset is cifar10 but the image folder imported at {path} is not CIFAR-10 "
            f"(classes {', '.join(classes[:4])}...); use data.dataset: imagefolder"
        )
    name = "cifar10" if require_cifar10 else "imagefolder"
    label = f"CIFAR-10 (imported copy: {Path(source).name})" if require_cifar10 else f"image folder {Path(source).name}"
    return Dataset(
        name,
        label,
        f"{source} (sha256 {blob.get('source_sha256') or 'n/a'})",
        classes,
        train,
        test,
        (len(train), len(test)),
    )


# ---------------------------------------------------------------------------------------------------------------
# `lrnbn data import`: an image folder or archive -> one cache file.


@dataclass
class _ImageEntry:
    split: str
    cls: str
    name: str
    read: Callable[[], bytes]


# One image file of a dataset is kilobytes; a member claiming more is damage or a trap, not an image.
MAX_IMAGE_BYTES = 16 << 20
MAX_IMAGE_PIXELS = 4096 * 4096  # checked from the header, before decoding: a larger image would take gigabytes
MB = 1 << 20
# What an import may decode in all (RGB bytes, the cache's size), checked from the headers before decoding: 11 times
# CIFAR-10's 176 MB. Decoding, stacking and saving hold about three copies at once. A few MB of archive can hold
# gigabytes of uniform pixels (a decompression bomb), each image under MAX_IMAGE_PIXELS.
MAX_DECODED_MB = 2048
# A damaged archive fails in many ways inside tarfile, gzip, bz2, lzma and zlib.
ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error)


def _entries_from_tar(path: Path) -> tuple[list[_ImageEntry], set[tuple[str, str]]]:
    members = []
    try:
        archive = tarfile.open(path, "r:*")
        # Member by member, so that a header claiming a huge size is refused before tarfile seeks past it.
        while (member := archive.next()) is not None:
            if member.isfile() and member.size > MAX_IMAGE_BYTES:
                raise DataError(
                    f"{path}: member {member.name[:80]} claims {member.size} bytes, more than an image "
                    f"({MAX_IMAGE_BYTES >> 20} MB): a damaged or hostile archive"
                )
            members.append(member)
        # tarfile ends quietly at a header it cannot read, and gzip checks its CRC only at the end of the stream:
        # read what is left, which in a whole archive is zero padding.
        if archive.fileobj.read().strip(b"\0"):
            raise DataError(f"{path}: damaged: unreadable data after member {members[-1].name[:80] if members else 0}")
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{path}: not a readable .tar/.tar.gz archive ({one_line(exc)})") from None
    entries, class_dirs = [], set()
    for member in members:
        parts = Path(member.name).parts
        if member.isdir() and len(parts) >= 2 and parts[-2] in ("train", "test"):
            class_dirs.add((parts[-2], parts[-1]))
        if not member.isfile() or len(parts) < 3 or parts[-3] not in ("train", "test") or parts[-1].startswith("."):
            continue
        entries.append(_ImageEntry(parts[-3], parts[-2], member.name, lambda m=member: _member_bytes(archive, m, path)))
    return entries, class_dirs


def _member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    try:
        return archive.extractfile(member).read()
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{path}: damaged at {member.name[:80]} ({one_line(exc)})") from None


def _entries_from_folder(path: Path) -> tuple[list[_ImageEntry], set[tuple[str, str]]]:
    entries, class_dirs = [], set()
    for split_dir in sorted(p for p in path.rglob("*") if p.is_dir() and p.name in ("train", "test")):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            class_dirs.add((split_dir.name, class_dir.name))
            for file in sorted(class_dir.iterdir()):
                if file.is_file() and not file.name.startswith("."):
                    entries.append(_ImageEntry(split_dir.name, class_dir.name, str(file), file.read_bytes))
    return entries, class_dirs


@contextmanager
def _opened(entry: _ImageEntry):
    """The entry as a PIL image: its header is read, its pixels are decoded only when asked for."""
    from PIL import Image, UnidentifiedImageError

    if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{entry.name}: not an image (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        with Image.open(io.BytesIO(entry.read())) as image:
            yield image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{entry.name[:120]}: cannot decode image ({one_line(exc)})") from None


def _check_decoded_size(source: Path, entries: list[_ImageEntry], max_decoded_mb: float) -> None:
    """Refuse, from the image headers alone, what would take too much memory to decode: an image over
    MAX_IMAGE_PIXELS, more than max_decoded_mb in all, or images of different sizes. Decoding allocates what the
    header states, so a header that lies about its data cannot take more than this counts."""
    if not max_decoded_mb > 0:
        raise DataError(f"--max-decoded-mb: a number of MB above 0, got {max_decoded_mb}")
    sizes = []
    for entry in entries:
        with _opened(entry) as image:
            width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(
                f"{entry.name[:120]}: {width}x{height} pixels, more than an import takes "
                f"({MAX_IMAGE_PIXELS} pixels per image)"
            )
        sizes.append((width, height))
    decoded = sum(3 * width * height for width, height in sizes)
    if decoded > max_decoded_mb * MB:
        raise DataError(
            f"{source}: its {len(entries)} images would decode to {decoded / MB:,.2f} MB, more than the "
            f"{max_decoded_mb:g} MB an import may decode; with about three times that memory free, raise the "
            f"limit with --max-decoded-mb"
        )
    for entry, (width, height) in zip(entries, sizes):
        if (width, height) != sizes[0]:
            raise DataError(f"{entry.name}: image is {width}x{height}, others are {sizes[0][0]}x{sizes[0][1]}")


def _decode(entry: _ImageEntry) -> np.ndarray:
    with _opened(entry) as image:
        return np.asarray(image.convert("RGB"))


def _classes(source: Path, entries: list[_ImageEntry], class_dirs: set[tuple[str, str]]) -> tuple[str, ...]:
    """The class names, sorted, once both splits are checked to hold a folder with images for each."""
    for split in ("train", "test"):
        if not any(e.split == split for e in entries) and not any(s == split for s, _ in class_dirs):
            raise DataError(f"{source}: no {split}/ split found (expected train/<class>/* and test/<class>/* images)")
    class_dirs = class_dirs | {(e.split, e.cls) for e in entries}
    classes = tuple(sorted({c for _, c in class_dirs}))
    for split in ("train", "test"):
        split_classes = {c for s, c in class_dirs if s == split}
        if split_classes != set(classes):
            missing = sorted(set(classes) - split_classes)
            raise DataError(f"{source}: {split}/ lacks class folder(s) {', '.join(missing)} found in the other split")
        for cls in classes:
            if not any(e.split == split and e.cls == cls for e in entries):
                raise DataError(f"{source}: class folder {split}/{cls}/ holds no images")
    return classes


def import_image_folder(
    source: Path,
    root: Path,
    progress: Callable[[int, int], None] | None = None,
    max_decoded_mb: float = MAX_DECODED_MB,
) -> dict:
    """Decode `source` (folder or .tar/.tar.gz with train/<class>/* and test/<class>/*) into ROOT/lrnbn-imagefolder.pt.

    Returns a description of what was imported. Nothing is written unless every image decodes, and nothing is
    decoded unless the headers say it all fits in max_decoded_mb.
    """
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if not (source.is_dir() or source.is_file()):
        raise DataError(f"{source}: not a folder or a regular file (a device or a pipe cannot be an archive)")
    entries, class_dirs = _entries_from_folder(source) if source.is_dir() else _entries_from_tar(source)
    classes = _classes(source, entries, class_dirs)
    entries.sort(key=lambda e: (e.split, classes.index(e.cls), e.name))
    _check_decoded_size(source, entries, max_decoded_mb)
    arrays: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for done, entry in enumerate(entries, 1):
        arrays[entry.split].append(_decode(entry))
        labels[entry.split].append(classes.index(entry.cls))
        if progress:
            progress(done, len(entries))

    def to_split(split: str) -> Split:
        images = torch.from_numpy(np.stack(arrays[split]).transpose(0, 3, 1, 2).copy())
        return Split(images, torch.tensor(labels[split], dtype=torch.int64))

    train, test = to_split("train"), to_split("test")
    blob = {
        "format": CACHE_FORMAT,
        "classes": list(classes),
        "train_images": train.images,
        "train_labels": train.labels,
        "test_images": test.images,
        "test_labels": test.labels,
        "source": str(source.resolve()),
        "source_sha256": _file_sha256(source) if source.is_file() else None,
        "content_sha256": content_hash(classes, train, test),
    }
    target = root / CACHE_NAME
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda f: torch.save(blob, f))
    return {
        "cache": str(target),
        "classes": list(classes),
        "train_size": len(train),
        "test_size": len(test),
        "image_shape": list(train.images.shape[1:]),
        "source_sha256": blob["source_sha256"],
        "content_sha256": blob["content_sha256"],
    }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Synthetic data: learnable, CIFAR-shaped, from the seed.

# One shape per class, drawn in coordinates (u, v) centred on a jittered position and scaled by a jittered radius.
_SHAPES: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    lambda u, v: u**2 + v**2 < 1,  # disk
    lambda u, v: torch.maximum(u.abs(), v.abs()) < 0.8,  # square
    lambda u, v: ((u**2 + v**2) > 0.45) & ((u**2 + v**2) < 1),  # ring
    lambda u, v: (v.abs() < 0.3) & (u.abs() < 1.2),  # horizontal bar
    lambda u, v: (u.abs() < 0.3) & (v.abs() < 1.2),  # vertical bar
    lambda u, v: ((u.abs() < 0.25) | (v.abs() < 0.25)) & (torch.maximum(u.abs(), v.abs()) < 1),  # cross
    lambda u, v: u.abs() + v.abs() < 1,  # diamond
    lambda u, v: (v < 0.8) & (v > 2 * u.abs() - 1.2),  # triangle
    lambda u, v: (torch.sin(4 * (u + v)) > 0) & (torch.maximum(u.abs(), v.abs()) < 1.1),  # diagonal stripes
    lambda u, v: (
        ((torch.floor(2 * u) + torch.floor(2 * v)) % 2 == 0) & (torch.maximum(u.abs(), v.abs()) < 1)
    ),  # checker
)
_PALETTE = torch.tensor(
    [
        [0.9, 0.2, 0.2],
        [0.2, 0.8, 0.2],
        [0.2, 0.3, 0.9],
        [0.9, 0.8, 0.2],
        [0.8, 0.3, 0.8],
        [0.2, 0.8, 0.8],
        [0.95, 0.55, 0.1],
        [0.55, 0.35, 0.15],
        [0.95, 0.95, 0.95],
        [0.1, 0.1, 0.1],
    ]
)
SYNTHETIC_NOISE_STD = 0.12


def synthetic_dataset(train_size: int, test_size: int, seed: int, size: int = 32) -> Dataset:
    """Each class is a shape with a typical colour, at a random position and scale, on a random background,
    with colour jitter and pixel noise: learnable well above chance, not trivially (colours overlap)."""
    g = torch.Generator().manual_seed(seed)
    n = train_size + test_size
    labels = torch.randint(0, 10, (n,), generator=g)
    coords = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    centre = (torch.rand(n, 2, 1, 1, generator=g) - 0.5) * 0.8
    radius = 0.35 + 0.3 * torch.rand(n, 1, 1, generator=g)
    u, v = (x - centre[:, 0]) / radius, (y - centre[:, 1]) / radius
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    for cls, shape in enumerate(_SHAPES):
        chosen = labels == cls
        mask[chosen] = shape(u[chosen], v[chosen])
    foreground = (_PALETTE[labels] + 0.25 * (torch.rand(n, 3, generator=g) - 0.5)).clamp(0, 1)
    background = torch.rand(n, 3, generator=g) * 0.8 + 0.1
    mask = mask[:, None].float()
    pixels = foreground[:, :, None, None] * mask + background[:, :, None, None] * (1 - mask)
    pixels = pixels + SYNTHETIC_NOISE_STD * torch.randn(n, 3, size, size, generator=g)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    return Dataset(
        name="synthetic",
        label="synthetic shapes",
        source=f"generated (seed {seed}, {train_size}+{test_size} images, noise std {SYNTHETIC_NOISE_STD})",
        classes=tuple(f"shape{c}" for c in range(10)),
        train=Split(images[:train_size], labels[:train_size]),
        test=Split(images[train_size:], labels[train_size:]),
        full_sizes=(train_size, test_size),
    )


# ---------------------------------------------------------------------------------------------------------------
# On-device batches.


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, accumulated in float64."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].to(torch.float64) / 255
        total += block.sum(dim=(0, 2, 3))
        total_sq += (block**2).sum(dim=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


class DeviceSplit:
    """A split held as one uint8 tensor on the training device, served in normalised float batches.

    Crop and flip run on whole batches on the device (one gather), with random numbers from a CPU generator so
    that the sequence does not depend on the device and can be saved and restored.
    """

    PAD = 4

    def __init__(
        self,
        split: Split,
        device: torch.device,
        mean: list[float],
        std: list[float],
        memory_format: torch.memory_format = torch.contiguous_format,
        per_image: bool = False,
    ):
        self.images = split.images.to(device)
        self.per_image = per_image
        self.labels = split.labels.to(device)
        self.device = device
        self.memory_format = memory_format
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.scale = 1 / (255 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, 3, 1, 1) / std_t

    def __len__(self) -> int:
        return len(self.labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // batch_size

    def train_batches(
        self, batch_size: int, generator: torch.Generator, augment: bool, start_step: int = 0, part: slice = slice(None)
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled full batches (the remainder is dropped so that every batch has batch_size images).

        With `generator` in its state at the start of an epoch, start_step > 0 resumes mid-epoch: the skipped
        batches still draw their random numbers, so the rest of the epoch is what it would have been.
        part: the slice of each global batch of batch_size images that this rank trains on; every rank draws the
        whole batch's random numbers, so the parts put together are the one-process batch."""
        order = torch.randperm(len(self), generator=generator).to(self.device)
        for step in range(self.steps_per_epoch(batch_size)):
            draws = self._augmentation_draws(batch_size, generator) if augment else None
            if step < start_step:
                continue
            index = order[step * batch_size : (step + 1) * batch_size][part]
            images = self.images[index]
            if augment:
                offsets, flip = draws
                images = self._crop_flip(images, offsets[:, part], flip[part])
            yield self._normalise(images), self.labels[index]

    def fixed_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n images drawn once from a fixed order (its own generator: training's random numbers are untouched),
        normalised and not augmented, and their labels. Not the first n: an imported image folder is stored class
        by class, and its first 256 images are all airplanes."""
        index = fixed_order(len(self), SAMPLE_ORDER_SEED)[:n].sort().values.to(self.images.device)
        return self._normalise(self.images[index]), self.labels[index]

    def eval_batches(self, batch_size: int, part: slice = slice(None)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in order (or the `part` of it one rank evaluates), in batches of at most batch_size."""
        first, last, _ = part.indices(len(self))
        for start in range(first, last, batch_size):
            end = min(start + batch_size, last)
            yield self._normalise(self.images[start:end]), self.labels[start:end]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() * self.scale + self.shift
        if self.per_image:
            x = per_image_standardization(x)
        return x.contiguous(memory_format=self.memory_format)

    def _augmentation_draws(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = torch.randint(0, 2 * self.PAD + 1, (2, n), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return offsets.to(self.device), flip.to(self.device)

    def _crop_flip(self, images: torch.Tensor, offsets: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        pad = self.PAD
        padded = F.pad(images, (pad, pad, pad, pad))
        rows = offsets[0, :, None] + torch.arange(h, device=self.device)
        cols = offsets[1, :, None] + torch.arange(w, device=self.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(n, device=self.device)[:, None, None, None]
        channel = torch.arange(c, device=self.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's per_image_standardization of a batch: each image minus its mean over pixels and channels, over
    its std, floored at 1/sqrt(values) so that a flat image does not divide by zero."""
    var, mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / var.sqrt().clamp_min(x[0].numel() ** -0.5)


def input_stats(train: Split, input_norm: bool, pixel_units: bool = False) -> tuple[list[float], list[float]]:
    """Mean/std used to normalise inputs (in [0, 1] units): the train split's own; with pixel_units its mean and a
    std of 1/255, which leaves mean-subtracted 0-255 pixels; or (0, 1) for plain [0, 1] scaling."""
    if input_norm:
        mean, std = channel_stats(train.images)
        flat = [c for c, s in enumerate(std) if s < 1e-6]
        if flat:
            raise DataError(
                f"data.input_norm: channel {flat[0]} of the training images is constant (std 0), so it cannot be "
                f"normalised; set data.input_norm: false or check the data"
            )
        return (mean, [1 / 255] * 3) if pixel_units else (mean, std)
    return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
