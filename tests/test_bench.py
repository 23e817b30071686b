import json

import pytest


def test_bench_lrn_prints_ratios_and_writes_json(cli, tmp_path):
    out = tmp_path / "bench.json"
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
    rows = json.loads(out.read_text())
    assert [(r["impl"], r["size"]) for r in rows] == [
        ("bn", None),
        ("torch", 1),
        ("torch", 3),
        ("fast", 1),
        ("fast", 3),
        ("elementwise-pass", None),
        ("pow-pass", None),
    ]
    bn = rows[0]["median_ms"]
    for r in rows:
        assert r["median_ms"] > 0 and r["ratio_to_bn"] == pytest.approx(r["median_ms"] / bn)
    assert "torch_over_fast_at_n3" in result.stdout and "ratio to BN" in result.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--shape", "4,8,6"], "--shape: expected N,C,H,W"),
        (["--sizes", "1,x"], "--sizes: expected comma-separated integers"),
        (["--dtype", "int8"], "unknown dtype 'int8'"),
    ],
)
def test_bench_lrn_bad_options(cli, args, fragment):
    result = cli("bench", "lrn", *args)
    assert result.exit_code == 2 and fragment in result.stderr
