"""DrQ+BC: DrQ-v2's augmented actor-critic with TD3+BC's actor loss (V-D4RL, Lu et al. 2022).

V-D4RL's ``DrQV2Agent(offline=True, use_bc=True)`` run with the README's ``nstep=3``: the shared
DrQ update (:mod:`baselines.drq`: random shifts, clipped double-Q with target smoothing, target
critic with tau 0.01) and the actor loss of TD3+BC (Fujimoto & Gu 2021, Eq. 5 of arXiv:2106.06860)

    lambda = alpha / mean|Q|   (detached),   loss = -lambda * mean(Q) + MSE(a, a_data),

where ``a`` is the actor's *sampled* action (mean + clipped noise) and Q = min(Q1, Q2)(s, a).
Facts and sources: ``reference/baselines.md`` section 1 (conglu1997/v-d4rl ``drqbc/drqv2.py``
``update_actor``; ``bc_weight: 2.5`` in ``cfgs/config.yaml``).

    lqv-d4rl train drq_bc walker_walk-medium --preset paper --device cuda
"""

from dataclasses import dataclass

import torch.nn.functional as F

from lqv_d4rl.algorithms import Algorithm

from .config_checks import non_negative
from .drq import DrQAgent
from .model_free import RESUMABLE_FIELDS, SMOKE, ActorCriticConfig, load_policy, train_model_free


@dataclass
class DrQBCConfig(ActorCriticConfig):
    """DrQ+BC (defaults: V-D4RL's README command for DrQ+BC; shared fields in
    :class:`baselines.model_free.ActorCriticConfig`)."""

    nstep: int = 3
    """Steps of the TD target: the V-D4RL README runs DrQ+BC with ``nstep=3`` (its
    ``offline_dmc.yaml`` default is 1)."""
    alpha: float = 2.5
    """TD3+BC's alpha: the Q term is weighted by alpha / mean|Q| (V-D4RL ``bc_weight: 2.5``)."""

    def __post_init__(self):
        super().__post_init__()
        non_negative(self, "alpha")


def td3_bc_actor_loss(q, action, data_action, alpha):
    """TD3+BC's actor loss ``-(alpha / mean|Q|) mean(Q) + MSE(action, data_action)`` and the weight
    ``alpha / mean|Q|`` (computed from detached Q values)."""
    weight = alpha / q.detach().abs().mean()
    return -weight * q.mean() + F.mse_loss(action, data_action), weight


class DrQBCAgent(DrQAgent):
    """The DrQ agent with the TD3+BC actor loss."""

    def actor_loss(self, q, action, batch):
        """TD3+BC on the sampled action."""
        loss, weight = td3_bc_actor_loss(q, action, batch["action"], self.config.alpha)
        bc = F.mse_loss(action.detach(), batch["action"])
        return loss, {"actor_loss": loss.detach(), "bc_loss": bc, "q_weight": weight}


def train(dataset, config, run, device="cpu"):
    """Train DrQ+BC on ``dataset`` in the run folder ``run`` (``ALGORITHM.train``)."""
    return train_model_free(dataset, config, run, device, DrQBCAgent,
                            sampler_options={"nstep": config.nstep, "gamma": config.gamma},
                            postfix=("critic_loss", "bc_loss"))


def load(run_dir, device="cpu"):
    """The evaluation policy of the DrQ+BC run in ``run_dir``."""
    return load_policy(run_dir, DrQBCAgent, DrQBCConfig, "drq_bc", device)


PRESETS = {
    "paper": {},
    "smoke": SMOKE,
}
"""``paper``: V-D4RL's DrQ+BC (550k updates, n-step 3, 10 evaluation episodes); ``smoke``: tiny."""

ALGORITHM = Algorithm(
    name="drq_bc",
    config_class=DrQBCConfig,
    presets=PRESETS,
    train=train,
    load=load,
    summary="DrQ+BC (V-D4RL): DrQ-v2's augmented twin-critic actor-critic with TD3+BC's actor "
            "loss (alpha 2.5, n-step 3).",
    resumable_fields=RESUMABLE_FIELDS,
)
