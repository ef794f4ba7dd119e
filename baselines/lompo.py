"""LOMPO (Rafailov et al., "Offline Reinforcement Learning from Images with Latent Space Models",
L4DC 2021) in PyTorch, as V-D4RL's ``baselines/lompo/`` runs it.

::

    lqv-d4rl train lompo walker_walk-medrep --preset paper --device cuda

The algorithm, in four phases of one run:

1. **World model** (``model_steps`` updates): a Dreamer-v1 model with a Gaussian latent (64
   stochastic, 256 deterministic units; ReLU CNN of depth 32) whose prior is an ensemble of K = 7
   heads on one GRU, one head drawn per step. Loss: KL(posterior || prior) with no free nats and no
   balancing, minus the image and reward log-likelihoods.
2. **Real latent buffer**: every episode of the dataset is filtered once by the (now frozen) model;
   its posterior features give real transitions ``(f_t, a_{t+1}, f_{t+1}, r_{t+1})``, unpenalized.
3. **Imagined latent buffer** (phase ``imagine``): from all B x T posterior states of a model batch,
   the actor plus Gaussian noise (0.2) imagines ``horizon`` = 5 steps, one random head per step;
   each transition gets the model's reward minus the penalty::

       r~ = r^(f_{t+1}) - lambda * std_k log p_k(z_{t+1})        (lambda 5)

   the standard deviation over the K heads of the log-density each head gives the sampled latent
   z_{t+1}. This repeats until ``start_training`` (50,000) imagined transitions are stored.
4. **Agent** (``policy_steps`` updates): a deterministic tanh actor and twin Q networks (DDPG with
   clipped double Q: no entropy, no target actor, no target smoothing; LOMPO's CQL term has weight 0
   and is left out) on batches of 256 real + 256 imagined transitions. Every ``data_every`` (200)
   updates one more real episode is re-encoded and one more model batch of rollouts imagined.

Both buffers are rings of the dataset's number of transitions, kept on the training device; they
are part of the checkpoint (about 2 x transitions x 2.6 kB: ~0.5 GB for a 200-episode dataset), so
that a resumed run is the run that was stopped.

Where this port departs from V-D4RL (documented in docs/departures.md): evaluation at
the end (``eval_episodes``) instead of one episode every 200 updates; target Q networks start as
copies of the online ones (in the released code they are deep copies of not-yet-built Keras modules,
so they start from their own random initialization and Q1's target copies Q2); the real buffer
optionally keeps the dataset's terminals (``real_terminals``; off as in LOMPO, whose ``pcont`` is off).
"""

import copy
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lqv_d4rl.algorithms import Algorithm, ConfigError, config_from_dict, config_to_dict
from lqv_d4rl.networks import (
    MLP,
    RSSM,
    ConvDecoder,
    ConvEncoder,
    DenseHead,
    Optimizer,
    autocast,
    detach_states,
    flatten_states,
    image_log_likelihood,
    imagination_disagreement,
    latent_kl,
    preprocess_image,
)
from lqv_d4rl.networks.distributions import unit_normal
from lqv_d4rl.networks.world_model import BATCH_KEYS, STATE_BATCH_KEYS, batch_to_tensors
from lqv_d4rl.observations import check_observation_fields, sequence_keys, state_size
from lqv_d4rl.policies import LatentPolicy

from . import config_checks as check
from .model_based import (
    RESUMABLE_FIELDS,
    RunBatches,
    agent_state,
    analyse,
    checkpoint_state,
    detached,
    restore,
)

CHECKPOINT_VERSION = 1


@dataclass
class LOMPOConfig:
    """Hyperparameters of LOMPO. Source: V-D4RL ``baselines/lompo/run.py`` ``define_config`` (a copy of
    rmrafailov/LOMPO with ``agent_train_steps`` 150,000), ``models.py`` and ``buffer.py``."""

    # ----------------------------------------------------------------------- data
    batch_size: int = 64
    """Sequences per model batch, also the start states of one imagination round
    (``model_batch_size: 64``)."""
    seq_len: int = 50
    """Entries per sequence (``model_batch_length: 50``); each window starts from the zero state."""

    # ----------------------------------------------------------------------- world model
    observation: str = "image"
    """What the world model encodes and reconstructs: ``image`` (the 64x64 frames, LOMPO's ReLU
    CNN encoder and decoder) or ``state`` (the dataset's stored low-dimensional ``state``
    vectors: DreamerV2's MLP encoder and decoder of ``state_layers`` x ``state_units`` ELU with a
    unit-variance Normal likelihood; evaluation feeds the policy the environment's
    ``info["state"]``). Not in LOMPO or V-D4RL: a cheap setting in which to test the algorithm
    (:mod:`lqv_d4rl.observations`)."""
    state_layers: int = 4
    """``observation="state"``: hidden layers of the MLP encoder and decoder (DreamerV2: 4)."""
    state_units: int = 400
    """``observation="state"``: width of the MLP encoder and decoder (DreamerV2: 400)."""
    depth: int = 32
    """CNN channel multiplier of the ReLU encoder and decoder (``cnn_depth: 32``,
    ``cnn_act: relu``)."""
    deter: int = 256
    """GRU state size (``deter_size: 256``); a standard GRU cell (Keras ``GRUCell``, no LayerNorm)."""
    stoch: int = 64
    """Gaussian latent size (``stoch_size: 64``); std = softplus(x) + 0.1."""
    hidden: int = 256
    """Width of the RSSM's input, posterior and prior-head layers (``RSSME(hidden=deter_size)``)."""
    ensemble: int = 7
    """Prior heads on the shared GRU (``num_models: 7``); one drawn per step for the whole batch."""
    units: int = 256
    """Width of every dense layer: reward head, Q networks and actor (``num_units: 256``, ELU)."""
    reward_layers: int = 2
    """Hidden layers of the reward head (``DenseDecoder((), 2, num_units)``)."""
    kl_scale: float = 1.0
    """Weight of the plain KL(posterior || prior), no free nats, no balancing (``kl_scale: 1.0``)."""
    model_lr: float = 6e-4
    """Adam learning rate of the world model (``model_lr: 6e-4``)."""
    eps: float = 1e-7
    """Adam epsilon of every optimizer (TF2 Keras Adam's default, which ``tools.Adam`` keeps)."""
    clip: float = 100.0
    """Global gradient-norm clip of every optimizer (``grad_clip: 100``)."""
    model_steps: int = 25_000
    """World-model updates (``model_train_steps: 25000``)."""

    # ----------------------------------------------------------------------- latent data
    horizon: int = 5
    """Imagined steps from every posterior state of a model batch (``horizon: 5``)."""
    rollout_noise: float = 0.2
    """Std of the Gaussian noise added to the actor's actions in imagination, then clipped to
    [-1, 1] (``expl: additive_gaussian``, ``expl_amount: 0.2``)."""
    penalty_lambda: float = 5.0
    """lambda of r - lambda * u, u the std over heads of log p_k(z_{t+1}) (``lmbd: 5.0``,
    ``penalty_type: log_prob``)."""
    start_training: int = 50_000
    """Imagined transitions generated before the agent's first update (``start_training: 50000``)."""
    data_every: int = 200
    """Agent updates between data rounds: one real episode re-encoded and one model batch of
    rollouts imagined (``agent_iters_per_step: 200``)."""
    buffer_capacity: int | None = None
    """Transitions each ring buffer (real, imagined) holds; ``None``: the dataset's number of
    transitions, as LOMPO sizes both (``LatentReplayBuffer(steps, steps, ...)``)."""
    real_terminals: bool = False
    """Store the dataset's ``is_terminal`` with real transitions. LOMPO stores 0 (its ``pcont`` is
    off); only car_racing has terminals."""

    # ----------------------------------------------------------------------- agent
    real_batch_size: int = 256
    """Real transitions per agent batch (``agent_batch_size: 256`` from the real buffer)."""
    imagined_batch_size: int = 256
    """Imagined transitions per agent batch (``agent_batch_size: 256`` from the latent buffer)."""
    gamma: float = 0.99
    """Discount of the critic target (``discount: 0.99``)."""
    actor_layers: int = 4
    """Hidden layers of the deterministic tanh actor (``ActorNetwork(actdim, 4, num_units)``)."""
    critic_layers: int = 3
    """Hidden layers of each Q network (``DenseNetwork(1, 3, num_units)``)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (``actor_lr: 3e-4``)."""
    critic_lr: float = 3e-4
    """Adam learning rate of both Q networks (``q_lr: 3e-4``)."""
    tau: float = 5e-3
    """Polyak rate of the target Q networks, updated after every agent update (``tau: 5e-3``,
    ``target_update_interval: 1``)."""
    policy_steps: int = 150_000
    """Agent updates (V-D4RL ``agent_train_steps: 150000``; the original LOMPO runs 100,000)."""

    # ----------------------------------------------------------------------- running
    precision: str = "float32"
    """Mixed precision on CUDA (LOMPO runs ``precision: 32``); the CPU always computes in float32."""
    log_every: int = 100
    """Updates between rows of the metrics log."""
    checkpoint_every: int = 5_000
    """Updates between checkpoints (``save_every: 5000``); also at the end of each phase. A
    checkpoint holds both buffers."""
    eval_episodes: int = 10
    """Evaluation episodes after training (V-D4RL plays one every ``data_every`` updates instead)."""
    eval_max_steps: int | None = None
    """Cap on agent steps per evaluation episode (``None``: the full 500; small for smoke tests)."""

    def __post_init__(self):
        check.positive_ints(self, "batch_size", "seq_len", "depth", "deter", "stoch", "hidden",
                            "ensemble", "units", "reward_layers", "horizon", "start_training",
                            "data_every", "real_batch_size", "imagined_batch_size",
                            "actor_layers", "critic_layers", "log_every", "checkpoint_every",
                            "eval_episodes")
        check.optional_positive_ints(self, "buffer_capacity", "eval_max_steps")
        check.counts(self, "model_steps", "policy_steps")
        check.choice(self, "precision", ("float32", "bfloat16", "float16"))
        check_observation_fields(self)
        check.positive(self, "model_lr", "actor_lr", "critic_lr", "eps", "clip")
        check.non_negative(self, "kl_scale", "rollout_noise", "penalty_lambda")
        check.unit_interval(self, "gamma", "tau")
        if self.ensemble < 2 and self.penalty_lambda != 0:
            raise ConfigError(f"the penalty needs at least 2 prior heads (ensemble="
                              f"{self.ensemble}); raise ensemble or set penalty_lambda=0")

    @property
    def transitions_per_round(self):
        """Imagined transitions one model batch gives: ``batch_size * seq_len * horizon``."""
        return self.batch_size * self.seq_len * self.horizon

    @property
    def prefill_rounds(self):
        """Imagination rounds before the agent trains: the fewest that reach ``start_training``."""
        return math.ceil(self.start_training / self.transitions_per_round)


PRESETS = {
    # V-D4RL's baselines/lompo defaults.
    "paper": {},
    # Tiny networks and few steps: a minute or two on a 2-core CPU; for tests and trying the pipeline.
    "smoke": {
        "batch_size": 8, "seq_len": 16, "depth": 8, "deter": 32, "stoch": 8, "hidden": 32,
        "ensemble": 3, "units": 64, "actor_layers": 2, "critic_layers": 2, "model_lr": 1e-3,
        "model_steps": 200, "start_training": 400, "data_every": 20, "real_batch_size": 64,
        "imagined_batch_size": 64, "policy_steps": 200, "log_every": 20, "checkpoint_every": 100,
        "eval_episodes": 2,
    },
}
"""Named configurations: field overrides on top of the defaults."""


# ---------------------------------------------------------------------------------------------
# World model
# ---------------------------------------------------------------------------------------------


class LOMPOWorldModel(nn.Module):
    """LOMPO's Dreamer-v1 world model with an ensemble prior, built from the core's parts.

    ``observe``, ``imagine``, ``reward`` and ``disagreement`` have the signatures of the other world
    models of the toolkit, so the uncertainty analysis treats them alike. With
    ``config.observation == "state"`` it models state vectors of size ``state_dim`` (MLP encoder
    and decoder, batch key ``state``).
    """

    def __init__(self, action_dim, config, device="cpu", seed=0, state_dim=None):
        super().__init__()
        cfg = self.config = config
        self.device = torch.device(device)
        self.observation_key = cfg.observation
        if cfg.observation == "state":
            if state_dim is None:
                raise ConfigError("observation='state' needs the size of the states (state_dim)")
            self.encoder = MLP(int(state_dim), None, cfg.state_layers, cfg.state_units)
        else:
            self.encoder = ConvEncoder(cfg.depth, activation=nn.ReLU)
        # cell="gru": LOMPO's Keras GRUCell (not DreamerV2's layer-norm cell with update bias -1)
        self.rssm = RSSM(self.encoder.output_dim, action_dim, cfg.deter, cfg.stoch, None,
                         cfg.hidden, cfg.ensemble, min_std=0.1, cell="gru", seed=seed)
        if cfg.observation == "state":
            self.decoder = MLP(self.rssm.feature_dim, int(state_dim), cfg.state_layers,
                               cfg.state_units)
        else:
            self.decoder = ConvDecoder(self.rssm.feature_dim, cfg.depth, activation=nn.ReLU)
        self.reward_head = DenseHead(self.rssm.feature_dim, (), "normal", cfg.reward_layers,
                                     cfg.units)
        self.to(self.device)
        self.optimizer = Optimizer("model", self, cfg.model_lr, cfg.eps, cfg.clip,
                                   precision=cfg.precision, device=self.device)

    def to_tensors(self, batch):
        """The batch keys the model needs (images or states, actions, rewards, first flags) as
        tensors on its device."""
        keys = STATE_BATCH_KEYS if self.observation_key == "state" else BATCH_KEYS
        return batch_to_tensors(batch, self.device, keys)

    def observe(self, batch, state=None):
        """Posterior and prior states ``(B, T, ...)`` of a sequence batch."""
        data = self.to_tensors(batch)
        return self.rssm.observe(self.encoder(data[self.observation_key]), data["action"],
                                 data["is_first"], state)

    def loss(self, batch):
        """KL(post || prior) - log p(o | s) - log p(r | s), batch and time means;
        returns ``(loss, posterior, metrics)``."""
        data = self.to_tensors(batch)
        observation = data[self.observation_key]
        post, prior = self.rssm.observe(self.encoder(observation), data["action"],
                                        data["is_first"])
        kl = latent_kl(post, prior).mean()
        features = self.rssm.features(post)
        if self.observation_key == "state":
            observation_ll = unit_normal(self.decoder(features), 1).log_prob(observation).mean()
        else:
            observation_ll = image_log_likelihood(self.decoder(features),
                                                  preprocess_image(observation)).mean()
        reward_ll = self.reward_head(features).log_prob(data["reward"]).mean()
        loss = self.config.kl_scale * kl - observation_ll - reward_ll
        return loss, post, {"kl": kl.detach(),
                            f"{self.observation_key}_log_prob": observation_ll.detach(),
                            "reward_log_prob": reward_ll.detach()}

    def train_step(self, batch):
        """One model update; returns ``(posterior (detached), metrics)``."""
        with autocast(self.device, self.config.precision):
            loss, post, metrics = self.loss(batch)
        metrics.update(self.optimizer.step(loss))
        return detach_states(post), metrics

    def imagine(self, policy, start, horizon, head=None):
        """Imagined rollout from ``start`` states, one random head per step (``RSSM.imagine``)."""
        return self.rssm.imagine(policy, start, horizon, head)

    def reward(self, imagination):
        """Predicted rewards ``(H, N)`` of the imagined transitions (the head's mean at states
        1..H)."""
        return self.reward_head(imagination.features[1:]).mean

    def disagreement(self, imagination):
        """LOMPO's penalty ``u`` ``(H, N)``: std over heads of log p_k(z_{t+1}) of the imagined
        latent."""
        return imagination_disagreement(self.rssm, imagination, "lompo")


# ---------------------------------------------------------------------------------------------
# Transition buffers
# ---------------------------------------------------------------------------------------------


class TransitionBuffer:
    """A ring buffer of latent transitions ``(features, action, next_features, reward,
    is_terminal)`` as tensors on a device; when full, new transitions overwrite the oldest (LOMPO's
    ``LatentReplayBuffer``)."""

    FIELDS = ("features", "action", "next_features", "reward", "is_terminal")

    def __init__(self, capacity, feature_dim, action_dim, device="cpu"):
        self.capacity = int(capacity)
        widths = {"features": feature_dim, "action": action_dim, "next_features": feature_dim,
                  "reward": 1, "is_terminal": 1}
        self.data = {name: torch.zeros(self.capacity, widths[name], device=device)
                     for name in self.FIELDS}
        self.position = 0
        self.size = 0
        self.added = 0

    def add(self, **transitions):
        """Append transitions given as tensors with a leading axis N (rewards and terminals ``(N,)``),
        in order; the last ``capacity`` of them survive a wrap-around."""
        count = len(transitions["features"])
        skip = max(0, count - self.capacity)  # written then overwritten within this call
        rows = (self.position + skip + torch.arange(count - skip)) % self.capacity
        rows = rows.to(self.data["reward"].device, non_blocking=True)
        for name in self.FIELDS:
            values = transitions[name][skip:].reshape(count - skip, -1)
            self.data[name][rows] = values.to(self.data[name].device, self.data[name].dtype)
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)
        self.added += count

    def sample(self, rng, count):
        """``count`` transitions drawn uniformly with replacement using the numpy Generator ``rng``."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty transition buffer")
        rows = torch.from_numpy(rng.integers(0, self.size, size=count))
        rows = rows.to(self.data["reward"].device, non_blocking=True)
        return {name: values[rows] for name, values in self.data.items()}

    def state_dict(self):
        """The stored rows and the ring position, for checkpoints."""
        return {"data": {name: values[:self.size].cpu() for name, values in self.data.items()},
                "position": self.position, "size": self.size, "added": self.added}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (same capacity and widths)."""
        self.size, self.position, self.added = (int(state[key])
                                                for key in ("size", "position", "added"))
        for name, values in self.data.items():
            values[:self.size] = state["data"][name].to(values.device)


# ---------------------------------------------------------------------------------------------
# Agent: deterministic actor, twin Q
# ---------------------------------------------------------------------------------------------


class TanhActor(nn.Module):
    """The deterministic actor: an ELU MLP whose output goes through tanh (``ActorNetwork``)."""

    def __init__(self, feature_dim, action_dim, layers, units):
        super().__init__()
        self.net = MLP(feature_dim, action_dim, layers, units)

    def forward(self, features):
        """Actions in [-1, 1] for features ``(..., F)``."""
        return torch.tanh(self.net(features))


class TwinQActorCritic(nn.Module):
    """LOMPO's agent: a deterministic actor trained to maximize min(Q1, Q2), and twin Q networks
    regressed on ``y = r + gamma (1 - d) min(Q1', Q2')(s', pi(s'))`` with Polyak target copies."""

    def __init__(self, feature_dim, action_dim, config, device="cpu"):
        super().__init__()
        cfg = self.config = config
        self.device = torch.device(device)
        self.actor = TanhActor(feature_dim, action_dim, cfg.actor_layers, cfg.units)
        self.q1 = MLP(feature_dim + action_dim, 1, cfg.critic_layers, cfg.units)
        self.q2 = MLP(feature_dim + action_dim, 1, cfg.critic_layers, cfg.units)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)
        self.to(self.device)
        self.actor_opt = Optimizer("actor", self.actor, cfg.actor_lr, cfg.eps, cfg.clip,
                                   precision=cfg.precision, device=self.device)
        self.critic_opt = Optimizer("critic", [*self.q1.parameters(), *self.q2.parameters()],
                                    cfg.critic_lr, cfg.eps, cfg.clip, precision=cfg.precision,
                                    device=self.device)

    @staticmethod
    def _q(network, features, action):
        return network(torch.cat([features, action], -1))

    def train_step(self, batch):
        """One critic and one actor update on a batch of transitions (``(N, ...)`` tensors, rewards
        and terminals ``(N, 1)``); both losses use the networks as they were before the update, as
        LOMPO's two gradient tapes do. Returns detached metric tensors."""
        with autocast(self.device, self.config.precision):
            with torch.no_grad():
                next_action = self.actor(batch["next_features"])
                target = torch.min(self._q(self.target_q1, batch["next_features"], next_action),
                                   self._q(self.target_q2, batch["next_features"], next_action))
                target = batch["reward"] + self.config.gamma * (1 - batch["is_terminal"]) * target
            q1 = self._q(self.q1, batch["features"], batch["action"]).float()
            q2 = self._q(self.q2, batch["features"], batch["action"]).float()
            critic_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
            action = self.actor(batch["features"])
            actor_loss = -torch.min(self._q(self.q1, batch["features"], action),
                                    self._q(self.q2, batch["features"], action)).float().mean()
        # the actor steps first: its loss reads the Q networks, which the critic step changes
        metrics = self.actor_opt.step(actor_loss)
        metrics.update(self.critic_opt.step(critic_loss))
        self._update_targets()
        metrics.update(q1=q1.mean().detach(), q2=q2.mean().detach(),
                       q_target=target.mean().detach())
        return metrics

    @torch.no_grad()
    def _update_targets(self):
        tau = self.config.tau
        for online, target in ((self.q1, self.target_q1), (self.q2, self.target_q2)):
            for source, copy_ in zip(online.parameters(), target.parameters()):
                copy_.mul_(1 - tau).add_(tau * source)


# ---------------------------------------------------------------------------------------------
# The LOMPO agent: model, buffers, agent, and the data rounds
# ---------------------------------------------------------------------------------------------


class LOMPOAgent:
    """World model, real and imagined transition buffers, twin-Q agent, and their checkpoint.

    Args:
        action_dim: size of the action vector.
        config: a :class:`LOMPOConfig`.
        capacity: transitions each buffer holds (the dataset's transitions, see ``buffer_capacity``).
        task: the benchmark task of the training data, or None.
        device: ``"cpu"``, ``"cuda"``, ...
        seed: seeds the ensemble-head draws and the buffer sampling (parameters come from the global
            torch RNG: seed it first, as :func:`train` does).
        state_dim: size of the dataset's state vectors, needed with ``observation="state"``.
    """

    def __init__(self, action_dim, config=None, *, capacity, task=None, device="cpu", seed=0,
                 state_dim=None):
        self.config = config or LOMPOConfig()
        self.action_dim = int(action_dim)
        self.capacity = int(capacity)
        self.task = task
        self.device = torch.device(device)
        self.seed = int(seed)
        self.state_dim = (int(state_dim) if self.config.observation == "state"
                          and state_dim is not None else None)
        self.world_model = LOMPOWorldModel(self.action_dim, self.config, self.device, self.seed,
                                           state_dim=self.state_dim)
        feature_dim = self.world_model.rssm.feature_dim
        self.behavior = TwinQActorCritic(feature_dim, self.action_dim, self.config, self.device)
        self.real = TransitionBuffer(self.capacity, feature_dim, self.action_dim, self.device)
        self.imagined = TransitionBuffer(self.capacity, feature_dim, self.action_dim, self.device)
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        self.model_updates = 0
        self.rounds = 0  # imagination rounds (model batches rolled out)
        self.episodes_encoded = 0  # real episodes encoded, counting re-encodings
        self.policy_updates = 0

    # ----------------------------------------------------------------------------- model

    def train_model_step(self, batch):
        """One world-model update on a sequence batch; returns detached scalar metric tensors."""
        self.world_model.train()
        _, metrics = self.world_model.train_step(batch)
        self.model_updates += 1
        return detached(metrics)

    # ----------------------------------------------------------------------------- real data

    @torch.no_grad()
    def encode_episodes(self, dataset, indices, chunk=8):
        """Filter episodes ``indices`` with the model and add their transitions, episode after
        episode in time order, to the real buffer: ``(f_t, a_{t+1}, f_{t+1}, r_{t+1}, d_{t+1})``
        for t = 0 .. length - 2 (entry t+1 holds the action that left o_t and its reward)."""
        self.world_model.eval()
        indices = [int(index) for index in indices]
        for start in range(0, len(indices), chunk):
            group = indices[start:start + chunk]
            lengths = {int(dataset.episode_lengths[index]) for index in group}
            if len(lengths) > 1:  # episodes of unequal length: one at a time
                for index in group:
                    self._encode_group(dataset, [index])
            else:
                self._encode_group(dataset, group)
        self.episodes_encoded += len(indices)

    def _encode_group(self, dataset, indices):
        keys = (self.world_model.observation_key, "action", "reward", "is_first", "is_terminal")
        episodes = [_episode_arrays(dataset, index, keys) for index in indices]
        batch = {key: np.stack([episode[key] for episode in episodes]) for key in keys}
        post, _ = self.world_model.observe(batch)
        features = self.world_model.rssm.features(post)
        data = {key: torch.as_tensor(batch[key], device=self.device).float()
                for key in ("action", "reward", "is_terminal")}
        terminal = data["is_terminal"][:, 1:] if self.config.real_terminals else torch.zeros_like(
            data["reward"][:, 1:])
        self.real.add(features=features[:, :-1].flatten(0, 1),
                      action=data["action"][:, 1:].flatten(0, 1),
                      next_features=features[:, 1:].flatten(0, 1),
                      reward=data["reward"][:, 1:].flatten(0, 1),
                      is_terminal=terminal.flatten(0, 1))

    def encode_next_episode(self, dataset):
        """Re-encode the next episode in dataset order (cycling), as LOMPO's episode iterator does."""
        self.encode_episodes(dataset, [self.episodes_encoded % len(dataset)])

    def ensure_real_buffer(self, dataset):
        """Encode every episode once, if that has not happened yet."""
        if self.episodes_encoded == 0:
            self.encode_episodes(dataset, range(len(dataset)))

    # ----------------------------------------------------------------------------- imagined data

    @torch.no_grad()
    def imagine_transitions(self, start):
        """Roll the noisy actor out ``horizon`` steps from ``start`` states; returns the transitions
        ``{features, action, next_features, reward, is_terminal}`` (``(H * N, ...)``, time-major)
        with the penalized reward, plus ``(model_reward, penalty)`` ``(H, N)``."""
        cfg = self.config
        actor = self.behavior.actor

        def noisy_policy(features):
            action = actor(features)
            return (action + cfg.rollout_noise * torch.randn_like(action)).clamp(-1, 1)

        imagination = self.world_model.imagine(noisy_policy, start, cfg.horizon)
        reward = self.world_model.reward(imagination).float()
        penalty = self.world_model.disagreement(imagination).float()
        transitions = {
            "features": imagination.features[:-1].flatten(0, 1),
            "action": imagination.actions.flatten(0, 1),
            "next_features": imagination.features[1:].flatten(0, 1),
            "reward": (reward - cfg.penalty_lambda * penalty).flatten(),
            "is_terminal": torch.zeros_like(reward).flatten(),
        }
        return transitions, reward, penalty

    def imagination_round(self, batch):
        """Imagine from every posterior state of a model batch into the imagined buffer; returns
        metric tensors."""
        self.world_model.eval()
        with torch.no_grad():
            post, _ = self.world_model.observe(batch)
        transitions, reward, penalty = self.imagine_transitions(flatten_states(post))
        self.imagined.add(**transitions)
        self.rounds += 1
        return {"model_reward": reward.mean(), "penalty": penalty.mean(),
                "penalized_reward": transitions["reward"].mean()}

    # ----------------------------------------------------------------------------- agent

    def agent_batch(self):
        """``real_batch_size`` real then ``imagined_batch_size`` imagined transitions, each half drawn
        uniformly from its buffer."""
        real = self.real.sample(self.rng, self.config.real_batch_size)
        imagined = self.imagined.sample(self.rng, self.config.imagined_batch_size)
        return {name: torch.cat([real[name], imagined[name]]) for name in TransitionBuffer.FIELDS}

    def train_policy_step(self):
        """One agent update on a mixed batch; returns detached metric tensors."""
        batch = self.agent_batch()
        metrics = self.behavior.train_step(batch)
        real = self.config.real_batch_size
        metrics.update(real_reward=batch["reward"][:real].mean(),
                       imagined_reward=batch["reward"][real:].mean())
        self.policy_updates += 1
        return detached(metrics)

    # ----------------------------------------------------------------------------- acting

    def policy(self):
        """A :class:`LatentPolicy` that plays the deterministic actor (no noise) on the posterior
        (of frames, or of state vectors with ``observation="state"``)."""
        model = self.world_model
        return LatentPolicy(model.encoder, model.rssm, self.behavior.actor, self.action_dim,
                            observation_key=model.observation_key, state_dim=self.state_dim)

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self):
        """Networks, optimizers, buffers, counters and random states: everything to continue."""
        model, behavior = self.world_model, self.behavior
        return {
            "version": CHECKPOINT_VERSION, "config": config_to_dict(self.config),
            "action_dim": self.action_dim, "capacity": self.capacity, "task": self.task,
            "seed": self.seed, "state_dim": self.state_dim,
            "world_model": model.state_dict(), "model_optimizer": model.optimizer.state_dict(),
            "behavior": behavior.state_dict(), "actor_optimizer": behavior.actor_opt.state_dict(),
            "critic_optimizer": behavior.critic_opt.state_dict(),
            "real": self.real.state_dict(), "imagined": self.imagined.state_dict(),
            "buffer_rng": json.dumps(self.rng.bit_generator.state),
            "head_generator": model.rssm.generator.get_state(),
            "counters": [self.model_updates, self.rounds, self.episodes_encoded,
                         self.policy_updates],
        }

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (same config, capacity and action size)."""
        model, behavior = self.world_model, self.behavior
        model.load_state_dict(state["world_model"])
        model.optimizer.load_state_dict(state["model_optimizer"])
        behavior.load_state_dict(state["behavior"])
        behavior.actor_opt.load_state_dict(state["actor_optimizer"])
        behavior.critic_opt.load_state_dict(state["critic_optimizer"])
        self.real.load_state_dict(state["real"])
        self.imagined.load_state_dict(state["imagined"])
        self.rng.bit_generator.state = json.loads(state["buffer_rng"])
        model.rssm.generator.set_state(state["head_generator"])
        (self.model_updates, self.rounds, self.episodes_encoded,
         self.policy_updates) = (int(value) for value in state["counters"])

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The agent of the run folder ``run_dir`` (its checkpoint, read with ``weights_only``)."""
        state = agent_state(run_dir, CHECKPOINT_VERSION)
        agent = cls(state["action_dim"], config_from_dict(LOMPOConfig, state["config"]),
                    capacity=state["capacity"], task=state["task"], device=device,
                    seed=state["seed"], state_dim=state.get("state_dim"))
        agent.load_state_dict(state)
        return agent


def _episode_arrays(dataset, index, keys):
    """``{key: array}`` of episode ``index`` for ``keys`` only (a state model reads no frame)."""
    start = int(dataset.episode_starts[index])
    rows = slice(start, start + int(dataset.episode_lengths[index]))
    return {key: dataset.steps[key][rows] for key in keys}


def buffer_capacity(dataset, config):
    """Transitions per buffer: ``config.buffer_capacity`` or the dataset's number of transitions;
    a clear error when ``start_training`` can never be reached."""
    capacity = config.buffer_capacity or int(dataset.num_steps - len(dataset))
    if config.start_training > capacity:
        raise ConfigError(f"start_training={config.start_training} imagined transitions do not fit "
                          f"in buffers of {capacity} (the dataset's transitions); lower "
                          "start_training or set buffer_capacity")
    return capacity


# ---------------------------------------------------------------------------------------------
# Training in a run folder
# ---------------------------------------------------------------------------------------------


def train(dataset, config, run, device="cpu"):
    """Train (or finish training) LOMPO on ``dataset`` in the run folder ``run``; returns the agent.
    ``ALGORITHM.train``: the run gives the seed, the metrics log and the checkpoint."""
    capacity = buffer_capacity(dataset, config)
    state_dim = state_size(dataset, config.observation)  # fails clearly without states
    torch.manual_seed(run.seed)
    agent = LOMPOAgent(dataset.action_dim, config, capacity=capacity, task=dataset.task,
                       device=device, seed=run.seed, state_dim=state_dim)
    batches = RunBatches(dataset, config, run.seed, device, uses=("model", "rounds"),
                         keys=sequence_keys(config.observation))
    state = run.load_checkpoint()
    if state is not None:
        restore(state, agent, batches)
        run.truncate_metrics(*(("policy", agent.policy_updates) if agent.policy_updates else
                               ("imagine", agent.rounds) if agent.rounds else
                               ("model", agent.model_updates)))

    def save():
        run.save_checkpoint(checkpoint_state(agent, batches))

    def imagine_update():
        agent.ensure_real_buffer(dataset)
        return agent.imagination_round(batches.next("rounds"))

    def policy_update():
        metrics = agent.train_policy_step()
        updates = agent.policy_updates
        if updates % config.data_every == 0 and updates < config.policy_steps:
            agent.encode_next_episode(dataset)
            agent.imagination_round(batches.next("rounds"))
        return metrics

    common = dict(checkpoint=save, log_every=config.log_every,
                  checkpoint_every=config.checkpoint_every)
    try:
        done = run.phase("model", total=config.model_steps, done=lambda: agent.model_updates,
                         update=lambda: agent.train_model_step(batches.next("model")),
                         description="world model",
                         postfix=("model_loss", f"{config.observation}_log_prob"), **common)
        done = done and run.phase("imagine", total=config.prefill_rounds, done=lambda: agent.rounds,
                                  update=imagine_update, description="imagined data",
                                  postfix=("penalty",), **{**common, "log_every": 1})
        if done:
            run.phase("policy", total=config.policy_steps, done=lambda: agent.policy_updates,
                      update=policy_update, description="agent", postfix=("q1", "actor_loss"),
                      **common)
    finally:
        batches.close()
    return agent


def load(run_dir, device="cpu"):
    """The acting policy of the LOMPO run in ``run_dir``."""
    return LOMPOAgent.load(run_dir, device=device).policy()


ALGORITHM = Algorithm(
    name="lompo",
    config_class=LOMPOConfig,
    presets=PRESETS,
    train=train,
    load=load,
    analyse=analyse,
    summary="LOMPO (Rafailov et al. 2021, as in V-D4RL): Gaussian ensemble latent model, twin-Q "
            "deterministic actor on real + imagined latent transitions penalized by the heads' "
            "log-likelihood spread.",
    resumable_fields=RESUMABLE_FIELDS,
)
