"""The uncertainty comparison (paper Fig. 7/8): Offline DV2, LOMPO and SeMOPO runs of one dataset
scored at the same states, by the Python API and by ``lqv-d4rl uncertainty``."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_tiny_dataset
from test_lompo import tiny_config as lompo_config
from test_offline_dv2 import tiny_config as dv2_config

import semopo
from baselines import lompo, offline_dv2
from baselines.uncertainty import (
    UncertaintyError,
    branch_uncertainty,
    compare_uncertainty,
    state_windows,
)
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.runs import Run

torch.set_num_threads(1)

SEMOPO_TINY = dict(batch_size=4, seq_len=8, depth=4, deter=16, stoch=4, classes=4, hidden=16,
                   ensemble=3, exo_ensemble=3, units=32, reward_layers=1, actor_layers=1,
                   critic_layers=1, precision="float32", model_steps=2, policy_steps=1)


def train_run(folder, algorithm, config, dataset):
    """A short run of ``algorithm`` (an Algorithm) in ``folder``."""
    run = Run.open(folder, algorithm, config, dataset, seed=0)
    try:
        algorithm.train(dataset, config, run, "cpu")
    finally:
        run.close()
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run of each model-based method on one dataset: ``(dataset folder, [run folders])``."""
    root = tmp_path_factory.mktemp("uncertainty")
    folder = write_tiny_dataset(root / "data" / "walker_walk-medrep", length=12)
    dataset = load_dataset(folder)
    torch.manual_seed(0)
    folders = [
        train_run(root / "dv2", offline_dv2.ALGORITHM, dv2_config(model_steps=2, policy_steps=1),
                  dataset),
        train_run(root / "lompo", lompo.ALGORITHM,
                  lompo_config(model_steps=2, start_training=1, policy_steps=1), dataset),
        train_run(root / "semopo", semopo.ALGORITHM, semopo.SeMOPOConfig(**SEMOPO_TINY), dataset),
    ]
    return folder, folders


def test_every_method_and_branch_is_scored_at_the_same_states(runs, tmp_path):
    folder, folders = runs
    dataset = load_dataset(folder)
    written = compare_uncertainty(folders, dataset, tmp_path / "cmp", states=20, context=4)
    for path in written.values():
        assert path.exists() and path.stat().st_size > 0
    with written["uncertainty_summary_csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    methods = ["Offline DV2", "LOMPO", "SeMOPO endogenous", "SeMOPO exogenous"]
    assert [row["method"] for row in rows] == [m for m in methods for _ in ("md", "vlp")]
    assert [row["measure"] for row in rows] == ["md", "vlp"] * 4
    assert all(int(row["states"]) == 20 for row in rows)
    assert all(np.isfinite(float(row["mean"])) and float(row["mean"]) > 0 for row in rows)
    # the same arguments give the same bytes
    again = compare_uncertainty(folders, dataset, tmp_path / "again", states=20, context=4)
    assert again["uncertainty_states_csv"].read_text() == written["uncertainty_states_csv"].read_text()


def test_heads_that_agree_score_zero_and_heads_that_differ_do_not(runs):
    folder, _ = runs
    dataset = load_dataset(folder)
    torch.manual_seed(0)
    model = offline_dv2.OfflineDV2Agent(6, dv2_config()).world_model
    batches = state_windows(dataset, states=12, context=4)
    with torch.no_grad():
        for head in model.rssm.img_heads[1:]:
            head.load_state_dict(model.rssm.img_heads[0].state_dict())
    agree = branch_uncertainty(model.rssm, model.observe, batches)
    assert all(values.shape == (12,) and np.abs(values).max() < 1e-6 for values in agree.values())
    with torch.no_grad():
        bias = model.rssm.img_heads[2][-1].bias
        bias.add_(torch.linspace(-1.0, 1.0, len(bias)))  # not a uniform shift: softmax ignores those
    differ = branch_uncertainty(model.rssm, model.observe, batches)
    assert all((values > 1e-3).all() for values in differ.values())


def test_runs_of_another_dataset_are_refused(runs, tmp_path):
    _, folders = runs
    other = load_dataset(write_tiny_dataset(tmp_path / "walker_walk-medrep", length=12, seed=7))
    with pytest.raises(UncertaintyError, match="trained on"):
        compare_uncertainty(folders[:1], other, tmp_path / "out", states=5, context=4)


def test_cli_writes_the_comparison(runs, tmp_path):
    from lqv_d4rl.cli import main

    folder, folders = runs
    result = CliRunner().invoke(main, ["uncertainty", *map(str, folders), "--out",
                                       str(tmp_path / "cmp"), "--states", "10", "--context", "3",
                                       "--root", str(folder.parent)])
    assert result.exit_code == 0, result.output
    assert "| SeMOPO exogenous | vlp |" in result.output
    assert (tmp_path / "cmp" / "state_uncertainty.png").exists()

    # no run, a run of an algorithm without an ensemble, windows longer than the episodes
    (tmp_path / "empty").mkdir()
    other = tmp_path / "bc-run"
    other.mkdir()
    record = json.loads((folders[0] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**record, "algorithm": "bc"}))
    for arguments, message in (([tmp_path / "empty"], "no lqv-d4rl run"),
                               ([other], "holds a bc run"),
                               ([folders[0], "--context", "13"], "context=13 is longer")):
        refused = CliRunner().invoke(main, ["uncertainty", *map(str, arguments), "--out",
                                            str(tmp_path / "x"), "--root", str(folder.parent)])
        assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
        assert refused.output.startswith("Error: ") and message in refused.output, refused.output


@pytest.mark.slow
def test_smoke_presets_train_evaluate_and_compare_on_a_generated_smoke_dataset(tmp_path):
    """The issue's must-hold, end to end: a generated smoke dataset, ``train offline_dv2`` and
    ``train lompo`` (and SeMOPO) with ``--preset smoke``, eval.json, then the comparison."""
    from lqv_d4rl.cli import main

    root = tmp_path / "root"
    made = CliRunner().invoke(main, ["generate", "walker_walk", "--preset", "smoke", "--levels",
                                     "medrep", "--root", str(root)])
    assert made.exit_code == 0, made.output
    folders = []
    for name in ("offline_dv2", "lompo", "semopo"):
        out = tmp_path / name
        result = CliRunner().invoke(main, ["train", name, "walker_walk-medrep", "--preset", "smoke",
                                           "--root", str(root), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert math.isfinite(json.loads((out / "eval.json").read_text())["mean_return"])
        folders.append(str(out))
    result = CliRunner().invoke(main, ["uncertainty", *folders, "--out", str(tmp_path / "cmp"),
                                       "--root", str(root)])
    assert result.exit_code == 0, result.output
    for method in ("Offline DV2", "LOMPO", "SeMOPO endogenous", "SeMOPO exogenous"):
        assert f"| {method} | md |" in result.output
