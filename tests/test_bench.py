import json
import sys

import numpy as np
import pytest


def test_bench_lrn_prints_ratios_and_writes_json(cli, tmp_path):
    out = tmp_path / "records" / "bench.json"  # a folder that does not exist yet
    result = cli(
        "bench",
        "lrn",
        "--shape",
        "4,8,6,6",
        "--sizes",
        "1,3",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["impl"], r["size"]) for r in rows] == [
        ("bn", None),
        ("torch", 1),
        ("torch", 3),
        ("fast", 1),
        ("fast", 3),
        ("fused", 1),
        ("fused", 3),
        ("elementwise-pass", None),
        ("pow-pass", None),
    ]
    bn = rows[0]["median_ms"]
    for r in rows:
        assert r["median_ms"] > 0 and r["ratio_to_bn"] == pytest.approx(r["median_ms"] / bn)
    assert "torch_over_fast_at_n3" in result.stdout and "torch_over_fused_at_n3" in result.stdout
    fused = [r["median_ms"] for r in rows if r["impl"] == "fused"]
    assert report["targets"]["fused_flatness_max_over_min"] == pytest.approx(max(fused) / min(fused))
    assert report["machine"]["threads"] == 1 and report["machine"]["device"]
    assert report["setting"] == {
        "shape": [4, 8, 6, 6],
        "device": "cpu",
        "dtype": "float32",
        "channels_last": False,
        "threads": 1,
        "repeats": 2,
        "warmup": 1,
        "fused_kernel": "fused (C++ kernel)",
        "impls": ["torch", "fast", "fused"],
    }
    assert "ratio to BN" in result.stdout and "impl fused ran as: fused (C++ kernel)" in result.stdout


def test_bench_lrn_times_only_the_chosen_implementations_beside_bn(cli, tmp_path):
    out = tmp_path / "bench.json"
    args = ("--shape", "2,8,4,4", "--sizes", "1,5", "--repeats", "1", "--warmup", "0", "--impls", "fused")
    result = cli("bench", "lrn", *args, "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [(r["impl"], r["size"]) for r in report["rows"]] == [
        ("bn", None),
        ("fused", 1),
        ("fused", 5),
        ("elementwise-pass", None),
        ("pow-pass", None),
    ]
    # Without the stock layer there is no speed-up over it to state; the fused layer's own targets remain.
    assert set(report["targets"]) == {"fused_max_ratio_to_bn", "fused_flatness_max_over_min"}
    assert report["setting"]["impls"] == ["fused"]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--shape", "4,8,6"], "--shape: expected N,C,H,W"),
        (["--sizes", "1,x"], "--sizes: expected comma-separated integers"),
        (["--dtype", "int8"], "unknown dtype 'int8'"),
        (["--impls", "fused,cudnn"], "unknown impl 'cudnn'; choose one of torch, fast, fused"),
    ],
)
def test_bench_lrn_bad_options(cli, args, fragment):
    result = cli("bench", "lrn", *args)
    assert result.exit_code == 2 and fragment in result.stderr


def test_bench_train_times_each_norm_precision_and_format_and_writes_json(cli, tmp_path):
    out = tmp_path / "train.json"
    result = cli(
        "bench",
        "train",
        "--width",
        "0.125",
        "--batch-size",
        "8",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--norms",
        "bn,lrn-fused,none",
        "--precisions",
        "fp32",
        "--threads",
        "1",
        "--sizes",
        "1,21",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    keys = [(r["norm"], r["size"], r["precision"], r["format"]) for r in report["rows"]]
    formats = ("contiguous", "channels_last")
    expected = [("bn", None)] + [("lrn-fused", n) for n in (1, 21)] + [("none", None)]
    assert keys == [(norm, n, "fp32", f) for norm, n in expected for f in formats]
    medians = {key: r["median_ms"] for key, r in zip(keys, report["rows"])}
    for (_, _, precision, fmt), r in zip(keys, report["rows"]):
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["ratio_to_bn"] == pytest.approx(r["median_ms"] / medians[("bn", None, precision, fmt)])
        bn_fp32 = medians[("bn", None, "fp32", "contiguous")]
        assert r["ratio_to_fp32_contiguous_bn"] == pytest.approx(r["median_ms"] / bn_fp32)
    assert report["lrn_kernels"] == {"lrn-fused": "fused (C++ kernel)"}
    assert report["machine"]["threads"] == 1 and "avx512_bf16" in report["machine"]["cpu_bf16"]
    assert "lrn-fused ran as: fused (C++ kernel)" in result.stdout
    for fmt in formats:
        ratios = [medians[("lrn-fused", n, "fp32", fmt)] / medians[("bn", None, "fp32", fmt)] for n in (1, 21)]
        span = f"lrn-fused, fp32 {fmt}: {min(ratios):.2f}x to {max(ratios):.2f}x BN over n 1,21"
        assert span in result.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--norms", "bn,wn"], "unknown norm 'wn'"),
        (["--precisions", "fp16"], "--precisions: expected some of fp32, bf16"),
        (["--formats", "nhwc"], "--formats: expected some of contiguous, channels_last"),
        (["--arch", "vgg"], "--arch/--width: arch:"),
        (["--sizes", "4"], "alexnet-paper needs an odd size"),
        (["--sizes", "0"], "--sizes: size:"),
        (["--sizes", "five"], "--sizes: expected comma-separated integers"),
    ],
)
def test_bench_train_bad_options(cli, args, fragment):
    result = cli("bench", "train", *args)
    assert result.exit_code == 2 and fragment in result.stderr, result.output


def test_each_round_times_every_variant_once_in_its_own_order():
    from lrnbn.bench import _interleaved

    rounds_seen: list[list[int]] = [[]]
    works = [lambda i=i: rounds_seen[-1].append(i) for i in range(6)]

    def time_once(work):  # a work's sample is its own index, so a sample filed under another work shows
        work()
        return float(rounds_seen[-1][-1])

    def next_round(done, total):
        rounds_seen.append([])

    samples = _interleaved(works, time_once, repeats=4, warmup=1, progress=next_round)
    rounds = rounds_seen[:-1]
    assert len(rounds) == 5 and all(sorted(r) == list(range(6)) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # not one fixed order
    assert samples == [[float(i)] * 4 for i in range(6)]
    rounds_seen[:] = [[]]
    _interleaved(works, time_once, repeats=4, warmup=1, progress=next_round)
    assert rounds_seen[:-1] == rounds  # seeded: a rerun times the same orders


def test_the_peers_reference_is_tensorflows_formula_by_hand():
    from lrnbn.peers import reference

    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    # depth_radius 1: channel 1 sums 1 + 4 + 9 = 14; channel 0 sums 1 + 4 = 5 (zero beyond the edge).
    got = reference(x, 1, 0.5, 0.75, 2.0).ravel()
    np.testing.assert_allclose(got, [1 / (2 + 2.5) ** 0.75, 2 / (2 + 7) ** 0.75, 3 / (2 + 6.5) ** 0.75], rtol=1e-15)


def test_bench_peers_times_every_lrn_and_checks_it_against_float64(monkeypatch):
    import onnxruntime

    import lrnbn
    from lrnbn import peers
    from lrnbn.bench import bench_peers

    def absent():
        raise ImportError("no module", name="someframework")

    monkeypatch.setitem(peers.FRAMEWORKS, "someframework", absent)
    rows, skipped = bench_peers(shape=(2, 8, 4, 4), radii=(1, 3), repeats=1, warmup=0)
    assert skipped["someframework"] == "not installed (someframework)"
    by_peer = {(r["peer"], r["depth_radius"]): r for r in rows}
    for impl in ("torch", "fast", "fused"):
        for radius in (1, 3):
            row = by_peer[(f"lrnbn {impl}", radius)]
            assert row["direction"] == "forward+backward" and row["median_ms"] > 0
            assert row["version"] == lrnbn.__version__
            assert row["max_rel_error"] < 1e-6 and row["max_rel_error_wide"] < 1e-6
    # onnxruntime (a test dependency) computes the same layer on ordinary inputs; on a 1e4 beside 0.02 it is not
    # exact (1.32 returns inf there), which the table shows rather than hides.
    ort = by_peer[("onnxruntime", 3)]
    assert ort["direction"] == "forward" and ort["max_rel_error"] < 1e-5
    assert ort["version"] == onnxruntime.__version__


def test_bench_lrn_peers_prints_one_table_and_the_skipped_frameworks(cli, tmp_path):
    out = tmp_path / "peers.json"
    args = ("--shape", "2,8,4,4", "--radii", "1", "--repeats", "1", "--warmup", "0")
    result = cli("bench", "lrn", "--peers", *args, "--json", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    setting = record["setting"]
    assert (setting["shape"], setting["radii"], setting["repeats"], setting["warmup"]) == ([2, 8, 4, 4], [1], 1, 0)
    assert setting["threads"] == record["machine"]["threads"] and setting["fused_kernel"].startswith("fused")
    assert {r["peer"] for r in record["rows"]} >= {"lrnbn fused", "onnxruntime"}
    assert "LRN across frameworks" in result.stdout and "onnxruntime" in result.stdout
    assert ("skipped tensorflow: not installed" in result.stdout) != ("tensorflow" in sys.modules)
