"""CLI verbs: ``semopo`` (train, evaluate and analyse SeMOPO on one dataset)."""

from pathlib import Path

import click

from ..errors import DatasetNotFoundError, LQVError
from .hints import not_found_error

SAMPLING_CHOICES = ("conservative", "random", "return_curriculum")
PENALTY_CHOICES = ("semopo_paper", "semopo_code", "lompo")


def _check_device(ctx, param, device):
    if device == "cpu":
        return device
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{device!r} is no torch device; use cpu, cuda or cuda:N") from None
    return device


@click.command("semopo")
@click.argument("dataset")
@click.option("--preset", "preset_name", default="paper", show_default=True,
              type=click.Choice(["smoke", "paper", "released"]),
              help="paper: Appendix D; released: the released code's command; smoke: tiny and fast.")
@click.option("--device", default="cpu", show_default=True, callback=_check_device,
              help="torch device, e.g. cuda.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seeds the whole run.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: runs/semopo/<dataset>-seed<seed>).")
@click.option("--eval-episodes", type=click.IntRange(min=1), default=None,
              help="Evaluation episodes (default: the preset's, 10 for paper).")
@click.option("--eval-max-steps", type=click.IntRange(min=1), default=None,
              help="Cap agent steps per evaluation episode (quick checks only).")
@click.option("--lambda", "penalty_lambda", type=click.FloatRange(min=0), default=None,
              help="Penalty weight of r - lambda * u (paper 10, released code 5).")
@click.option("--penalty", type=click.Choice(PENALTY_CHOICES), default=None,
              help="Uncertainty formula: paper Eq. 2, the released code's, or LOMPO's.")
@click.option("--sampling", type=click.Choice(SAMPLING_CHOICES), default=None,
              help="World-model batches: conservative (paper), return_curriculum (released), random.")
@click.option("--joint", is_flag=True, help="Ablation: one joint world model (Offline DV2's).")
@click.option("--model-steps", type=click.IntRange(min=0), default=None,
              help="World-model updates (default: the preset's, 25000 for paper).")
@click.option("--policy-steps", type=click.IntRange(min=0), default=None,
              help="Actor-critic updates (default: the preset's, 100000 for paper).")
@click.option("--rgb-eval", is_flag=True,
              help="Also evaluate with colour backgrounds (the paper's Table 2).")
@click.option("--no-analysis", is_flag=True, help="Skip the uncertainty/entropy/reconstruction files.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--stop-after", type=click.IntRange(min=1), default=None,
              help="Stop (checkpointed) after this many updates; finish later with --resume.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset root (default: $LQV_D4RL_ROOT, else ~/.lqv_d4rl).")
def semopo_command(dataset, preset_name, device, seed, out, eval_episodes, eval_max_steps,
                   penalty_lambda, penalty, sampling, joint, model_steps, policy_steps, rgb_eval,
                   no_analysis, resume, stop_after, root):
    """Train SeMOPO on DATASET (an id such as walker_walk-medrep, or a folder), evaluate it in the
    distracted environment and write metrics, scores and analysis images to --out."""
    try:
        from semopo.cli import run

        run(dataset, preset_name=preset_name, device=device, seed=seed, out=out,
            eval_episodes=eval_episodes, penalty_lambda=penalty_lambda, sampling=sampling,
            penalty=penalty, joint=joint, model_steps=model_steps, policy_steps=policy_steps,
            eval_max_steps=eval_max_steps, rgb_eval=rgb_eval, analysis=not no_analysis,
            resume=resume, root=root, stop_after=stop_after, echo=click.echo)
    except DatasetNotFoundError as err:
        raise not_found_error(err, [dataset]) from None
    except LQVError as err:
        raise click.ClickException(str(err)) from None


COMMANDS = [semopo_command]
