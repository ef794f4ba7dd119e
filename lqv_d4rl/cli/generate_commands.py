"""CLI verbs that make datasets: ``lqv-d4rl generate TASK`` (behaviour policies, the three levels)
and ``lqv-d4rl rerender ID`` (the same episodes over other backgrounds)."""

import click
from click.core import ParameterSource

from ..tasks import LEVELS
from .hints import TaskChoice, kept_by_generate, resume_hint_on_interrupt
from .options import ROOT_DEFAULT, ROOT_HELP, check_device_name, check_levels, deprecated_alias


def _workers_flag(values):
    """What the deprecated ``generate --workers`` meant: environment processes for tia, render
    processes for sac-state."""
    return "--render-workers" if values["behaviour"] == "sac-state" else "--env-workers"


@click.command()
@deprecated_alias("--workers", _workers_flag, type=click.IntRange(min=1),
                  help_text="Deprecated: --env-workers for tia, --render-workers for sac-state.")
@click.argument("task", type=TaskChoice())
@click.option("--levels", default=",".join(LEVELS), show_default=True, callback=check_levels,
              help="Comma-separated levels to generate: random, medrep, medium.")
@click.option("--root", type=click.Path(file_okay=False), default=None, help=ROOT_HELP)
@click.option("--video-dir", default=None,
              help="Folder or glob of real driving videos for the background "
                   "(default: the built-in procedural driving video).")
@click.option("--behaviour", type=click.Choice(["sac-state", "tia"]), default="sac-state",
              show_default=True,
              help="sac-state (recommended; made and measured on 2-core CPUs): SAC trained on "
                   "states (V-D4RL's way), frames rendered afterwards, every level checked "
                   "against Table 3. tia: TIA trained on the distracted images (the paper's "
                   "recipe): a GPU job, and TIA learning with the video is unproven on a CPU.")
@click.option("--preset", type=click.Choice(["cpu", "smoke", "paper"]), default=None,
              show_default="cpu for sac-state, smoke for tia",
              help="sac-state: cpu (the paper's episode counts and Table 3's returns, about an "
                   "hour per task on 2 cores) or smoke (tiny pipeline check, NOT the benchmark); "
                   "tia: smoke or paper (the published sizes and schedule, a GPU job).")
@click.option("--device", default="cpu", show_default=True, callback=check_device_name,
              help="Torch device of the TIA agents: cpu or cuda (cuda:N).")
@click.option("--env-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="tia only: environment processes that step the recipe's episodes played "
                   "at once (8 for paper); the bytes do not depend on it.")
@click.option("--render-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="sac-state only: processes that render the recorded episodes (the bytes do "
                   "not depend on it).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of everything; the same seed and preset give the same bytes, with "
                   "any number of workers.")
@click.option("--max-env-steps", type=click.IntRange(min=1), default=None,
              show_default="the preset's: 3,000,000 for cpu",
              help="sac-state only: the training run's budget in environment steps. A run that "
                   "spent a smaller one without reaching the medium level goes on from where it "
                   "stopped.")
@click.option("--record-closest-medium", is_flag=True,
              help="sac-state only: when the budget is spent and no snapshot matched Table 3's "
                   "medium row, record the closest one as the medium level (its fidelity "
                   "verdicts show the miss) instead of stopping with an error.")
@click.option("--overwrite", is_flag=True,
              help="Replace finished datasets and restart the training run.")
def generate(task, levels, root, video_dir, behaviour, preset, device, env_workers,
             render_workers, seed, max_env_steps, record_closest_medium, overwrite):
    """Make the datasets of TASK with behaviour policies trained on it.

    TASK is walker_walk, cheetah_run, hopper_hop, humanoid_walk or car_racing.

    Rerunning an interrupted command resumes it (training checkpoint under <root>/.work/,
    finished shards kept); a finished dataset is left alone unless --overwrite is given. Prints
    the return statistics next to the paper's Table 3 at the end.
    """
    from collectors.generate import generate as run_generate

    workers = _generate_workers(behaviour, env_workers, render_workers)
    with resume_hint_on_interrupt(kept_by_generate(root)):
        result = run_generate(task, levels=levels, root=root, video_dir=video_dir,
                              behaviour=behaviour, preset=preset, device=device, workers=workers,
                              seed=seed, overwrite=overwrite, max_env_steps=max_env_steps,
                              record_closest_medium=record_closest_medium)
    for level, folder in result.folders.items():
        click.echo(f"{task}-{level}: {folder}")


def _generate_workers(behaviour, env_workers, render_workers):
    """The process count ``collectors.generate`` takes as ``workers``: environment processes for
    tia, render processes for sac-state; giving the other behaviour's option is a usage error."""
    given = click.get_current_context().get_parameter_source
    if behaviour == "tia":
        if given("render_workers") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--render-workers does not apply to --behaviour tia (TIA "
                                   "renders while it plays); use --env-workers")
        return env_workers
    if given("env_workers") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--env-workers does not apply to --behaviour sac-state (it plays "
                               "episodes on the physics alone and renders them afterwards); use "
                               "--render-workers")
    return render_workers


@click.command()
@deprecated_alias("--workers", "--render-workers", type=click.IntRange(min=1))
@click.argument("dataset_id")
@click.option("--video-dir", required=True,
              help="Folder or glob of driving videos for the new background (e.g. Kinetics-400 "
                   "train/driving_car), or 'procedural'.")
@click.option("--id", "new_id", required=True,
              help="Id of the new dataset (the source's id works with another --to-root).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help=f"Dataset root of the source ({ROOT_DEFAULT}).")
@click.option("--to-root", type=click.Path(file_okay=False), default=None,
              show_default="the source's root", help="Dataset root of the new dataset.")
@click.option("--composite", type=click.Choice(["segmentation", "color"]), default=None,
              show_default="as in the source", help="How the background is put behind the agent.")
@click.option("--rgb-background", is_flag=True, default=None,
              help="Colour backgrounds (the paper's Table 2 variant) instead of grayscale.")
@click.option("--render-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Render processes (the bytes do not depend on it).")
@click.option("--overwrite", is_flag=True, help="Replace a finished dataset of that id.")
def rerender(dataset_id, video_dir, new_id, root, to_root, composite, rgb_background,
             render_workers, overwrite):
    """Render every frame of DATASET_ID again over other background videos.

    Replays the stored physics states (format version 2, dm_control tasks) and writes a complete
    dataset NEW_ID with the same actions, rewards, states and agent pixels. Rerunning an
    interrupted command resumes it. For the sac-state recipe the result equals, byte for byte,
    `lqv-d4rl generate TASK --behaviour sac-state --video-dir DIR` with the same seed.
    """
    from ..rerender import rerender as run_rerender

    video_dir = None if video_dir == "procedural" else video_dir
    with resume_hint_on_interrupt(f"the shards rendered so far are kept for {new_id!r}"):
        folder = run_rerender(dataset_id, new_id, video_dir=video_dir, root=root,
                              to_root=to_root, composite=composite,
                              rgb_background=rgb_background, workers=render_workers,
                              overwrite=overwrite)
    click.echo(f"{new_id}: {folder}")


COMMANDS = [generate, rerender]
