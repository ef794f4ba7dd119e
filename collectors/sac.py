"""Soft Actor-Critic on low-dimensional states: the behaviour-policy learner of the CPU recipe.

V-D4RL (Lu et al., TMLR 2023) made its behaviour policies with SAC trained on the proprioceptive
states of dm_control (github.com/philipjball/SAC_PyTorch, branch ``dmc_branch``, which its README
names); :class:`SACConfig` defaults are that code's values. Read for facts, written anew:

* actor: MLP (3 x 256, ReLU) -> mean and log std (clamped to [-20, 2]) of a Gaussian squashed by
  tanh; evaluation acts with tanh(mean);
* critic: two Q networks (3 x 256, ReLU) on [state, action], a Polyak-averaged target copy
  (tau 0.005, after every update), the target ``r + gamma (1 - done) (min Q' - alpha log pi)``;
* temperature: ``alpha = exp(log_alpha)``, log_alpha starts at 0, learned towards the target entropy
  ``-action_dim``;
* Adam with learning rate 1e-4 for all three (``train_agent.py --learning_rate`` default), batch
  256, gamma 0.99.

The two critics are one ensemble network (batched matrix products), which gives exactly the
arithmetic of two separate networks with fewer, larger operations (``benchmarks/bench_sac.py``
measures it against a plain two-network implementation).

Randomness: initialization is seeded by ``seed``; updates draw from their own ``torch.Generator``
and numpy Generator (batch indices), acting from a generator the caller passes, so the same seed
gives the same run on CPU and the global RNGs are untouched.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

CHECKPOINT_FORMAT = "lqv-d4rl-sac"
CHECKPOINT_VERSION = 1


@dataclass
class SACConfig:
    """Settings of :class:`SACAgent` and its training schedule (defaults: V-D4RL's SAC code,
    ``SAC_PyTorch`` ``dmc_branch``: ``sac.py`` and ``train_agent.py``). Step counts are
    environment steps (agent steps x action repeat 2), as in the TIA config."""

    units: int = 256
    """Hidden width of actor and critics (``hidden_size=256``)."""
    actor_layers: int = 3
    """Hidden layers of the actor (``MLPNetwork``: three ReLU layers)."""
    critic_layers: int = 3
    """Hidden layers of each critic."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (``--learning_rate 0.0001``)."""
    critic_lr: float = 1e-4
    """Adam learning rate of the critics (same flag)."""
    alpha_lr: float = 1e-4
    """Adam learning rate of log alpha (same flag)."""
    eps: float = 1e-8
    """Adam epsilon (PyTorch's default, which the code uses)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics, applied after every update."""
    batch_size: int = 256
    """Transitions per update."""
    init_alpha: float = 1.0
    """Initial temperature (log_alpha starts at 0)."""
    target_entropy: float | None = None
    """Target entropy of the temperature loss; None: -action_dim."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log std."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log std."""
    random_steps: int = 10_000
    """Environment steps of uniformly random actions at the start (``n_random_actions``, which
    counts environment samples)."""
    learning_starts: int = 2_000
    """Environment steps before the first update (``n_collect_steps`` = 1000 agent steps)."""
    updates_per_step: float = 1.0
    """Updates per agent step collected (``update_every_n_steps=1``: one per agent step). Here
    they run between episodes, so each episode is played by one fixed snapshot (the released code
    updates inside the episode)."""
    eval_every: int = 20_000
    """Environment steps between evaluations (``log_interval`` = 10000 agent steps)."""
    eval_episodes: int = 1
    """Episodes per evaluation, acting with tanh(mean) (``n_evals=1``)."""
    total_steps: int = 1_000_000
    """Budget of a training run in environment steps."""

    @classmethod
    def cpu(cls, task=None):
        """The ``cpu`` preset of ``generate --behaviour sac-state`` (for ``task``: with its
        :data:`CPU_TASK_SETTINGS`). Departures from V-D4RL's values, chosen so that a 2-core
        machine makes the paper's levels in one to two hours per task: learning rates 3e-4 (the SAC
        paper's, and the default of the same code's ``SAC_Agent``) instead of 1e-4; initial
        temperature 0.3 instead of 1 (V-D4RL's 1 keeps the training episodes near-random for the
        first ~15,000 updates, so most of the replay until the band is random-like; 0.1 learns so
        fast that the replay holds too few low-return episodes; measured on walker_walk,
        DATASETS.md); 0.06 updates per agent step instead of one (learning follows the number of
        updates: walker_walk reaches the medium band after ~15,000, so the run lasts the paper's
        400 episodes or more until the band); evaluations over 10 episodes every 5000
        environment steps (the band is not jumped over, and the random level has early
        snapshots to choose from); a budget of 3M environment steps (the run stops earlier, at
        the medium snapshot)."""
        settings = dict(actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, init_alpha=0.3,
                        updates_per_step=0.06, eval_every=5_000, eval_episodes=10,
                        total_steps=3_000_000)
        return cls(**{**settings, **CPU_TASK_SETTINGS.get(task, {})})

    @classmethod
    def smoke(cls):
        """Tiny networks and schedule for tests and pipeline checks."""
        return cls(units=32, batch_size=16, random_steps=200, learning_starts=100,
                   eval_every=200, eval_episodes=1, total_steps=1000)


CPU_TASK_SETTINGS = {
    # SAC on cheetah_run's states learns slowly at temperature 0.3 and 0.1 updates per step
    # (mean evaluation return 60 after 14,000 updates, 290 episodes: most of the replay until the
    # band would be near-random). At temperature 0.1 it reaches the band after ~24,000 updates
    # (0.12 updates per step: 395 episodes, short of the paper's 400); 0.1 spreads that over
    # ~480 episodes.
    "cheetah_run": {"init_alpha": 0.1, "updates_per_step": 0.1},
    # car_racing on its 28 track features (lqv_d4rl.car_racing) reaches the band after about the
    # same number of updates at any rate (14,750 at 0.25 updates per step, ~120 episodes; 12,125
    # at 0.0625, ~390 episodes, both at temperature 0.1): 0.05 gives ~480 episodes, thinned to 400.
    "car_racing": {"init_alpha": 0.1, "updates_per_step": 0.05},
    # hopper_hop's reward stays 0 until the hopper hops: at 0.06 updates per step its evaluation
    # return was still 0 after 13,500 updates and 450 episodes. Learning follows the updates, so
    # more of them per step reach the band within the 3M-step budget (the replay until then is
    # mostly zero-return episodes, as the paper's medrep: median 0, p75 3.7).
    "hopper_hop": {"updates_per_step": 0.25},
    # humanoid_walk's band is far more updates away than the 400 medrep episodes need: at 0.06
    # updates per step its evaluation return stayed at the random level (0.7..2.5) for 1.04M
    # environment steps and 31,000 updates (docs/datasets/humanoid_walk-utd0.06), and the 3M-step
    # budget would end at 90,000 updates. Per update, one per agent step is the cheapest on these
    # machines (benchmarks/bench_humanoid.py: 0.082 s of updates and playing per update, 0.17 s
    # at 0.06, where playing the physics takes over half the time), and it is V-D4RL's own value.
    "humanoid_walk": {"updates_per_step": 1.0},
}
"""Per-task departures from :meth:`SACConfig.cpu`'s shared values (measured, DATASETS.md)."""


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers applied at once: (M, B, in) -> (M, B, out).

    Each member is initialized like ``nn.Linear`` (uniform in +-1/sqrt(in) for weight and bias).
    """

    def __init__(self, members, in_features, out_features):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features)
                                   .uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x):
        """Apply member m to x[m]."""
        return torch.baddbmm(self.bias, x, self.weight)


def _mlp(in_features, out_features, units, layers, members=None):
    """ReLU MLP with ``layers`` hidden layers (an ensemble of ``members`` when given)."""
    def linear(a, b):
        return nn.Linear(a, b) if members is None else EnsembleLinear(members, a, b)

    sizes = [in_features] + [units] * layers
    modules = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        modules += [linear(a, b), nn.ReLU()]
    modules.append(linear(sizes[-1], out_features))
    return nn.Sequential(*modules)


class TanhGaussianActor(nn.Module):
    """MLP -> (mean, log std) of a Gaussian, squashed by tanh into [-1, 1]^A."""

    def __init__(self, state_dim, action_dim, config):
        super().__init__()
        self.net = _mlp(state_dim, 2 * action_dim, config.units, config.actor_layers)
        self.log_std_min, self.log_std_max = config.log_std_min, config.log_std_max

    def forward(self, state, noise):
        """Sampled actions and their log probabilities for standard-normal ``noise``.

        ``log pi(a) = log N(u; mean, std) - sum log(1 - tanh(u)^2)`` with ``u = mean + std noise``;
        ``log(1 - tanh(u)^2)`` is computed as ``2 (log 2 - u - softplus(-2u))`` (stable).
        """
        mean, log_std = self.net(state).chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        pre_tanh = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh
                                    - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), log_prob

    def mode(self, state):
        """tanh(mean): the deterministic action."""
        return torch.tanh(self.net(state).chunk(2, dim=-1)[0])


class TwinCritic(nn.Module):
    """Two Q networks evaluated as one ensemble: (B, S), (B, A) -> (2, B)."""

    def __init__(self, state_dim, action_dim, config):
        super().__init__()
        self.net = _mlp(state_dim + action_dim, 1, config.units, config.critic_layers,
                        members=2)

    def forward(self, state, action):
        """Q1 and Q2 of each (state, action) pair, stacked."""
        x = torch.cat([state, action], dim=-1)
        return self.net(x.unsqueeze(0).expand(2, *x.shape)).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Agent
# ----------------------------------------------------------------------------------------------


class SACAgent:
    """A SAC learner: ``act`` for behaviour, ``update`` on a batch, ``save``/``load``.

    Args:
        config: a :class:`SACConfig`.
        state_dim, action_dim: sizes of the state and action vectors.
        seed: seeds the initialization and the update generator.
    """

    def __init__(self, config, state_dim, action_dim, *, seed=0):
        self.config = config
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.seed = int(seed)
        with torch.random.fork_rng(devices=[]):  # nn init draws from the global RNG
            torch.manual_seed(self.seed)
            self.actor = TanhGaussianActor(self.state_dim, self.action_dim, config)
            self.critic = TwinCritic(self.state_dim, self.action_dim, config)
        self.target_critic = TwinCritic(self.state_dim, self.action_dim, config)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(config.init_alpha), requires_grad=True)
        self.target_entropy = (float(-self.action_dim) if config.target_entropy is None
                               else float(config.target_entropy))
        adam = dict(eps=config.eps, foreach=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, **adam)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr,
                                                 **adam)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr, **adam)
        self.update_generator = torch.Generator().manual_seed(self.seed + 1)
        self.updates = 0

    @property
    def alpha(self):
        """The current temperature."""
        return float(self.log_alpha.detach().exp())

    @torch.inference_mode()
    def act(self, state, *, deterministic=False, generator=None):
        """One action (A,) float32 in [-1, 1] for one state: tanh(mean) when ``deterministic``,
        else a sample (noise from ``generator``)."""
        state = torch.as_tensor(np.asarray(state, np.float32)).unsqueeze(0)
        if deterministic:
            action = self.actor.mode(state)
        else:
            noise = torch.randn((1, self.action_dim), generator=generator)
            action, _ = self.actor(state, noise)
        return action[0].numpy().astype(np.float32)

    def update(self, batch):
        """One SAC update on ``batch`` (tensors ``state``, ``action``, ``reward``,
        ``next_state``, ``done``); returns the losses and alpha as floats."""
        critic_loss = self._critic_step(batch)
        actor_loss, alpha_loss = self._actor_and_alpha_step(batch["state"])
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_critic.parameters()),
                                 list(self.critic.parameters()), self.config.tau)
        self.updates += 1
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss,
                "alpha": self.alpha}

    def critic_loss(self, batch):
        """Sum over both critics of the mean squared TD error against the soft target."""
        with torch.no_grad():
            noise = self._noise(len(batch["next_state"]))
            next_action, next_log_prob = self.actor(batch["next_state"], noise)
            next_q = self.target_critic(batch["next_state"], next_action).min(0).values
            alpha = self.log_alpha.exp()
            target = batch["reward"] + self.config.gamma * (1.0 - batch["done"]) * (
                next_q - alpha * next_log_prob)
        q = self.critic(batch["state"], batch["action"])
        return (q - target).pow(2).mean(-1).sum()

    def actor_and_alpha_losses(self, state):
        """The actor loss ``mean(alpha log pi - min Q)`` and the temperature loss
        ``-mean(alpha (log pi + target_entropy))`` (alpha held fixed in the first, log pi in the
        second)."""
        action, log_prob = self.actor(state, self._noise(len(state)))
        q = self.critic(state, action).min(0).values
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * log_prob - q).mean()
        alpha_loss = -(alpha * (log_prob.detach() + self.target_entropy)).mean()
        return actor_loss, alpha_loss

    def _critic_step(self, batch):
        loss = self.critic_loss(batch)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return float(loss.detach())

    def _actor_and_alpha_step(self, state):
        self.critic.requires_grad_(False)  # the actor loss must not move the critics
        try:
            actor_loss, alpha_loss = self.actor_and_alpha_losses(state)
        finally:
            self.critic.requires_grad_(True)
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        (actor_loss + alpha_loss).backward()  # disjoint parameters: each gets its own gradient
        self.actor_optimizer.step()
        self.alpha_optimizer.step()
        return float(actor_loss.detach()), float(alpha_loss.detach())

    def _noise(self, batch_size):
        return torch.randn((batch_size, self.action_dim), generator=self.update_generator)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self):
        """Everything needed to continue identically (networks, optimizers, generator)."""
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": dataclasses.asdict(self.config), "state_dim": self.state_dim,
                "action_dim": self.action_dim, "seed": self.seed, "updates": self.updates,
                "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "target_critic": self.target_critic.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "alpha_optimizer": self.alpha_optimizer.state_dict(),
                "update_generator": self.update_generator.get_state()}

    def save(self, path):
        """Write :meth:`state_dict` to ``path`` atomically."""
        _save_atomically(self.state_dict(), path)

    @classmethod
    def load(cls, path):
        """An agent continuing exactly from a :meth:`save` file."""
        state = _load_checked(path)
        agent = cls(SACConfig(**state["config"]), state["state_dim"], state["action_dim"],
                    seed=state["seed"])
        for name in ("actor", "critic", "target_critic", "actor_optimizer", "critic_optimizer",
                     "alpha_optimizer"):
            getattr(agent, name).load_state_dict(state[name])
        with torch.no_grad():
            agent.log_alpha.copy_(state["log_alpha"])
        agent.update_generator.set_state(state["update_generator"])
        agent.updates = state["updates"]
        return agent

    def save_actor(self, path):
        """Write only the actor (a behaviour snapshot) to ``path`` atomically."""
        _save_atomically({"format": CHECKPOINT_FORMAT + "-actor", "version": CHECKPOINT_VERSION,
                          "config": dataclasses.asdict(self.config), "state_dim": self.state_dim,
                          "action_dim": self.action_dim, "actor": self.actor.state_dict()}, path)


class SACPolicy:
    """A behaviour snapshot: an actor that acts, loaded with :meth:`load` (from
    :meth:`SACAgent.save_actor`) or taken from an agent with :meth:`of`."""

    def __init__(self, actor, action_dim):
        self.actor, self.action_dim = actor, int(action_dim)

    @classmethod
    def of(cls, agent):
        """The agent's current actor (shared, not copied)."""
        return cls(agent.actor, agent.action_dim)

    @classmethod
    def load(cls, path):
        """A snapshot saved by :meth:`SACAgent.save_actor`."""
        state = _load_checked(path, suffix="-actor")
        actor = TanhGaussianActor(state["state_dim"], state["action_dim"],
                                  SACConfig(**state["config"]))
        actor.load_state_dict(state["actor"])
        return cls(actor, state["action_dim"])

    act = SACAgent.act


def _save_atomically(obj, path):
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _load_checked(path, suffix=""):
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT + suffix or \
            state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not an lqv-d4rl SAC {'snapshot' if suffix else 'checkpoint'} "
                         f"(format {state.get('format')!r}, version {state.get('version')!r})")
    return state


# ----------------------------------------------------------------------------------------------
# Replay of transitions
# ----------------------------------------------------------------------------------------------


class TransitionReplay:
    """Transitions (s, a, r, s', done) of whole episodes in preallocated tensors, sampled
    uniformly with a numpy Generator (``rng``, saved with checkpoints by the caller)."""

    def __init__(self, state_dim, action_dim, capacity, *, seed=0):
        self.capacity = int(capacity)
        self.size = 0
        self.rng = np.random.default_rng(seed)
        self._data = {"state": torch.zeros(self.capacity, state_dim),
                      "action": torch.zeros(self.capacity, action_dim),
                      "reward": torch.zeros(self.capacity),
                      "next_state": torch.zeros(self.capacity, state_dim),
                      "done": torch.zeros(self.capacity)}

    def __len__(self):
        return self.size

    def add_episode(self, steps):
        """Add the transitions of one episode given in the entry convention (``state``,
        ``action``, ``reward``, ``discount`` of L entries -> L - 1 transitions; a transition is
        done when its discount is 0, so a time-limit cut is not)."""
        count = len(steps["reward"]) - 1
        if self.size + count > self.capacity:
            raise ValueError(f"the replay holds at most {self.capacity} transitions")
        rows = slice(self.size, self.size + count)
        state = torch.as_tensor(np.asarray(steps["state"], np.float32))
        self._data["state"][rows] = state[:-1]
        self._data["next_state"][rows] = state[1:]
        self._data["action"][rows] = torch.as_tensor(np.asarray(steps["action"][1:], np.float32))
        self._data["reward"][rows] = torch.as_tensor(np.asarray(steps["reward"][1:], np.float32))
        self._data["done"][rows] = torch.as_tensor(
            (np.asarray(steps["discount"][1:]) == 0).astype(np.float32))
        self.size += count

    def sample(self, batch_size):
        """A dict of ``batch_size`` transitions drawn uniformly (with replacement)."""
        rows = torch.from_numpy(self.rng.integers(0, self.size, batch_size))
        return {key: value.index_select(0, rows) for key, value in self._data.items()}
