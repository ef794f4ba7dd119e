"""What ``lqv-d4rl semopo DATASET`` does: train on one dataset, evaluate, analyse, write it all down.

The click command itself lives in ``lqv_d4rl/cli/semopo_commands.py`` (so that ``lqv-d4rl --help``
does not import torch); it calls :func:`run` with the parsed options.

Output folder (``--out``, default ``runs/semopo/<dataset>-seed<seed>``)::

    config.json        the run's config, seed and dataset
    metrics.csv        phase,step,metric,value rows (training means, then evaluation)
    checkpoint.pt      agent + optimizers + samplers (``--resume`` continues from it)
    agent.pt           the final agent (``semopo.SeMOPOAgent.load``)
    eval.json          raw returns and normalized scores (grayscale; and RGB with --rgb-eval)
    uncertainty.*, action_entropy.*, reconstruction.png   see ``semopo.analysis``
"""

import json
from pathlib import Path

from lqv_d4rl.dataset import load_dataset

from .analysis import run_analysis
from .config import ConfigError, preset
from .evaluate import evaluate
from .train import METRICS_NAME, MetricsLog, train


def default_out_dir(dataset, seed):
    """``runs/semopo/<dataset name>-seed<seed>`` for a dataset id or folder."""
    name = Path(str(dataset)).name or "dataset"
    return Path("runs") / "semopo" / f"{name}-seed{seed}"


def run(dataset, *, preset_name="paper", device="cpu", seed=0, out=None, eval_episodes=None,
        penalty_lambda=None, sampling=None, penalty=None, joint=False, model_steps=None,
        policy_steps=None, eval_max_steps=None, rgb_eval=False, analysis=True, resume=False,
        root=None, stop_after=None, echo=print):
    """Train and evaluate SeMOPO on one dataset; returns the evaluation dict(s) by background.

    Options left at ``None`` keep the preset's value. With ``stop_after`` the run stops after that
    many updates (checkpointed) and returns None until a ``resume`` finishes it.
    """
    overrides = {
        "penalty_lambda": penalty_lambda, "sampling": sampling, "penalty": penalty,
        "model_steps": model_steps, "policy_steps": policy_steps, "eval_episodes": eval_episodes,
        "eval_max_steps": eval_max_steps,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if joint:
        overrides["separated"] = False
    config = preset(preset_name, extra={"dataset": str(dataset), "preset": preset_name}, **overrides)
    check_device(device)
    out = Path(out) if out is not None else default_out_dir(dataset, seed)
    data = load_dataset(dataset, root=root)
    echo(f"SeMOPO on {dataset}: {len(data)} episodes, {data.num_steps} steps, task {data.task}; "
         f"preset {preset_name}, device {device}, output {out}")
    agent = train(data, config, device=device, seed=seed, log_dir=out, resume=resume, progress=True,
                  stop_after=stop_after)
    if agent.model_updates < config.model_steps or agent.policy_updates < config.policy_steps:
        echo(f"stopped after {agent.model_updates} model and {agent.policy_updates} policy updates; "
             "continue with --resume")
        return None
    agent.save(out / "agent.pt")
    results = {"grayscale": _evaluate(agent, config, seed, rgb=False)}
    if rgb_eval:
        results["rgb"] = _evaluate(agent, config, seed, rgb=True)
    log = MetricsLog(out / METRICS_NAME)
    for background, result in results.items():
        log.write("eval", agent.policy_updates, {
            f"{background}_mean_return": result["mean_return"],
            f"{background}_mean_normalized_score": result["mean_normalized_score"],
        })
        echo(f"{background} background: return {result['mean_return']:.1f} +- "
             f"{result['std_return']:.1f}, normalized score {result['mean_normalized_score']:.3f} "
             f"over {result['episodes']} episodes")
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    if analysis:
        written = run_analysis(agent, data, out, seed=seed)
        echo("analysis: " + ", ".join(str(Path(path).name) for path in written.values()))
    return results


def check_device(device):
    """Raise :class:`ConfigError` for a CUDA device on a machine without one (instead of a traceback)."""
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA GPU here; "
                          "use --device cpu (with --preset smoke) or a GPU machine")


def _evaluate(agent, config, seed, *, rgb):
    # evaluation seeds are kept apart from the data-collection and training seeds
    return evaluate(agent, agent.task, config.eval_episodes, rgb_background=rgb,
                    seed=10_000 + 1000 * seed, max_steps=config.eval_max_steps, progress=True)
