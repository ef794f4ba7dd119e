"""CLI verb ``leaderboard``: train and evaluate methods x datasets x seeds, then write the paper's
Table 1 for them (see :mod:`lqv_d4rl.leaderboard`). ``python -m lqv_d4rl.leaderboard`` is the same
command."""

import functools
from pathlib import Path

import click

from .cpu_guard import ALLOW_FLAG, ALLOW_HELP, confirm_long_cpu_run
from .options import ROOT_HELP, check_device_name, deprecated_alias


def _grid_options(command):
    options = [
        click.option("--methods", default=None, metavar="A,B",
                     show_default="every installed algorithm",
                     help="Comma-separated algorithm names."),
        click.option("--datasets", default=None, metavar="ID,ID|TASK-*|all",
                     show_default="the preset's: walker_walk-medrep for smoke, all for paper",
                     help="Dataset ids, TASK-* for a task's three levels, or all."),
        click.option("--seeds", type=int, default=None, metavar="N",
                     show_default="the preset's: 2 for smoke, 4 for paper",
                     help="Training seeds per method and dataset: 0..N-1."),
        click.option("--preset", default=None,
                     help="smoke (tiny networks: a pipeline check on a CPU) or paper (the Table 1 protocol: paper "
                          "presets, 4 seeds, 10 evaluation episodes); another name (e.g. "
                          "released) is passed to every algorithm with the paper grid.",
                     show_default="paper on a GPU, smoke on a CPU"),
        click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help=ROOT_HELP),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Leaderboard folder: runs/<method>/<dataset>/seed<k>/, tables, "
                          "figures, report.html. Run the same command again to continue."),
        click.option("--download", is_flag=True,
                     help="Fetch datasets missing under --root from the Hub before starting."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run_options(command):
    options = [
        click.option("--device", default=None, callback=check_device_name,
                     show_default="cuda if present, else cpu",
                     help="cpu, cuda (every visible GPU) or cuda:N."),
        click.option("--runs-per-gpu", type=click.IntRange(min=1), default=None, metavar="K",
                     show_default="2", help="Runs sharing each GPU at once."),
        click.option("--parallel-runs", type=click.IntRange(min=1), default=None,
                     show_default="CPU cores / --threads-per-run",
                     help="Runs at once on a CPU-only machine (on GPUs: --runs-per-gpu)."),
        click.option("--threads-per-run", type=click.IntRange(min=1), default=None,
                     show_default="1 on a CPU; cores / runs on GPUs",
                     help="torch CPU threads of each run (1 keeps CPU results independent of "
                          "--parallel-runs)."),
        click.option("--backend", type=click.Choice(["local", "ray", "inline"]), default="local",
                     show_default=True,
                     help="local: worker processes here; ray: Ray tasks (extra 'ray'); inline: "
                          "one run after another in this process (debugging)."),
        click.option("--ray-address", default=None,
                     help="Address of an existing Ray cluster (default: start a local one)."),
        click.option("--eval-episodes", type=int, default=None,
                     show_default="paper 10, smoke the algorithm preset's",
                     help="Evaluation episodes per run."),
        click.option("--eval-workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Processes playing each run's evaluation episodes."),
        click.option("--rgb-background", is_flag=True,
                     help="Also evaluate over colour backgrounds (the paper's Table 2)."),
        click.option("--video-dir", default=None,
                     help="Where the datasets' background videos are, if not at the recorded path."),
        click.option("--analyse", is_flag=True, help="Also write each algorithm's analysis files."),
        click.option("--reference", type=click.Choice(["paper_table1", "paper"]),
                     default="paper_table1", show_default=True,
                     help="Normalization reference (paper_table1 reproduces the paper's Table 1; "
                          "paper is the written definition, which differs for car_racing)."),
        click.option("--bootstrap-seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the bootstrap confidence intervals."),
        click.option("--report-only", is_flag=True,
                     help="Train nothing: rebuild the tables, figures and report from the runs "
                          "already in --out."),
        click.option(ALLOW_FLAG, is_flag=True, help=ALLOW_HELP),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("leaderboard", context_settings={"max_content_width": 100, "show_default": True,
                                               "help_option_names": ["-h", "--help"]})
@deprecated_alias("--workers", "--parallel-runs", type=click.IntRange(min=1))
@_grid_options
@_run_options
def leaderboard(methods, datasets, seeds, preset, root, out, download, device, runs_per_gpu,
                parallel_runs, threads_per_run, backend, ray_address, eval_episodes, eval_workers,
                rgb_background, video_dir, analyse, reference, bootstrap_seed, report_only,
                allow_long_cpu_run):
    """Train and evaluate METHODS x DATASETS x SEEDS and write the paper's Table 1 for them.

    Writes leaderboard.md/.csv/.json, figures/ and report.html to --out: per dataset and method
    the mean ± std over seeds of the normalized score and raw return next to the paper's Table 1
    and Table 5, and over datasets the mean, median and IQM with 95% stratified-bootstrap
    intervals, probability of improvement and performance profiles (rliable). Finished runs are
    skipped and unfinished ones resume: run the same command again after an interruption.

    \b
    Reproduce the paper's Table 1 on a GPU machine:
        lqv-d4rl leaderboard --preset paper --download --out table1
    """
    from ..errors import LQVError, UnknownDatasetError, UnknownTaskError
    from ..leaderboard import DEFAULT_RUNS_PER_GPU, GridError, run_leaderboard
    from .hints import cli_error, resume_hint_on_interrupt

    try:
        with resume_hint_on_interrupt(f"finished runs are kept in {out}"):
            result = run_leaderboard(
                out, methods=methods, datasets=datasets, seeds=seeds, preset=preset, root=root,
                device=device, runs_per_gpu=runs_per_gpu or DEFAULT_RUNS_PER_GPU,
                workers=parallel_runs, threads_per_run=threads_per_run, backend=backend,
                ray_address=ray_address, eval_episodes=eval_episodes, eval_workers=eval_workers,
                rgb_background=rgb_background, video_dir=video_dir, reference=reference,
                download=download, analyse=analyse, train=not report_only,
                stats_seed=bootstrap_seed, echo=click.echo,
                before_training=functools.partial(_confirm_cpu_grid, allowed=allow_long_cpu_run))
    except (GridError, UnknownDatasetError, UnknownTaskError) as err:
        raise click.UsageError(str(err)) from None
    except LQVError as err:  # here too, not only in the main group: the script form has none
        raise cli_error(err) from None
    except OSError as err:
        if err.filename is None:
            raise
        raise click.ClickException(f"{err.strerror or err}: {err.filename!r}; check the path and "
                                   "its permissions") from None
    click.echo(Path(result.written["leaderboard.md"]).read_text().split("\n## Raw return")[0])
    click.echo("wrote " + ", ".join(str(Path(out) / name) for name in
                                    ("leaderboard.md", "leaderboard.csv", "leaderboard.json",
                                     "report.html")))
    failed = result.counts.get("failed", 0)
    if failed:
        raise click.ClickException(f"{failed} run(s) failed (see 'Failed runs' in "
                                   f"{Path(out) / 'leaderboard.md'}); run the same command again "
                                   "to retry them")


def _confirm_cpu_grid(grid, tasks, slots, *, allowed):
    """``run_leaderboard``'s ``before_training`` hook: on a CPU, print the projected time of the
    runs still to do and ask before a long grid (:mod:`lqv_d4rl.cli.cpu_guard`)."""
    if any(not slot.startswith("cpu") for slot in slots) or not tasks:
        return
    from .. import algorithms
    from ..cpu_cost import MEASURED_ON, format_duration, project_run

    total, known = 0.0, 0
    for task in tasks:
        algorithm = algorithms.get(task.spec.method)
        config = algorithm.config(grid.preset, task=task.spec.dataset.rsplit("-", 1)[0])
        projection = project_run(algorithm.name, config, grid.preset)
        if projection is not None:
            total, known = total + projection.seconds, known + 1
    if not known:
        return
    parallel = len(slots)
    confirm_long_cpu_run(
        f"leaderboard --preset {grid.preset} on a CPU: {len(tasks)} run(s) to do, projected "
        f"{format_duration(total)} of CPU time for the {known} with measured figures, about "
        f"{format_duration(total / parallel)} with {parallel} run(s) at once, from per-update "
        f"times measured on {MEASURED_ON} (table in lqv_d4rl/cpu_cost.py; evaluation not "
        "included)",
        total / parallel, allowed=allowed)


COMMANDS = [leaderboard]
