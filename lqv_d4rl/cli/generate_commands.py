"""CLI verb: ``lqv-d4rl generate TASK`` (train TIA behaviour policies, record the three levels)."""

import click

from ..tasks import LEVELS
from .hints import TaskChoice


@click.command()
@click.argument("task", type=TaskChoice())
@click.option("--levels", default=",".join(LEVELS), show_default=True,
              help="Comma-separated levels to generate: random, medrep, medium.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset root (default: $LQV_D4RL_ROOT or ~/.lqv_d4rl).")
@click.option("--video-dir", default=None,
              help="Folder or glob of real driving videos for the background "
                   "(default: the built-in procedural driving video).")
@click.option("--preset", type=click.Choice(["smoke", "paper"]), default="smoke",
              show_default=True,
              help="smoke: tiny pipeline check in minutes on a CPU (tiny datasets, NOT the "
                   "benchmark); paper: the published sizes, schedule and episode counts (GPU).")
@click.option("--device", default="cpu", show_default=True,
              help="Torch device of the TIA agents: cpu or cuda (cuda:N).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Environment worker processes (also the number of episodes played at once).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of everything; same seed, preset and workers give the same bytes.")
@click.option("--overwrite", is_flag=True,
              help="Replace finished datasets and restart the training run.")
def generate(task, levels, root, video_dir, preset, device, workers, seed, overwrite):
    """Train TIA behaviour policies on TASK and record its datasets.

    TASK is walker_walk, cheetah_run, hopper_hop, humanoid_walk or car_racing.

    Rerunning an interrupted command resumes it (training checkpoint under
    <root>/.work/<task>-seed<S>/, finished shards kept); a finished dataset is left alone unless
    --overwrite is given. Prints the return statistics next to the paper's Table 3 at the end.
    """
    from ..errors import LQVError

    try:
        from collectors.generate import generate as run_generate

        result = run_generate(task, levels=levels, root=root, video_dir=video_dir,
                              preset=preset, device=device, workers=workers, seed=seed,
                              overwrite=overwrite)
    except LQVError as err:
        raise click.ClickException(str(err)) from err
    for level, folder in result.folders.items():
        click.echo(f"{task}-{level}: {folder}")


COMMANDS = [generate]
