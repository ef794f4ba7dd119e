"""The leaderboard: every algorithm x dataset x seed, normalized, with confidence intervals.

One call (or ``lqv-d4rl leaderboard``, or ``python -m lqv_d4rl.leaderboard``) trains and evaluates
every method of the algorithm registry on every dataset with every seed, and writes the paper's
Table 1 for them next to the paper's own numbers::

    from lqv_d4rl.leaderboard import run_leaderboard
    result = run_leaderboard("lb", methods="semopo", datasets="walker_walk-*", seeds=4,
                             preset="paper", device="cuda", runs_per_gpu=4)
    result.written["leaderboard.md"]

The parts, in the order they act:

* :mod:`.grid`: the request, checked in full before anything starts (presets ``smoke`` and
  ``paper``);
* :mod:`.runner`: one run folder per run, ``<out>/runs/<method>/<dataset>/seed<k>/``, each run in
  its own worker process (K per GPU, spread over the GPUs); finished runs are skipped, unfinished
  ones resume, failed ones are recorded and retried on the next start; :mod:`.ray_backend` sends
  runs to a Ray cluster instead;
* :mod:`.results`, :mod:`.stats`: scores read back from the run folders; mean, median, IQM,
  optimality gap, probability of improvement and performance profiles with stratified-bootstrap
  intervals, as rliable defines them;
* :mod:`.report`, :mod:`.figures`, :mod:`.html`: ``leaderboard.md/.csv/.json``, figures and a
  self-contained ``report.html``.

Nothing here imports an algorithm (or torch) until a leaderboard is run.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LQVError

from .grid import (  # noqa: F401  (public API)
    PRESETS, Grid, GridError, RunSpec, check_existing_runs, plan_grid,
)

DEFAULT_RUNS_PER_GPU = 2
"""Runs that share one GPU by default (``--runs-per-gpu``)."""
TABLE_REFRESH_SECONDS = 300
"""While runs go on, the tables (not the figures) are rewritten at most this often."""
GRID_RECORD = "leaderboard_grid.json"


@dataclass
class LeaderboardResult:
    """What :func:`run_leaderboard` did: the grid, each run's outcome this time, the files written."""

    grid: Grid
    outcomes: list = field(default_factory=list)
    written: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    """Runs by status over the whole grid (``finished``, ``failed``, ``unfinished``, ``missing``)."""


def run_leaderboard(out, *, methods=None, datasets=None, seeds=None, preset=None, root=None,
                    device=None, runs_per_gpu=DEFAULT_RUNS_PER_GPU, workers=None,
                    threads_per_run=None, backend="local", ray_address=None, eval_episodes=None,
                    eval_workers=1, rgb_background=False, video_dir=None,
                    reference="paper_table1", download=False, analyse=False, train=True,
                    stats_seed=0, reps=None, figures=True, progress=True, echo=print,
                    before_training=None):
    """Run (or continue) a leaderboard in ``out`` and write its tables, figures and report.

    Args:
        out: the leaderboard folder (run folders go to ``out/runs``).
        methods, datasets, seeds, preset: the grid (see :func:`.grid.plan_grid`); ``preset``
            defaults to ``paper`` on a GPU and ``smoke`` on a CPU.
        root, download: where the datasets are; fetch missing ones from the Hub first.
        device: ``cpu``, ``cuda`` (every visible GPU) or ``cuda:N`` (default: cuda if present).
        runs_per_gpu: runs that share one GPU (local and Ray backends).
        workers: runs at once on a CPU-only machine (default: cores / threads_per_run).
        threads_per_run: torch CPU threads per run (default 1 on a CPU, which keeps CPU results
            the same however many runs share the machine; cores / slots on GPUs).
        backend: ``local`` (worker processes), ``ray`` (Ray tasks; ``ray_address``) or ``inline``
            (one after another in this process, for debugging).
        eval_episodes, eval_workers, rgb_background, video_dir, analyse: passed to every run (see
            :func:`lqv_d4rl.experiment.run_experiment`); ``rgb_background`` adds the paper's
            Table 2 evaluation over colour backgrounds.
        reference: normalization reference of the tables (``paper_table1`` or ``paper``).
        train: False only rebuilds the tables from the runs already in ``out``.
        stats_seed, reps: bootstrap seed and replicates (see :func:`.stats.summarize`).
        figures: also write the figures.
        progress, echo: a tqdm bar over runs; the function that prints one-line messages.
        before_training: called as ``before_training(grid, tasks, slots)`` with the runs still to
            do (:class:`.runner.RunTask`) and the device of each worker slot, before any starts
            (``lqv-d4rl leaderboard`` asks there before a long grid on a CPU); it may raise to
            stop.

    Raises :class:`NoRunsError` when ``train`` is False and ``out`` holds no runs.
    """
    from ..experiment import check_device, default_preset
    from .runner import BACKENDS

    if backend not in BACKENDS:
        raise GridError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "ray":
        from .ray_backend import import_ray

        import_ray()  # a missing package is named before anything starts
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) or runs_per_gpu < 1:
        raise GridError(f"--runs-per-gpu must be a positive integer, got {runs_per_gpu!r}")
    if not train:
        check_has_runs(out)
    device = check_device(device or _default_device())
    preset = preset or default_preset(device)
    grid = plan_grid(methods, datasets, seeds, preset=preset, root=root,
                     eval_episodes=eval_episodes, rgb_background=rgb_background,
                     video_dir=video_dir, reference=reference, download=download, echo=echo)
    if preset in PRESETS:
        echo(f"preset {preset}: {PRESETS[preset].description}")
    out = Path(out)
    check_existing_runs(grid, out)
    out.mkdir(parents=True, exist_ok=True)
    _write_grid_record(out, grid)
    result = LeaderboardResult(grid)
    if train:
        result.outcomes = _run_grid(grid, out, device=device, runs_per_gpu=runs_per_gpu,
                                    workers=workers, threads_per_run=threads_per_run,
                                    backend=backend, ray_address=ray_address,
                                    eval_workers=eval_workers, analyse=analyse,
                                    stats_seed=stats_seed, reps=reps, progress=progress, echo=echo,
                                    before_training=before_training)
    from .report import write_leaderboard

    result.written = write_leaderboard(grid, out, stats_seed=stats_seed, reps=reps, figures=figures)
    result.counts = json.loads(Path(result.written["leaderboard.json"]).read_text())["counts"]
    return result


class NoRunsError(LQVError):
    """``--report-only`` (``train=False``) on a folder that holds no leaderboard runs."""


def check_has_runs(out):
    """Raise :class:`NoRunsError`, saying how to make runs, unless ``out`` holds at least one run
    folder (``runs/<method>/<dataset>/seed<k>/config.json``)."""
    out = Path(out)
    if any(out.glob("runs/*/*/seed*/config.json")):
        return
    where = "does not exist" if not out.exists() else "holds no runs"
    raise NoRunsError(
        f"no runs to report: {out} {where} (--report-only rebuilds the tables from the run "
        "folders a leaderboard made there, runs/<method>/<dataset>/seed<k>/). Make runs first "
        f"with the same command without --report-only, e.g. `lqv-d4rl leaderboard --preset smoke "
        f"--out {out}`, or point --out at a leaderboard folder that holds runs.")


def _default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _write_grid_record(out, grid):
    from .. import __version__

    record = {"grid": grid.to_dict(), "code_version": __version__,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = out / f".{GRID_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out / GRID_RECORD)


def make_tasks(grid, out, *, threads_per_run=1, eval_workers=1, analyse=False):
    """The :class:`.runner.RunTask` of every run of ``grid``."""
    from .. import algorithms
    from .runner import RunTask

    portable = {method: algorithms.get(method) for method in grid.methods}
    return [RunTask(spec=spec, folder=str(spec.folder(out)), preset=grid.preset, root=grid.root,
                    eval_episodes=grid.eval_episodes, eval_workers=eval_workers,
                    rgb_background=grid.rgb_background, video_dir=grid.video_dir,
                    analyse=analyse, threads=threads_per_run, algorithm=portable[spec.method])
            for spec in grid.runs()]


def _run_grid(grid, out, *, device, runs_per_gpu, workers, threads_per_run, backend, ray_address,
              eval_workers, analyse, stats_seed, reps, progress, echo, before_training=None):
    from tqdm.auto import tqdm

    from ..runs import is_finished
    from .runner import LocalScheduler, device_slots, run_inline

    slots = device_slots(device, runs_per_gpu, workers, threads_per_run or 1)
    if threads_per_run is None:
        threads_per_run = 1 if device == "cpu" else max(1, _cpu_count() // len(slots))
    tasks = make_tasks(grid, out, threads_per_run=threads_per_run, eval_workers=eval_workers,
                       analyse=analyse)
    todo = [task for task in tasks if not is_finished(task.folder)]
    where = {"local": f"{len(slots)} worker process(es) on {_describe(slots)}",
             "inline": f"this process on {device}",
             "ray": f"Ray ({ray_address or 'a local instance'})"}[backend]
    echo(f"leaderboard in {out}: {len(tasks)} runs ({len(tasks) - len(todo)} finished earlier), "
         f"{len(todo)} to run in {where}")
    if not todo:
        return []
    if before_training is not None:
        before_training(grid, todo, slots if backend == "local" else [device])
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress, dynamic_ncols=True)
    last_tables = [time.monotonic()]

    def on_outcome(outcome):
        score = ("" if outcome.normalized_score is None
                 else f": normalized score {outcome.normalized_score:.3f}")
        detail = f" ({outcome.error})" if outcome.error else ""
        bar.clear()  # the message gets a line of its own, the bar redraws below it
        echo(f"{outcome.task.label} {outcome.status} in {outcome.seconds:.0f} s{score}{detail}")
        bar.update(1)
        if time.monotonic() - last_tables[0] > TABLE_REFRESH_SECONDS:
            from .report import write_leaderboard

            write_leaderboard(grid, out, stats_seed=stats_seed, reps=reps, figures=False)
            last_tables[0] = time.monotonic()

    try:
        if backend == "inline":
            return run_inline(todo, device, on_outcome)
        if backend == "ray":
            from .ray_backend import run_on_ray

            return run_on_ray(todo, out, address=ray_address, runs_per_gpu=runs_per_gpu,
                              threads_per_run=threads_per_run, on_outcome=on_outcome)
        return LocalScheduler(slots[:len(todo)], on_outcome=on_outcome).run(todo)
    finally:
        bar.close()


def _cpu_count():
    import os

    return os.cpu_count() or 1


def _describe(slots):
    counts = {}
    for slot in slots:
        counts[slot] = counts.get(slot, 0) + 1
    return ", ".join(f"{device} x{count}" if count > 1 else device
                     for device, count in counts.items())


__all__ = ["Grid", "GridError", "LeaderboardResult", "NoRunsError", "PRESETS", "RunSpec",
           "check_has_runs", "make_tasks", "plan_grid", "run_leaderboard"]
