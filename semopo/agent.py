"""The SeMOPO agent: a world model, an actor-critic in its endogenous latent space, and a policy that acts.

Policy learning (paper Sec. 3.3, DreamerV2 behaviour learning): every posterior state of a batch
(B x T of them) starts an imagined rollout of ``horizon`` steps in the *endogenous* latent space,
one ensemble head drawn per step; the actor and critic learn from the penalized reward::

    r~ = r^(s+_{t+1}) - lambda * u(s+_t, a_t)

where ``u`` is the disagreement of the K endogenous prior heads (``config.penalty``) about the step
(s+_t, a_t) -> s+_{t+1}, read off s+_{t+1}'s GRU state. ``imagined_reward_states="current"`` reads
both one state earlier, at the start state and the first H-1 imagined ones, as the released code
does (DreamerV2's alignment, see :mod:`lqv_d4rl.networks.behavior`). The penalty keeps its
gradient, so (as in the released code) the actor is also pushed, through the dynamics, towards
actions on which the heads agree. The world model is not updated in this phase.
"""

from pathlib import Path

import numpy as np
import torch

from lqv_d4rl.networks import ActorCritic, BehaviorConfig, flatten_states
from lqv_d4rl.policies import LatentPolicy
from lqv_d4rl.samplers import mark_window_starts

from .config import SeMOPOConfig
from .model import build_world_model

CHECKPOINT_VERSION = 2
"""2: the layer-norm GRU has a bias, and ``optimizer="per_branch"`` checkpoints an exogenous
optimizer."""


def behavior_config(config):
    """The ``lqv_d4rl.networks.BehaviorConfig`` of a :class:`SeMOPOConfig` (DreamerV2's actor)."""
    return BehaviorConfig.from_config(config)


class SeMOPOAgent:
    """World model + actor-critic, with the two training steps and checkpointing.

    Args:
        action_dim: size of the action vector.
        config: a :class:`SeMOPOConfig`.
        task: the benchmark task the data comes from (kept for evaluation), or None.
        device: ``"cpu"``, ``"cuda"``, ...
        seed: seeds the ensemble-head draws (parameters are initialized from the global torch
            RNG: seed it first, as :func:`semopo.train` does).
        state_dim: size of the dataset's state vectors, needed with ``observation="state"``.
    """

    def __init__(self, action_dim, config=None, *, task=None, device="cpu", seed=0,
                 state_dim=None):
        self.config = config or SeMOPOConfig()
        self.action_dim = int(action_dim)
        self.task = task
        self.device = torch.device(device)
        self.seed = int(seed)
        self.state_dim = (int(state_dim) if self.config.observation == "state"
                          and state_dim is not None else None)
        self.world_model = build_world_model(self.action_dim, self.config, self.device, self.seed,
                                             state_dim=self.state_dim)
        self.behavior = ActorCritic(self.world_model.rssm.feature_dim, self.action_dim,
                                    behavior_config(self.config), device=self.device)
        self.model_updates = 0
        self.policy_updates = 0

    # ----------------------------------------------------------------------------- training

    def train_model_step(self, batch):
        """One world-model update on a sequence batch; returns detached scalar metric tensors."""
        self.world_model.train()
        _, metrics = self.world_model.train_step(mark_window_starts(batch))
        self.model_updates += 1
        return _detached(metrics)

    def penalized_reward(self, imagination):
        """``r - lambda * u`` of each imagined transition, ``(H, N)``; also returns ``(reward, u)``."""
        reward = self.world_model.reward(imagination).float()
        penalty = self.world_model.disagreement(imagination, self.config.penalty).float()
        return reward - self.config.penalty_lambda * penalty, reward, penalty

    def start_states(self, batch):
        """All posterior states of a batch, flattened to ``(B*T, ...)`` and detached."""
        with torch.no_grad():
            post, _ = self.world_model.observe(mark_window_starts(batch))
        return flatten_states(post)

    def train_policy_step(self, batch):
        """One actor and critic update from imagination started at the batch's posteriors."""
        self.world_model.eval()
        start = self.start_states(batch)
        parts = {}

        def reward_fn(imagination):
            total, reward, penalty = self.penalized_reward(imagination)
            parts["model_reward"] = reward.mean().detach()
            parts["penalty"] = penalty.mean().detach()
            return total

        metrics = self.behavior.train_step(start, self.world_model.imagine, reward_fn)
        metrics.update(parts)
        self.policy_updates += 1
        return _detached(metrics)

    # ----------------------------------------------------------------------------- acting

    def policy(self, *, sample=False):
        """A :class:`lqv_d4rl.policies.LatentPolicy` (sharing this agent's networks) that acts on
        environment observations: the endogenous encoder and posterior filter the latent state (the
        exogenous branch is not needed to act), the actor plays its mode (``sample=True``
        samples). With ``observation="state"`` it acts on the environment's state vectors."""
        model = self.world_model
        return LatentPolicy(model.encoder, model.rssm, self.behavior.actor, self.action_dim,
                            sample=sample, observation_key=model.observation_key,
                            state_dim=self.state_dim)

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self):
        """Everything needed to continue training: networks, optimizers, counters, head generators."""
        model = self.world_model
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "action_dim": self.action_dim,
            "task": self.task,
            "seed": self.seed,
            "state_dim": self.state_dim,
            "world_model": model.state_dict(),
            "model_optimizer": model.optimizer.state_dict(),
            "exo_optimizer": _state_or_none(getattr(model, "exo_optimizer", None)),
            "behavior": self.behavior.state_dict(),
            "actor_optimizer": self.behavior.actor_opt.state_dict(),
            "critic_optimizer": self.behavior.critic_opt.state_dict(),
            "behavior_updates": self.behavior.updates,
            "head_generators": [rssm.generator.get_state() for rssm in _rssms(model)],
            "model_updates": self.model_updates,
            "policy_updates": self.policy_updates,
        }

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (same config and action size)."""
        _check_version(state)
        model = self.world_model
        model.load_state_dict(state["world_model"])
        model.optimizer.load_state_dict(state["model_optimizer"])
        if getattr(model, "exo_optimizer", None) is not None:
            model.exo_optimizer.load_state_dict(state["exo_optimizer"])
        self.behavior.load_state_dict(state["behavior"])
        self.behavior.actor_opt.load_state_dict(state["actor_optimizer"])
        self.behavior.critic_opt.load_state_dict(state["critic_optimizer"])
        self.behavior.updates = int(state["behavior_updates"])
        for rssm, generator_state in zip(_rssms(model), state["head_generators"]):
            rssm.generator.set_state(generator_state)
        self.model_updates = int(state["model_updates"])
        self.policy_updates = int(state["policy_updates"])

    def save(self, path):
        """Write the agent to ``path`` atomically (a temporary file renamed over it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def from_state_dict(cls, state, device="cpu"):
        """Build an agent from a checkpoint dict."""
        _check_version(state)
        agent = cls(state["action_dim"], SeMOPOConfig.from_dict(state["config"]),
                    task=state["task"], device=device, seed=state["seed"],
                    state_dim=state.get("state_dim"))
        agent.load_state_dict(state)
        return agent

    @classmethod
    def load(cls, path, device="cpu"):
        """Load an agent saved with :meth:`save`, or the agent of a run folder's checkpoint.

        The file is read on the CPU with ``weights_only=True``; ``load_state_dict`` then places
        every tensor on ``device`` (RNG states stay CPU byte tensors, as ``set_state`` needs).
        """
        path = Path(path)
        state = torch.load(path / "checkpoint.pt" if path.is_dir() else path, map_location="cpu",
                           weights_only=True)
        return cls.from_state_dict(state.get("agent", state), device=device)


def _check_version(state):
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')!r} is not "
                         f"{CHECKPOINT_VERSION}; it was written by another semopo version")


def _state_or_none(optimizer):
    return None if optimizer is None else optimizer.state_dict()


def _rssms(model):
    rssms = [model.rssm]
    if getattr(model, "exo_rssm", None) is not None:
        rssms.append(model.exo_rssm)
    return rssms


def _detached(metrics):
    # tensors, not floats: converting every step would wait for the GPU at every update
    return {key: torch.as_tensor(value).detach().float() for key, value in metrics.items()}
