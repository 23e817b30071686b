"""Hostile and damaged inputs: each ends with one line and exit 2 (or is set aside), quickly, writing nothing; a PNG
whose pixel data outruns its header decodes only what the header says."""

import pytest
import torch

from lrnbn.config import validate
from lrnbn.lifecycle import run_training
from tests.conftest import TINY, merged


def _one_line_exit_2(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr[-500:]


@pytest.fixture
def stopped_run(tmp_path):
    """A run that ended interrupted after its first epoch, with a checkpoint to resume from."""
    run_dir = run_training(validate(merged(TINY, {"train": {"epochs": 2}})), tmp_path / "runs").run_dir
    run_dir.write_summary({**run_dir.read_summary(), "status": "interrupted"})
    return run_dir


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("summary.json", b'{"status": "runn', "summary.json is damaged"),
        ("summary.json", b'{"status": "sleeping"}', "summary.json is damaged (no valid status)"),
        ("env.json", b"\xff\xfe", "env.json is damaged"),
        ("checkpoint.pt", b"", "checkpoint.pt is damaged"),
        ("checkpoint.pt", b"PK\x03\x04 not a checkpoint", "checkpoint.pt is damaged"),
    ],
)
def test_resuming_a_damaged_run_exits_2_with_one_line(cli, stopped_run, name, content, fragment):
    (stopped_run.path / name).write_bytes(content)
    _one_line_exit_2(cli("train", "--resume", stopped_run.path), fragment)


def test_compare_dry_run_names_a_damaged_run_instead_of_failing(cli, tmp_path, write_config):
    import yaml

    study = tmp_path / "study.yaml"
    write_config({"train": {"epochs": 1}}, name="base.yaml")
    study.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "grid": {"model.norm": ["bn", "none"]}}))
    assert cli("compare", study, "--runs-dir", tmp_path / "runs").exit_code == 0
    (tmp_path / "runs" / "s" / "norm=bn,seed=0" / "summary.json").write_text("{")
    result = cli("compare", study, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.exit_code == 0 and "norm=bn,seed=0  (damaged" in result.stderr, result.output


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--name", ""], "--name: empty"),
        (["compare", "STUDY", "--target", "-5"], "--target: a test accuracy in (0, 1], got -5.0"),
    ],
)
def test_bad_option_values_exit_2_naming_the_option(cli, tmp_path, write_config, args, fragment):
    args = [str(write_config()) if a == "STUDY" else a for a in args]
    if args[0] == "train":
        args += ["--config", str(write_config()), "--runs-dir", str(tmp_path / "runs")]
    _one_line_exit_2(cli(*args), fragment)
    assert not (tmp_path / "runs").exists()


def test_a_constant_input_channel_is_a_data_error_not_a_divergence(monkeypatch, cli, tmp_path, write_config):
    import lrnbn.data

    real = lrnbn.data.synthetic_dataset

    def flat_red(*args, **kwargs):
        dataset = real(*args, **kwargs)
        dataset.train.images[:, 0] = 7
        return dataset

    monkeypatch.setattr(lrnbn.data, "synthetic_dataset", flat_red)
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path / "runs")
    _one_line_exit_2(result, "data.input_norm: channel 0 of the training images is constant (std 0)")
    assert not (tmp_path / "runs").exists()
    assert torch.is_tensor(real(16, 16, 0).train.images)


@pytest.mark.parametrize(
    "edit,fragment",
    [
        ("lr: 0.02", "at train.lr (0.02 in the checkpoint, 0.5 now)"),
        ("width: 0.125", "at model.width (0.125 in the checkpoint, 0.25 now)"),
    ],
)
def test_a_hand_edited_config_yaml_is_checked_against_the_checkpoint_on_resume(cli, stopped_run, edit, fragment):
    config = stopped_run.path / "config.yaml"
    key, value = edit.split(": ")
    edited = {"lr": "lr: 0.5", "width": "width: 0.25"}[key]
    assert edit in config.read_text()
    config.write_text(config.read_text().replace(edit, edited))
    _one_line_exit_2(cli("train", "--resume", stopped_run.path), fragment)


def _tar_gz_of_images(folder, target):
    from tests.test_data import make_image_tree, tar_of

    make_image_tree(folder, per_class=(3, 2))
    return tar_of(folder, target)


def _huge_member_tar(folder, target):
    """A plain tar whose first file member's header claims 2 GB (checksum fixed, so tarfile trusts it)."""
    import tarfile

    from tests.test_data import make_image_tree

    make_image_tree(folder, per_class=(3, 2))
    with tarfile.open(target, "w") as archive:
        archive.add(folder, arcname="mydata")
    data = bytearray(target.read_bytes())
    offset = 0
    while data[offset + 156 : offset + 157] != b"0":  # the first regular file's header
        size = int(data[offset + 124 : offset + 136].strip(b"\0 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    data[offset + 124 : offset + 136] = b"%011o\0" % (2 << 30)
    data[offset + 148 : offset + 156] = b" " * 8
    data[offset + 148 : offset + 156] = b"%06o\0 " % sum(data[offset : offset + 512])
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(
    "damage,fragment",
    [
        ("truncated", "not a readable .tar/.tar.gz archive"),
        ("crc", ""),  # where the flipped bytes land decides which reader notices; each says so in one line
        ("huge_member", "claims 2147483648 bytes, more than an image"),
        ("device", "not a folder or a regular file"),
    ],
)
def test_damaged_archives_exit_2_with_one_line_and_write_nothing(cli, tmp_path, damage, fragment):
    if damage == "device":
        source = "/dev/zero"
    elif damage == "huge_member":
        source = _huge_member_tar(tmp_path / "src", tmp_path / "big.tar")
    else:
        source = _tar_gz_of_images(tmp_path / "src", tmp_path / "data.tar.gz")
        data = bytearray(source.read_bytes())
        if damage == "truncated":
            source.write_bytes(bytes(data[: len(data) // 2]))
        else:  # flip bytes in the compressed stream: gzip's CRC or zlib catches it on reading
            for i in range(len(data) // 2, len(data) // 2 + 8):
                data[i] ^= 0xFF
            source.write_bytes(bytes(data))
    result = cli("data", "import", source, "--root", tmp_path / "cache")
    _one_line_exit_2(result, fragment)
    noticed = ("not a readable .tar/.tar.gz archive", "damaged", "cannot decode image")
    assert fragment or any(words in result.stderr for words in noticed), result.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_runs_dir_that_cannot_be_written_is_one_line_per_run(cli, tmp_path, write_config, monkeypatch):
    import pathlib

    import yaml

    write_config({"train": {"epochs": 1}}, name="base.yaml")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "grid": {"model.norm": ["bn"]}}))

    def read_only(self, *args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)  # (as root, chmod would not stop the write)
    result = cli("compare", study, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot create the run directory" in result.stderr and "Read-only file system" in result.stderr
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path / "runs")
    _one_line_exit_2(result, "cannot create a run directory under")


def test_a_pipe_as_config_a_huge_set_key_and_an_overlong_name_are_one_line(cli, tmp_path, write_config):
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    _one_line_exit_2(cli("config", "show", "--config", fifo), "is not a regular file")
    _one_line_exit_2(cli("config", "show", "--set", "x" * 100_000 + "=1"), "no key is that long")
    result = cli("train", "--config", write_config(), "--name", "n" * 300, "--runs-dir", tmp_path / "runs")
    _one_line_exit_2(result, "experiment.name: String should have at most 100 characters")
    assert len(result.stderr) < 400 and not (tmp_path / "runs").exists()


def _deflated_zeros(n: int) -> bytes:
    """A zlib stream of n zero bytes, made in milliseconds however large n is: raw deflate of one MB of zeros, fully
    flushed so that it stands alone, repeated, between a zlib header and the Adler-32 of n zeros."""
    import struct
    import zlib

    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    megabyte = raw.compress(bytes(1 << 20)) + raw.flush(zlib.Z_FULL_FLUSH)
    pieces, rest = divmod(n, 1 << 20)
    tail = raw.compress(bytes(rest)) + raw.flush()
    return b"\x78\xda" + megabyte * pieces + tail + struct.pack(">I", (n % 65521) << 16 | 1)


def _png(width: int, height: int, pixel_data: int = 0, text_bytes: int = 0) -> bytes:
    """An 8-bit RGB PNG written chunk by chunk, so that it can lie: the header (IHDR) says width x height, the pixel
    data (IDAT) inflates to `pixel_data` zero bytes (0: exactly what the header needs), and a zTXt chunk to
    `text_bytes`."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if text_bytes:
        png += chunk(b"zTXt", b"Comment\0\0" + _deflated_zeros(text_bytes))
    png += chunk(b"IDAT", _deflated_zeros(pixel_data or height * (1 + 3 * width)))  # a filter byte per row
    return png + chunk(b"IEND", b"")


def _image_archive(tmp_path, images: dict[str, bytes]):
    """A .tar.gz of `images` (path inside the archive -> PNG bytes), one class: what `data import` takes."""
    import io
    import tarfile

    target = tmp_path / "bomb.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        for name, data in images.items():
            member = tarfile.TarInfo(f"bomb/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return target


def _never_decoded(monkeypatch):
    """Make any decoding fail the test: a bound checked from the headers must stop the import before it."""
    import lrnbn.data

    def decode(entry):
        raise AssertionError(f"{entry.name} was decoded")

    monkeypatch.setattr(lrnbn.data, "_decode", decode)


def test_many_medium_images_over_the_decoded_bound_are_refused_from_their_headers(cli, tmp_path, monkeypatch):
    uniform = _png(256, 256)  # 192 KB once decoded, a few hundred bytes packed
    images = {f"{split}/a/{i}.png": uniform for split, count in (("train", 30), ("test", 6)) for i in range(count)}
    source = _image_archive(tmp_path, images)
    _never_decoded(monkeypatch)
    result = cli("data", "import", source, "--root", tmp_path / "cache", "--max-decoded-mb", "4")
    _one_line_exit_2(
        result,
        f"{source}: its 36 images would decode to 6.75 MB, more than the 4 MB an import may decode; with about three "
        f"times that memory free, raise the limit with --max-decoded-mb",
    )
    assert not (tmp_path / "cache").exists()


def test_one_huge_image_under_the_pixel_limit_but_over_the_decoded_bound_is_refused(cli, tmp_path, monkeypatch):
    source = _image_archive(tmp_path, {"train/a/huge.png": _png(4000, 4000), "test/a/0.png": _png(8, 8)})
    _never_decoded(monkeypatch)
    result = cli("data", "import", source, "--root", tmp_path / "cache", "--max-decoded-mb", "16")
    _one_line_exit_2(result, "its 2 images would decode to 45.78 MB, more than the 16 MB an import may decode")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "png,option,fragment",
    [
        (lambda: _png(4000, 4000, pixel_data=1000), "16", "would decode to 91.55 MB, more than the 16 MB"),
        (
            lambda: _png(4000, 4000, pixel_data=1000),
            None,
            "test/a/0.png: cannot decode image (OSError: image file is trunc",
        ),
        (lambda: _png(5000, 5000, pixel_data=1000), None, "5000x5000 pixels, more than an import takes (16777216"),
        (
            lambda: _png(8, 8, text_bytes=64 << 20),
            None,
            "test/a/0.png: cannot decode image (ValueError: Decompressed data too large",
        ),
    ],
    ids=["header-huge-bounded", "header-huge-truncated", "header-over-pixel-limit", "text-chunk-bomb"],
)
def test_a_png_whose_header_lies_is_refused_in_one_line(cli, tmp_path, png, option, fragment):
    lying = png()
    source = _image_archive(tmp_path, {"train/a/0.png": lying, "test/a/0.png": lying})
    limit = ["--max-decoded-mb", option] if option else []
    _one_line_exit_2(cli("data", "import", source, "--root", tmp_path / "cache", *limit), fragment)
    assert not (tmp_path / "cache").exists()


def test_a_png_whose_pixel_data_inflates_past_its_header_decodes_only_what_the_header_says(cli, tmp_path):
    import time

    bomb = _png(32, 32, pixel_data=8 << 30)  # 8 GB of pixel data (8 MB packed) behind a 32x32 header
    source = _image_archive(tmp_path, {"train/a/0.png": bomb, "test/a/0.png": bomb})
    started = time.perf_counter()
    result = cli("data", "import", source, "--root", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    # Inflating it all would take over ten seconds (0.4 s per 256 MB on a 2-core CI machine), and 8 GB if kept:
    # the decoder stops once the header's 32x32 pixels are filled.
    assert time.perf_counter() - started < 5
    blob = torch.load(tmp_path / "cache" / "lrnbn-imagefolder.pt", weights_only=True)
    assert tuple(blob["train_images"].shape) == (1, 3, 32, 32)


def test_a_decoded_bound_that_is_not_a_positive_number_is_refused(cli, tmp_path):
    source = _image_archive(tmp_path, {"train/a/0.png": _png(8, 8), "test/a/0.png": _png(8, 8)})
    result = cli("data", "import", source, "--root", tmp_path / "cache", "--max-decoded-mb", "0")
    _one_line_exit_2(result, "--max-decoded-mb: a number of MB above 0, got 0.0")
