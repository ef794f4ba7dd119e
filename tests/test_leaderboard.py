"""The leaderboard: the grid and its one-line refusals, runs (skip, resume, failure), tables, report.

Runs here go one after another in the test process (``backend="inline"``) with ``mean_bc``, a real
learner that trains in a second (tests/test_leaderboard_toys.py), on a small dataset recorded from
the real walker_walk environment. Worker processes, killing and restarting, Ray and the smoke grid
with SeMOPO are in test_leaderboard_runs.py (slow).
"""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import record_walker_dataset
from test_leaderboard_toys import ALGORITHM as MEAN_BC
from test_leaderboard_toys import DATASET, FAST_REPS, registered, session_starts, variant

from lqv_d4rl import algorithms
from lqv_d4rl.cli import main
from lqv_d4rl.errors import DatasetNotFoundError, UnknownDatasetError, UnknownTaskError
from lqv_d4rl.experiment import run_experiment
from lqv_d4rl.leaderboard import GridError, plan_grid, run_leaderboard
from lqv_d4rl.leaderboard.grid import Grid, RunSpec, expand_datasets
from lqv_d4rl.leaderboard.results import RunRecord, cell_rows
from lqv_d4rl.leaderboard.runner import (
    ERROR_NAME, RunTask, _outcome_of_process, device_slots, execute_run, folder_lock, only_gpu,
)
from lqv_d4rl.registry import DATASET_IDS
from lqv_d4rl.runs import load_checkpoint_file

WALKER_TABLE1 = (5.0, 598.0)  # S_min, S_max of walker_walk (the paper's Table 3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A dataset root holding a small walker_walk-medrep recorded in the real environment."""
    folder = tmp_path_factory.mktemp("leaderboard-root")
    record_walker_dataset(folder / DATASET, episodes_per_policy=2, steps=12)
    return folder


@pytest.fixture(autouse=True)
def toy_methods():
    """``mean_bc``, and the same learner failing at update 5 (``mean_bc_fails``) or stopping after 2
    updates (``mean_bc_short``) in its smoke preset."""
    torch.set_num_threads(1)
    with registered(MEAN_BC, variant("mean_bc_fails", fail_at=5),
                    variant("mean_bc_short", updates=2)):
        yield


def leaderboard(out, root, **options):
    options = {"methods": "mean_bc", "datasets": DATASET, "seeds": 2, "preset": "smoke",
               "device": "cpu", "backend": "inline", "reps": FAST_REPS, "figures": False,
               "progress": False, "echo": lambda message: None, **options}
    return run_leaderboard(out, root=root, **options)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_cli(*args):
    return CliRunner().invoke(main, ["leaderboard", *map(str, args)])


def assert_one_line_error(result, exit_code, *fragments):
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# ---------------------------------------------------------------------------------- the grid


def test_dataset_patterns_expand_in_benchmark_order():
    assert expand_datasets("all") == list(DATASET_IDS)
    assert expand_datasets("walker_walk-medium, cheetah_run-*,walker_walk-medium") == [
        "walker_walk-medium", "cheetah_run-random", "cheetah_run-medrep", "cheetah_run-medium"]
    with pytest.raises(UnknownTaskError, match="Did you mean 'walker_walk-\\*'"):
        expand_datasets("walker_wlak-*")
    with pytest.raises(UnknownDatasetError, match="Did you mean 'walker_walk-medrep'"):
        expand_datasets("walker_walk-medrp")


def test_grid_defaults_come_from_the_preset(root):
    grid = plan_grid("mean_bc", preset="smoke", root=root)
    assert (grid.datasets, grid.seeds, grid.eval_episodes) == ([DATASET], [0, 1], None)
    assert [spec.label for spec in grid.runs()] == ["mean_bc walker_walk-medrep seed0",
                                                    "mean_bc walker_walk-medrep seed1"]
    assert RunSpec("a", DATASET, 3).folder("x").as_posix() == "x/runs/a/walker_walk-medrep/seed3"


def test_grid_refusals_name_every_problem(root):
    with pytest.raises(GridError) as caught:
        plan_grid("mean_bcc,nope", preset="smoke", root=root)
    assert "did you mean 'mean_bc'?" in str(caught.value) and "'nope'" in str(caught.value)
    uninstalled = [name for name in algorithms.known_names() if name not in algorithms.names()]
    if uninstalled:
        with pytest.raises(GridError, match="not installed here"):
            plan_grid(uninstalled[0], preset="smoke", root=root)
    with registered(dataclasses.replace(MEAN_BC, name="paper_only", presets={"paper": {}})):
        with pytest.raises(GridError, match="paper_only has no preset 'smoke'"):
            plan_grid("mean_bc,paper_only", preset="smoke", root=root)
    with pytest.raises(DatasetNotFoundError, match="2 datasets .*walker_walk-random, "
                                                   "walker_walk-medium.*--download"):
        plan_grid("mean_bc", datasets="walker_walk-*", preset="smoke", root=root)


@pytest.mark.parametrize("args, code, fragments", [
    (["--methods", "mean_bcc"], 2, ["unknown method 'mean_bcc'", "did you mean 'mean_bc'?"]),
    (["--datasets", "walker_walk-medrp"], 2, ["unknown dataset id", "'walker_walk-medrep'"]),
    (["--datasets", "walker-walk-*"], 2, ["unknown task 'walker-walk'"]),
    (["--seeds", "0"], 2, ["--seeds must be a positive number", "got 0"]),
    (["--datasets", "cheetah_run-medium"], 1, ["cheetah_run-medium", "--download"]),
    (["--eval-episodes", "0"], 2, ["--eval-episodes must be at least 1"]),
    (["--backend", "ray", "--methods", "nope"], 2, ["unknown method 'nope'"]),
])
def test_bad_input_is_one_line_before_anything_starts(root, tmp_path, args, code, fragments):
    out = tmp_path / "lb"
    defaults = {"--methods": "mean_bc", "--datasets": DATASET, "--seeds": "1"}
    for key, value in defaults.items():
        if key not in args:
            args = [*args, key, value]
    result = run_cli(*args, "--preset", "smoke", "--root", root, "--out", out, "--device", "cpu",
                     "--backend", "inline")
    assert_one_line_error(result, code, *fragments)
    assert not out.exists()  # nothing started, nothing written


# ---------------------------------------------------------------------------------- runs


def test_grid_writes_tables_figures_and_report_and_skips_finished_runs(root, tmp_path):
    out = tmp_path / "lb"
    first = leaderboard(out, root, figures=True)
    assert [outcome.status for outcome in first.outcomes] == ["finished", "finished"]
    assert first.counts == {"finished": 2, "failed": 0, "unfinished": 0, "missing": 0}
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "report.html",
                 "figures/scores_per_dataset.png", "figures/aggregates.png",
                 "figures/performance_profiles.png"):
        assert (out / name).stat().st_size > 0, name

    # the table is the mean and std (ddof 0) over seeds of each seed's episode-averaged score
    per_seed = []
    for seed in (0, 1):
        evaluation = json.loads((out / f"runs/mean_bc/{DATASET}/seed{seed}/eval.json").read_text())
        returns = np.array(evaluation["returns"])
        per_seed.append(np.mean((returns - WALKER_TABLE1[0]) / (WALKER_TABLE1[1] - WALKER_TABLE1[0])))
    [row] = read_csv(out / "leaderboard.csv")
    assert float(row["score_mean"]) == pytest.approx(np.mean(per_seed), abs=1e-6)
    assert float(row["score_std"]) == pytest.approx(np.std(per_seed), abs=1e-6)
    assert (row["finished"], row["seeds"], row["preset"]) == ("2", "0;1", "smoke")

    # provenance of each run: what config.json and eval.json say
    record = json.loads((out / "leaderboard.json").read_text())
    config = json.loads((out / f"runs/mean_bc/{DATASET}/seed1/config.json").read_text())
    provenance = record["runs"][1]["provenance"]
    assert provenance["manifest_sha256"] == config["dataset"]["manifest_sha256"]
    assert row["manifest_sha256"] == provenance["manifest_sha256"]
    assert provenance["config_hash"] == config["config_hash"] == row["config_hash"]
    assert (provenance["seed"], provenance["device"], provenance["code_version"]) == (1, "cpu", "0.1.0")
    assert provenance["wall_seconds"] > 0
    assert record["statistics"]["datasets"] == [DATASET]
    assert set(record["statistics"]["aggregates"]["mean_bc"]) == {"median", "iqm", "mean",
                                                                  "optimality_gap"}

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "http" not in html.replace("http-equiv", "")  # self-contained: nothing fetched

    stamp = (out / f"runs/mean_bc/{DATASET}/seed0/eval.json").stat().st_mtime_ns
    table = (out / "leaderboard.csv").read_text()
    second = leaderboard(out, root)
    assert second.outcomes == []  # both finished: nothing runs again
    assert (out / f"runs/mean_bc/{DATASET}/seed0/eval.json").stat().st_mtime_ns == stamp
    assert (out / "leaderboard.csv").read_text() == table


def test_a_failed_run_is_recorded_and_the_others_go_on(root, tmp_path):
    out = tmp_path / "lb"
    result = leaderboard(out, root, methods="mean_bc_fails,mean_bc", seeds=1)
    assert [(o.task.spec.method, o.status) for o in result.outcomes] == [("mean_bc_fails", "failed"),
                                                                    ("mean_bc", "finished")]
    error = json.loads((out / f"runs/mean_bc_fails/{DATASET}/seed0" / ERROR_NAME).read_text())
    assert error["message"] == "RuntimeError: mean_bc failed on purpose at update 5"
    assert "Traceback" in error["traceback"]
    markdown = (out / "leaderboard.md").read_text()
    assert "## Failed runs" in markdown and "failed on purpose at update 5" in markdown
    rows = {row["method"]: row for row in read_csv(out / "leaderboard.csv")}
    assert (rows["mean_bc_fails"]["failed"], rows["mean_bc_fails"]["score_mean"]) == ("1", "")
    assert rows["mean_bc"]["finished"] == "1"
    # no dataset has both methods finished: no aggregates, and the report says why
    assert "No dataset has a finished run of every method" in markdown
    # the next start tries the failed run again (and only it)
    again = leaderboard(out, root, methods="mean_bc_fails,mean_bc", seeds=1)
    assert [(o.task.spec.method, o.status) for o in again.outcomes] == [("mean_bc_fails", "failed")]


def test_an_unfinished_run_resumes_to_the_result_of_an_uninterrupted_one(root, tmp_path):
    straight = leaderboard(tmp_path / "straight", root, seeds=1)
    folder = RunSpec("mean_bc", DATASET, 0).folder(tmp_path / "cut")
    assert run_experiment("mean_bc", DATASET, preset="smoke", root=root, out=folder, seed=0,
                          stop_after=15, progress=False, echo=lambda m: None) is None
    resumed = leaderboard(tmp_path / "cut", root, seeds=1)
    assert [outcome.status for outcome in resumed.outcomes] == ["finished"]
    assert session_starts(folder) == [0, 15]  # continued from the checkpoint, not from scratch
    mean = {name: load_checkpoint_file(RunSpec("mean_bc", DATASET, 0).folder(tmp_path / name))["mean"]
            for name in ("straight", "cut")}
    assert torch.equal(mean["straight"], mean["cut"])
    assert _scores(resumed) == _scores(straight)


def _scores(result):
    return [{key: row[key] for key in ("dataset", "method", "seeds", "score_mean", "score_std",
                                       "return_mean", "return_std")}
            for row in read_csv(result.written["leaderboard.csv"])]


def test_two_methods_get_probability_of_improvement_both_ways(root, tmp_path):
    out = tmp_path / "lb"
    result = leaderboard(out, root, methods="mean_bc,mean_bc_short", seeds=1, figures=True)
    improvement = json.loads((out / "leaderboard.json").read_text())["statistics"]["improvement"]
    # one seed each: P is 0 or 1 on the one dataset (or 1/2 on a tie), and the two add up to 1
    forward, backward = improvement["mean_bc>mean_bc_short"], improvement["mean_bc_short>mean_bc"]
    assert forward["value"] + backward["value"] == 1.0 and forward["value"] in (0.0, 0.5, 1.0)
    markdown = (out / "leaderboard.md").read_text()
    assert "| P(row > column) | mean_bc | mean_bc_short |" in markdown
    assert "figures/probability_of_improvement.png" in result.written


def test_runs_of_another_config_are_not_mixed_into_the_table(root, tmp_path):
    out = tmp_path / "lb"
    leaderboard(out, root, seeds=1)
    with pytest.raises(GridError, match="hold runs of another config than preset 'paper'.*updates"):
        leaderboard(out, root, seeds=1, preset="paper")


def test_report_only_rebuilds_the_same_tables_from_the_run_folders(root, tmp_path):
    out = tmp_path / "lb"
    leaderboard(out, root, seeds=1)
    before = (out / "leaderboard.md").read_text()
    for name in ("leaderboard.md", "leaderboard.csv", "report.html"):
        (out / name).unlink()
    rebuilt = leaderboard(out, root, seeds=1, train=False)
    assert rebuilt.outcomes == [] and (out / "leaderboard.md").read_text() == before


def test_cli_runs_the_grid_and_prints_the_table(root, tmp_path):
    result = run_cli("--methods", "mean_bc", "--datasets", DATASET, "--seeds", "1", "--preset",
                     "smoke", "--root", root, "--out", tmp_path / "lb", "--device", "cpu",
                     "--backend", "inline")
    assert result.exit_code == 0, result.output
    assert "| walker_walk-medrep |" in result.output and "1/1 runs finished" in result.output
    failed = run_cli("--methods", "mean_bc_fails", "--datasets", DATASET, "--seeds", "1",
                     "--preset", "smoke", "--root", root, "--out", tmp_path / "lb2", "--device",
                     "cpu", "--backend", "inline")
    assert_one_line_error(failed, 1, "1 run(s) failed", "run the same command again")


def test_download_fetches_missing_datasets_before_the_runs(root, tmp_path, monkeypatch):
    from hub_server import HubServer
    from huggingface_hub import constants as hf_constants

    from lqv_d4rl.format import MANIFEST_NAME
    from lqv_d4rl.hub import read_hub_record, upload_dataset

    for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "LQV_D4RL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    server = HubServer().start()  # a loopback stand-in for the Hub (tests/hub_server.py)
    try:
        monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", server.url)
        monkeypatch.setenv("LQV_D4RL_HUB_REPO", "lqv-test/leaderboard")
        upload_dataset(root / DATASET, repo_id="lqv-test/leaderboard")
        fresh = tmp_path / "fresh-root"
        result = run_cli("--methods", "mean_bc", "--datasets", DATASET, "--seeds", "1", "--preset",
                         "smoke", "--root", fresh, "--out", tmp_path / "lb", "--device", "cpu",
                         "--backend", "inline", "--download")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert f"downloading {DATASET}" in result.output
    assert (fresh / DATASET / MANIFEST_NAME).is_file()
    [row] = read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert row["finished"] == "1"
    assert row["hub_commit"] == read_hub_record(fresh / DATASET)["commit"]


def test_script_form_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "lqv_d4rl.leaderboard", "--help"],
                            capture_output=True, text=True, check=True)
    assert "Usage: python -m lqv_d4rl.leaderboard [OPTIONS]" in result.stdout
    assert "--runs-per-gpu K" in result.stdout


# ---------------------------------------------------------------------------------- pieces


def test_table_cells_hold_the_papers_values_beside_ours():
    grid = Grid(methods=["semopo"], datasets=[DATASET], seeds=[0, 1, 2], preset="paper")
    records = [RunRecord("semopo", DATASET, seed, "finished", episodes=10, mean_return=ret,
                         normalized_score=score, provenance={"wall_seconds": 2.0, "device": "cpu"})
               for seed, ret, score in ((0, 500.0, 0.8), (1, 540.0, 0.9))]
    records.append(RunRecord("semopo", DATASET, 2, "failed", error="boom"))
    [row] = cell_rows(grid, records)
    assert (row["paper_score_mean"], row["paper_score_std"]) == (0.87, 0.06)  # Table 1
    assert row["paper_return_mean"] is not None  # Table 5
    assert (row["score_mean"], row["score_std"]) == pytest.approx((0.85, 0.05))
    assert (row["return_mean"], row["return_std"]) == pytest.approx((520.0, 20.0))
    assert (row["finished"], row["failed"], row["seeds"], row["wall_seconds"]) == (2, 1, [0, 1], 4.0)


def _task(folder):
    return RunTask(spec=RunSpec("mean_bc", DATASET, 0), folder=str(folder), preset="smoke")


def test_a_dead_worker_is_recorded_as_a_failed_run(tmp_path):
    outcome = _outcome_of_process(_task(tmp_path / "run"), -9, 3.0)
    assert outcome.status == "failed" and "killed by SIGKILL (out of memory?)" in outcome.error
    assert json.loads((tmp_path / "run" / ERROR_NAME).read_text())["message"] == outcome.error
    outcome = _outcome_of_process(_task(tmp_path / "other"), 0, 1.0)
    assert outcome.status == "failed" and "without writing eval.json" in outcome.error


def test_a_run_folder_in_use_is_not_run_twice(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with folder_lock(folder) as locked:
        assert locked
        assert execute_run(_task(folder)).status == "busy"
    assert not (folder / "config.json").exists()


def test_each_gpu_worker_starts_seeing_only_its_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with only_gpu("cuda:1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # the runner itself sees two GPUs
    with only_gpu("cuda:1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"
    with only_gpu("cpu"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"


def test_slots_spread_runs_over_devices():
    assert device_slots("cpu", 4, workers=3) == ["cpu"] * 3
    assert device_slots("cuda:1", 3) == ["cuda:1"] * 3
    if torch.cuda.device_count() >= 2:
        assert device_slots("cuda", 2)[:2] == ["cuda:0", "cuda:1"]
