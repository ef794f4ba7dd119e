"""The leaderboard end to end, in worker processes (slow: each worker imports torch and MuJoCo).

* killing the runner at any moment (SIGKILL, several times) and starting it again gives the same
  table as an uninterrupted grid, and the workers die with the runner;
* the Ray backend on a local Ray instance gives the same table, in place or shipping files back;
* the smoke grid of two methods x one dataset x two seeds with SeMOPO's smoke preset writes all
  three table files, the figures and the report, and survives an interruption.
"""

import csv
import multiprocessing
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import record_walker_dataset
from test_leaderboard_toys import ALGORITHM as MEAN_BC
from test_leaderboard_toys import DATASET, FAST_REPS, registered, session_starts, variant

from lqv_d4rl import algorithms
from lqv_d4rl.leaderboard import run_leaderboard
from lqv_d4rl.leaderboard.report import TABLE_NAMES

pytestmark = pytest.mark.slow

TESTS = str(Path(__file__).parent)
SCORE_COLUMNS = ("dataset", "method", "finished", "seeds", "score_mean", "score_std", "return_mean",
                 "return_std", "episodes", "manifest_sha256", "config_hash", "code_version")
TOYS = (MEAN_BC, variant("mean_bc_slow", updates=60, update_seconds=0.05, checkpoint_every=10))
"""``mean_bc`` and ``mean_bc_slow`` (3 s of training, a checkpoint every 10 updates)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("leaderboard-root")
    record_walker_dataset(folder / DATASET, episodes_per_policy=3, steps=24)
    return folder


@pytest.fixture(autouse=True)
def toys():
    with registered(*TOYS):
        yield


def leaderboard(out, root, methods="mean_bc,mean_bc_slow", **options):
    options = {"datasets": DATASET, "seeds": 2, "preset": "smoke", "device": "cpu",
               "workers": 2, "reps": FAST_REPS, "progress": False, "echo": lambda m: None,
               **options}
    return run_leaderboard(out, methods=methods, root=root, **options)


def scores(out):
    with open(Path(out) / "leaderboard.csv", newline="") as handle:
        return [{key: row[key] for key in SCORE_COLUMNS} for row in csv.DictReader(handle)]


def tables(out):
    """The score sections of leaderboard.md (the provenance section holds wall times)."""
    return (Path(out) / "leaderboard.md").read_text().split("## Runs and provenance")[0]


def _runner(out, root, methods, options):
    """A leaderboard in its own process, to be killed from outside."""
    with registered(*TOYS):
        leaderboard(out, root, methods, **options)


def start_runner(out, root, methods="mean_bc,mean_bc_slow", **options):
    process = multiprocessing.get_context("spawn").Process(
        target=_runner, args=(str(out), str(root), methods, options))
    process.start()
    return process


def wait_for(condition, process, timeout=600):
    started = time.monotonic()
    while not condition():
        assert process.is_alive(), "the runner ended before the moment to kill it"
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)


def worker_pids(out):
    """Pids of the workers that have run so far (each logs its pid in the run folder)."""
    pids = set()
    for log in Path(out).glob("runs/*/*/*/leaderboard.log"):
        pids.update(int(pid) for pid in re.findall(r"\(pid (\d+)\)", log.read_text()))
    return pids


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped) does not count
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def kill_when(out, root, condition, methods="mean_bc,mean_bc_slow", **options):
    """Start a runner, SIGKILL it once ``condition()`` holds, and check its workers die too."""
    process = start_runner(out, root, methods, **options)
    wait_for(condition, process)
    before = worker_pids(out)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in before), "a worker outlived the killed runner"


def test_killed_at_any_moment_and_restarted_gives_the_same_table(root, tmp_path):
    reference = tmp_path / "straight"
    leaderboard(reference, root)
    out = tmp_path / "killed"
    slow = out / "runs" / "mean_bc_slow" / DATASET
    moments = [
        lambda: (out / "leaderboard_grid.json").exists(),                  # before any training
        lambda: (slow / "seed0" / "checkpoint.pt").exists(),               # in the middle of a run
        lambda: len(list(out.glob("runs/*/*/*/eval.json"))) >= 2,          # some runs finished
        lambda: (slow / "seed1" / "checkpoint.pt").exists(),               # the last run started
    ]
    for moment in moments:
        kill_when(out, root, moment)
    result = leaderboard(out, root)
    assert result.counts["finished"] == 4
    assert max(session_starts(slow / "seed0")) > 0  # the run killed in its middle resumed
    assert scores(out) == scores(reference)
    assert tables(out) == tables(reference)


def test_ray_backend_gives_the_same_table_in_place_and_shipping_files(root, tmp_path):
    ray = pytest.importorskip("ray")
    from lqv_d4rl.leaderboard import make_tasks
    from lqv_d4rl.leaderboard.grid import plan_grid
    from lqv_d4rl.leaderboard.ray_backend import run_on_ray
    from lqv_d4rl.leaderboard.report import write_leaderboard

    reference = tmp_path / "inline"
    leaderboard(reference, root, methods="mean_bc", backend="inline")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": TESTS}})  # workers import the test learner
    try:
        in_place = tmp_path / "ray"
        result = leaderboard(in_place, root, methods="mean_bc", backend="ray")
        assert [o.status for o in result.outcomes] == ["finished", "finished"]
        assert scores(in_place) == scores(reference)

        shipped = tmp_path / "shipped"
        grid = plan_grid("mean_bc", DATASET, 2, preset="smoke", root=root)
        outcomes = run_on_ray(make_tasks(grid, shipped), shipped, ship="always")
        assert [o.status for o in outcomes] == ["finished", "finished"]
        assert str(outcomes[0].task.folder).startswith(str(shipped))
        for seed in (0, 1):
            folder = shipped / "runs" / "mean_bc" / DATASET / f"seed{seed}"
            assert {"config.json", "eval.json", "metrics.csv", "checkpoint.pt"} <= {
                path.name for path in folder.iterdir()}
        write_leaderboard(grid, shipped, reps=FAST_REPS)
        assert scores(shipped) == scores(reference)
    finally:
        ray.shutdown()


def test_smoke_grid_of_two_methods_survives_an_interruption(root, tmp_path):
    """The issue's must-hold: two real methods (SeMOPO's smoke preset and a second installed
    method, the quickest first; else the mean-action learner) x one dataset x two seeds."""
    installed = algorithms.names()
    second = next((name for name in ("bc", "drq_bc", "infogating", "drq_cql", "lompo",
                                     "offline_dv2") if name in installed), "mean_bc")
    methods = f"semopo,{second}"
    reference = tmp_path / "straight"
    leaderboard(reference, root, methods=methods)
    out = tmp_path / "interrupted"
    semopo = out / "runs" / "semopo" / DATASET
    kill_when(out, root, lambda: (semopo / "seed0" / "checkpoint.pt").exists(), methods=methods)
    result = leaderboard(out, root, methods=methods)
    assert result.counts["finished"] == 4, result.counts
    for name in TABLE_NAMES + ("report.html", "figures/scores_per_dataset.png",
                               "figures/aggregates.png", "figures/probability_of_improvement.png",
                               "figures/performance_profiles.png"):
        assert (out / name).stat().st_size > 0, name
    assert scores(out) == scores(reference)
    assert tables(out) == tables(reference)
