import json

import pytest
import torch

from lrnbn.config import validate
from lrnbn.lifecycle import resume_training, run_training
from lrnbn.probes import channel_stats, drift, filter_similarity, logit_spreads, zero_shares
from lrnbn.records import find_runs
from lrnbn.results import group, probe_summary
from lrnbn.rundir import PROBES_FILE
from tests.conftest import TINY, merged
from tests.test_resume import RESUMED, SignalAtStep, without_times

PROBED = {"probes": {"enabled": True, "every": 5, "batch_size": 64}}


def test_identical_filters_are_fully_similar_and_independent_ones_are_not():
    filters = torch.randn(1, 3, 5, 5).repeat(16, 1, 1, 1)
    assert filter_similarity(filters) == pytest.approx(1.0)
    assert filter_similarity(filters * torch.linspace(0.5, 2, 16).view(-1, 1, 1, 1)) == pytest.approx(1.0)  # scale-free
    torch.manual_seed(0)
    assert filter_similarity(torch.randn(64, 3, 5, 5)) < 0.1  # expected |cos| of random 75-d vectors: about 0.09


def test_a_layer_fed_a_fixed_distribution_shows_no_drift_and_a_shift_shows_as_its_size_in_stds():
    torch.manual_seed(0)
    x = torch.randn(64, 8, 6, 6) * 2 + 1
    stats = channel_stats(x)
    assert drift(stats, channel_stats(x.clone())) == 0.0
    torch.testing.assert_close(stats[0], x.double().mean(dim=(0, 2, 3)))
    shifted = channel_stats(x + 0.5 * stats[1].float().view(1, -1, 1, 1))
    assert drift(stats, shifted) == pytest.approx(0.5)


def test_zero_shares_count_dead_units_and_channels_that_are_dead_on_every_image():
    x = torch.ones(4, 5, 3, 3)
    x[:, 0] = 0  # channel 0 dead everywhere
    x[:, 1, 0, 0] = -1.0  # channel 1 off at one pixel only
    x[0, 2] = 0  # channel 2 off on one image only
    shares = zero_shares(x)
    assert shares["dead_channel_share"] == pytest.approx(1 / 5)
    assert shares["input_zero_share"] == pytest.approx((4 * 9 + 4 + 9) / x.numel())


def test_logit_spread_is_zero_for_a_net_that_answers_every_image_alike():
    alike = torch.tensor([[1.0, -2.0, 3.0]]).repeat(8, 1)
    assert logit_spreads(alike) == {
        "logit_spread": 0.0,
        "logit_class_spread": pytest.approx(torch.tensor([1.0, -2.0, 3.0]).std(unbiased=False).item()),
    }
    varied = torch.tensor([[0.0, 2.0], [2.0, 0.0]])  # per class: values 0 and 2, std 1; class means equal
    assert logit_spreads(varied) == {"logit_spread": pytest.approx(1.0), "logit_class_spread": 0.0}


def test_probes_do_not_change_the_trajectory_and_write_their_records(tmp_path):
    plain = run_training(validate(merged(TINY, {})), tmp_path / "a").run_dir
    probed = run_training(validate(merged(TINY, PROBED)), tmp_path / "b").run_dir
    assert without_times(plain.read_metrics()[0]) == without_times(probed.read_metrics()[0])
    records = [json.loads(line) for line in (probed.path / PROBES_FILE).read_text().splitlines()]
    steps_per_epoch = 256 // 32
    assert [r["step"] for r in records] == list(range(5, 2 * steps_per_epoch + 1, 5))
    first, second = records[0], records[1]
    assert [layer["layer"] for layer in first["layers"]] == ["BatchNorm2d", "BatchNorm2d"]
    assert first["layers"][0]["input_drift"] is None and second["layers"][0]["input_drift"] > 0
    assert 0 <= first["filter_similarity"] <= 1
    assert first["logit_spread"] > 0 and first["logit_class_spread"] >= 0
    # BN sits behind conv1's ReLU: about half its input is zero, and no channel of a fresh net is dead.
    assert 0.2 < first["layers"][0]["input_zero_share"] < 0.8 and first["layers"][0]["dead_channel_share"] < 0.5
    assert {w["name"] for w in first["weights"]} >= {"0.0.weight"}
    assert all(w["grad_norm"] > 0 and 0 < w["update_ratio"] < 1 for w in first["weights"])
    assert (probed.path / "conv1-filters.png").stat().st_size > 500
    # env.json says which classes the probe batch holds, so a reader can tell what its accuracy means.
    batch = json.loads((probed.path / "env.json").read_text())["probe_batch"]
    assert batch["images"] == validate(merged(TINY, PROBED)).probes.batch_size == sum(batch["class_counts"])
    assert "probe_batch" not in json.loads((plain.path / "env.json").read_text())


def test_probes_resume_exactly(tmp_path):
    reference = run_training(validate(merged(TINY, {**RESUMED, **PROBED})), tmp_path / "ref").run_dir
    stopped = run_training(validate(merged(TINY, {**RESUMED, **PROBED})), tmp_path / "cut", view=SignalAtStep(2, 10))
    resumed = resume_training(stopped.run_dir.path, []).run_dir

    def lines(run):
        return (run.path / PROBES_FILE).read_text().splitlines()

    assert lines(resumed) == lines(reference)


def test_probe_accuracy_is_the_eval_mode_accuracy_on_the_probe_batch():
    import torch

    from lrnbn.config import ModelConfig
    from lrnbn.models import build_model
    from lrnbn.probes import Probes

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="cifar-full", width=0.25, norm="bn"), 10)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    labels[:32] = model.eval()(images[:32]).argmax(1)  # half of them right by construction
    model.train()
    record = Probes(model, images, labels, every=1).measure(global_step=1, epoch=1)
    expected = (model.eval()(images).argmax(1) == labels).float().mean().item()
    assert record["probe_acc"] == expected and 0.5 <= expected < 1


@pytest.mark.parametrize("k", [0.5, 2.0])
def test_an_lrn_with_a_small_alpha_shows_its_k_to_the_minus_beta_gain(tmp_path, k):
    lrn = {"model": {"arch": "alexnet", "width": 0.125, "norm": "lrn", "lrn": {"k": k, "alpha": 1e-6}}}
    run_training(validate(merged(TINY, {**lrn, **PROBED})), tmp_path / "study" / "run")
    (variant,) = group(find_runs([tmp_path]).runs)["tiny"]
    assert probe_summary(variant)["gain"] == pytest.approx(k**-0.75, rel=1e-3)
