"""SeMOPO as a platform algorithm: ``lqv-d4rl train semopo DATASET`` and the leaderboard use this."""

from lqv_d4rl.algorithms import Algorithm

from .agent import SeMOPOAgent
from .config import PRESETS, SeMOPOConfig
from .training import train_in_run


def load(run_dir, device="cpu"):
    """The policy of the SeMOPO run in ``run_dir`` (from its checkpoint)."""
    return SeMOPOAgent.load(run_dir, device=device).policy()


def analyse(run_dir, dataset, out_dir, device="cpu"):
    """The paper's analyses of the run in ``run_dir`` (Fig. 2/8 uncertainty per branch, Fig. 5
    reconstructions, Fig. 6 action entropy) written to ``out_dir``; returns ``{name: path}``."""
    from lqv_d4rl.runs import read_run_config

    from .analysis import run_analysis

    agent = SeMOPOAgent.load(run_dir, device=device)
    return run_analysis(agent, dataset, out_dir, seed=read_run_config(run_dir)["seed"])


ALGORITHM = Algorithm(
    name="semopo",
    config_class=SeMOPOConfig,
    presets=PRESETS,
    train=train_in_run,
    load=load,
    analyse=analyse,
    summary="SeMOPO (Wan et al., ICML 2024): separated world model, conservative sampling, "
            "uncertainty-penalized endogenous actor-critic.",
    resumable_fields=("policy_steps", "log_every", "checkpoint_every", "eval_episodes",
                      "eval_max_steps"),
)
