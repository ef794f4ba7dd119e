"""CLI verbs that look at the environments: ``preview-env``."""

from pathlib import Path

import click

from .hints import TaskChoice


@click.command("preview-env")
@click.argument("task", type=TaskChoice())
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file: .gif (animation) or .png (contact sheet).")
@click.option("--steps", default=60, show_default=True, type=click.IntRange(min=1),
              help="Agent steps to roll out with random actions.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seeds the task, the background video and the random actions.")
@click.option("--video-dir", default=None,
              help="Folder or glob of real driving videos (default: the procedural video).")
@click.option("--video-frames", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Frames in the background pool.")
@click.option("--composite", default="segmentation", show_default=True,
              type=click.Choice(["segmentation", "color"]),
              help="Exact segmentation compositing, or the published blue-dominance rule.")
@click.option("--rgb-background", is_flag=True, help="Colour instead of grayscale background.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Keep every K-th frame.")
def preview_env(task, out, steps, seed, video_dir, video_frames, composite, rgb_background, every):
    """Roll out TASK with random actions and save what the agent sees as a GIF or PNG."""
    import distractors

    from ..errors import LQVError
    from ..images import preview_format, save_preview

    try:
        preview_format(out)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--out") from None
    try:
        frames = _random_rollout_frames(task, steps=steps, seed=seed,
                                        distractor=video_dir or "procedural",
                                        num_video_frames=video_frames,
                                        composite=composite, rgb_background=rgb_background)
    except (LQVError, distractors.VideoSourceError) as err:
        raise click.ClickException(str(err)) from None
    kept = frames[::every]
    path = save_preview(kept, out)
    click.echo(f"wrote {len(kept)} frames of {task} to {path}")


def _random_rollout_frames(task, *, steps, seed, **env_options):
    """Observations of ``steps`` seeded random agent steps (first observation included)."""
    import numpy as np

    from ..envs import make_env

    env = make_env(task, seed=seed, **env_options)
    try:
        rng = np.random.default_rng(seed)
        observation, _ = env.reset(seed=seed)
        frames = [observation]
        for _ in range(steps):
            action = rng.uniform(-1.0, 1.0, env.action_space.shape)
            observation, _, terminated, truncated, _ = env.step(action)
            frames.append(observation)
            if terminated or truncated:
                observation, _ = env.reset()
    finally:
        env.close()
    return np.stack(frames)


COMMANDS = [preview_env]
