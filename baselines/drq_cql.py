"""DrQ+CQL: DrQ-v2's augmented actor-critic with the CQL(H) critic penalty (V-D4RL, Lu et al. 2022).

V-D4RL's ``CQLAgent`` run as its README says (``algo=cql cql_importance_sample=false
min_q_weight=10``): the shared DrQ update (:mod:`baselines.drq`) with n-step 1, and for each of the
twin Q functions the penalty

    w * T * mean_s logsumexp_c(Q(s, c) / T) - w * mean Q(s, a_data)

over 31 candidate actions per state: ``num_random`` = 10 uniform random actions, the dataset
action, 10 actions sampled from the actor at the next state s' and 10 at s, all evaluated at s
(as in the original CQL code). w = 10, T = 1. Importance sampling and the Lagrange version of the
weight are off in that command and are not implemented here. The actor maximizes min(Q1, Q2) of
its sampled action, with no BC term and no entropy term.

The 30 extra actions per state reuse one pass of the critic's trunk (V-D4RL repeats the 20,000-d
encoder features 10 times and runs the trunk on every copy; the result is the same).
Facts and sources: ``reference/baselines.md`` section 1 (conglu1997/v-d4rl ``drqbc/cql.py``).

    lqv-d4rl train drq_cql walker_walk-medium --preset paper --device cuda
"""

from dataclasses import dataclass

import torch

from lqv_d4rl.algorithms import Algorithm

from .config_checks import non_negative, positive, positive_ints
from .core import sample_clipped
from .drq import DrQAgent
from .model_free import RESUMABLE_FIELDS, SMOKE, ActorCriticConfig, load_policy, train_model_free


@dataclass
class DrQCQLConfig(ActorCriticConfig):
    """DrQ+CQL (defaults: V-D4RL's README command for CQL; shared fields in
    :class:`baselines.model_free.ActorCriticConfig`)."""

    cql_weight: float = 10.0
    """Weight w of the CQL penalty: the README passes ``min_q_weight=10`` (the config default is
    1.0)."""
    cql_random_actions: int = 10
    """Uniform random actions per state, and also actions sampled from the actor at s and at s'
    (V-D4RL ``num_random: 10``; 3 x 10 + 1 = 31 candidates)."""
    cql_temperature: float = 1.0
    """Temperature T of the log-sum-exp (V-D4RL ``temp: 1.0``)."""

    def __post_init__(self):
        super().__post_init__()
        non_negative(self, "cql_weight")
        positive_ints(self, "cql_random_actions")
        positive(self, "cql_temperature")


def cql_penalty(q_data, q_candidates, weight, temperature):
    """CQL(H): ``w T mean_s logsumexp(cat[q_candidates, q_data] / T) - w mean(q_data)``.

    ``q_data`` (B,) are the Q values of the dataset actions, ``q_candidates`` (B, N) those of the
    other candidate actions of each state.
    """
    every = torch.cat([q_candidates, q_data[:, None]], dim=1)
    pushed_down = torch.logsumexp(every / temperature, dim=1).mean() * weight * temperature
    return pushed_down - weight * q_data.mean()


class DrQCQLAgent(DrQAgent):
    """The DrQ agent with the CQL penalty on both Q functions and a DDPG-style actor."""

    def critic_penalty(self, features, next_features, trunk, q1, q2, std, generator):
        """CQL(H) on Q1 and Q2 over 3 * ``cql_random_actions`` + 1 candidates per state."""
        config = self.config
        shape = (q1.shape[0], config.cql_random_actions, self.action_dim)
        random_actions = torch.rand(shape, generator=generator, device=q1.device) * 2 - 1
        with torch.no_grad(), self.autocast():
            current_mean = self.actor(features).float()
            next_mean = self.actor(next_features).float()
        current_actions = sample_clipped(current_mean[:, None], std, config.std_clip, generator,
                                         shape)
        next_actions = sample_clipped(next_mean[:, None], std, config.std_clip, generator, shape)
        candidates = torch.cat([random_actions, next_actions, current_actions], dim=1)
        with self.autocast():
            c1, c2 = self.critic.q_values(trunk, candidates)
        return (cql_penalty(q1, c1.float(), config.cql_weight, config.cql_temperature)
                + cql_penalty(q2, c2.float(), config.cql_weight, config.cql_temperature))

    def actor_loss(self, q, action, batch):
        """``-mean(min(Q1, Q2))`` of the sampled action (no BC term)."""
        loss = -q.mean()
        return loss, {"actor_loss": loss.detach()}


def train(dataset, config, run, device="cpu"):
    """Train DrQ+CQL on ``dataset`` in the run folder ``run`` (``ALGORITHM.train``)."""
    return train_model_free(dataset, config, run, device, DrQCQLAgent,
                            sampler_options={"nstep": config.nstep, "gamma": config.gamma},
                            postfix=("critic_loss", "critic_penalty"))


def load(run_dir, device="cpu"):
    """The evaluation policy of the DrQ+CQL run in ``run_dir``."""
    return load_policy(run_dir, DrQCQLAgent, DrQCQLConfig, "drq_cql", device)


PRESETS = {
    "paper": {},
    "smoke": SMOKE,
}
"""``paper``: V-D4RL's DrQ+CQL (550k updates, weight 10, 10 evaluation episodes); ``smoke``: tiny."""

ALGORITHM = Algorithm(
    name="drq_cql",
    config_class=DrQCQLConfig,
    presets=PRESETS,
    train=train,
    load=load,
    summary="DrQ+CQL (V-D4RL): DrQ-v2's augmented twin-critic actor-critic with the CQL(H) penalty "
            "(weight 10, 10 random actions, temperature 1).",
    resumable_fields=RESUMABLE_FIELDS,
)
