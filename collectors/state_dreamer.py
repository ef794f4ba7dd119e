"""DreamerV2 on low-dimensional states: the learning check of the shared world-model core.

TIA, SeMOPO, Offline DV2 and LOMPO all stand on :mod:`lqv_d4rl.networks` (RSSM, WorldModel,
ActorCritic, Optimizer, losses). Pixels make that core slow to train on a CPU, so this module trains
it online on a dm_control task's *state* observations (joint angles, velocities, ...: no rendering),
with the MLP encoder and decoder of ``WorldModelConfig(state_dim=...)``. Everything else is the
shared core unchanged: categorical RSSM with KL balancing, reward head, imagination actor-critic
with dynamics backpropagation and a slow critic. ``benchmarks/learning.py`` runs it and checks the
return it reaches.

Pieces, in the order a run uses them:

* :class:`StateEnv` – a dm_control task with flattened state vectors and an action repeat;
* :class:`StateReplay` – finished episodes, sampled as windows that never cross an episode;
* :class:`StateDreamer` – world model + actor-critic: ``act``, ``update``;
* :func:`train_state_dreamer` – the online loop (prefill, train every few steps, evaluate) that
  returns a :class:`LearningCurve`.

Defaults of :class:`StateDreamerConfig` are DreamerV2's for DMC (``configs.yaml``: ``dmc_vision``
with the proprioceptive encoder and decoder), with smaller networks so that 2 CPU cores manage
several thousand updates in 20 minutes; each field says where it departs.
"""

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lqv_d4rl.networks import (
    ActorCritic,
    BehaviorConfig,
    WorldModel,
    WorldModelConfig,
    detach_states,
    flatten_states,
)
from lqv_d4rl.states import flatten_observation


@dataclass
class StateDreamerConfig:
    """Settings of a state-based DreamerV2 run (counts are agent steps unless said otherwise)."""

    task: str = "walker_walk"
    """dm_control ``<domain>_<task>``, e.g. ``walker_walk`` or ``cartpole_swingup``."""
    action_repeat: int = 2
    """Environment steps per agent step (DreamerV2 on DMC: 2)."""

    # --- world model
    deter: int = 200
    """GRU state size (DreamerV2: 200)."""
    stoch: int = 32
    """Categorical latent groups (DreamerV2: 32)."""
    classes: int = 32
    """Classes per group (DreamerV2: 32)."""
    hidden: int = 200
    """RSSM hidden width (DreamerV2: 200)."""
    units: int = 256
    """Width of the MLP encoder, decoder and heads (DreamerV2: 400; smaller for CPU speed)."""
    state_layers: int = 3
    """Hidden layers of the MLP encoder and decoder (DreamerV2: 4)."""
    reward_layers: int = 3
    """Hidden layers of the reward head (DreamerV2: 4)."""
    kl_balance: float = 0.8
    """KL balancing weight of the prior side (DreamerV2)."""
    free_nats: float = 1.0
    """Free nats of the averaged KL (DreamerV2)."""
    model_lr: float = 3e-4
    """World-model Adam learning rate (DreamerV2 dmc: 3e-4)."""

    # --- behaviour
    horizon: int = 15
    """Imagination horizon (DreamerV2)."""
    gamma: float = 0.99
    """Discount (DreamerV2)."""
    lambda_: float = 0.95
    """TD(lambda) parameter (DreamerV2)."""
    actor_layers: int = 3
    """Hidden layers of the actor (DreamerV2: 4)."""
    critic_layers: int = 3
    """Hidden layers of the critic (DreamerV2: 4)."""
    actor_dist: str = "trunc_normal"
    """Action distribution (DreamerV2 on continuous control: truncated Normal)."""
    actor_entropy: float = 1e-4
    """Actor entropy bonus (DreamerV2 dmc: 1e-4)."""
    actor_lr: float = 8e-5
    """Actor Adam learning rate (DreamerV2: 8e-5)."""
    critic_lr: float = 8e-5
    """Critic Adam learning rate (DreamerV2: 8e-5)."""
    eps: float = 1e-5
    """Adam epsilon (DreamerV2)."""
    clip: float = 100.0
    """Gradient-norm clip of every optimizer (DreamerV2)."""
    slow_critic_every: int = 100
    """Updates between slow-critic copies (DreamerV2)."""
    imagine_starts: int | None = 256
    """Start states of imagination, drawn at random from the batch's posteriors (``None``: all
    ``batch_size * seq_len`` of them, as DreamerV2). Imagination costs most of an update on a CPU."""

    # --- schedule
    batch_size: int = 16
    """Sequences per batch (DreamerV2: 16)."""
    seq_len: int = 50
    """Steps per sequence (DreamerV2: 50)."""
    prefill_steps: int = 2500
    """Agent steps of uniform random actions before training (5 walker episodes)."""
    pretrain_steps: int = 100
    """Updates right after the prefill (DreamerV2: 100)."""
    train_every: int = 5
    """Agent steps between updates (DreamerV2: 5)."""
    total_steps: int = 100_000
    """Agent-step budget of the run."""
    cpu_budget_s: float = 2400.0
    """CPU-time budget of the run in seconds (this process; collection, updates and evaluation
    together): 2400 = 20 minutes of 2 cores. CPU time, unlike wall time, does not grow when other
    work shares the machine."""
    eval_every: int = 5000
    """Agent steps between evaluations."""
    target_return: float | None = None
    """End the run at the first evaluation whose mean return reaches this (``None``: run the
    whole budget)."""
    eval_episodes: int = 2
    """Episodes per evaluation, acting with the actor's mode."""
    max_episode_steps: int = 500
    """Agent steps per episode (1000 environment steps / action repeat 2)."""
    threads: int = 1
    """torch CPU threads (1 wastes no CPU time spinning when the machine is shared)."""

    def behavior_config(self):
        """The :class:`lqv_d4rl.networks.BehaviorConfig` of this run."""
        return BehaviorConfig.from_config(self)

    def world_model_config(self, state_dim, seed):
        """The :class:`lqv_d4rl.networks.WorldModelConfig` for states of size ``state_dim``."""
        return WorldModelConfig(
            state_dim=state_dim, state_layers=self.state_layers, deter=self.deter,
            stoch=self.stoch, classes=self.classes, hidden=self.hidden, units=self.units,
            reward_layers=self.reward_layers, kl_balance=self.kl_balance,
            free_nats=self.free_nats, lr=self.model_lr, eps=self.eps, clip=self.clip, seed=seed,
        )


class StateEnv:
    """A dm_control task with flattened float32 state observations and an action repeat.

    The state vector is the one datasets store under ``state`` (:mod:`lqv_d4rl.states`); unlike
    :class:`lqv_d4rl.physics.StateSimulator` it takes any dm_control task (e.g. cartpole).

    ``reset() -> state``; ``step(action) -> (state, reward, done)`` where ``reward`` sums the
    repeated steps and ``done`` is True when the dm_control episode ended.
    """

    def __init__(self, task, *, seed, action_repeat=2):
        from dm_control import suite

        domain, _, name = task.partition("_")
        self.env = suite.load(domain, name, task_kwargs={"random": int(seed)})
        self.action_repeat = int(action_repeat)
        self.action_dim = int(self.env.action_spec().shape[0])
        self.state_dim = int(sum(max(1, int(np.prod(spec.shape)))
                                 for spec in self.env.observation_spec().values()))

    def reset(self):
        """Start an episode; return its first state vector."""
        return flatten_observation(self.env.reset().observation)

    def step(self, action):
        """Apply ``action`` (in [-1, 1]) ``action_repeat`` times; return ``(state, reward, done)``."""
        reward = 0.0
        for _ in range(self.action_repeat):
            time_step = self.env.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        return flatten_observation(time_step.observation), reward, time_step.last()


class StateReplay:
    """Finished episodes of state vectors, sampled as windows inside one episode.

    An episode is a dict of arrays with one entry per step plus the reset entry (the dataset's
    entry convention): ``state (L, D)``, ``action (L, A)`` (zero at entry 0), ``reward (L,)``
    (zero at entry 0), ``is_first (L,)``.
    """

    def __init__(self, seed=0):
        self.episodes = []
        self.rng = np.random.default_rng(seed)

    def add(self, episode):
        """Append one finished episode."""
        self.episodes.append(episode)

    @property
    def num_steps(self):
        """Entries stored (all episodes)."""
        return sum(len(episode["reward"]) for episode in self.episodes)

    def sample(self, batch_size, seq_len):
        """``batch_size`` windows of ``seq_len`` entries, uniform over all valid windows."""
        windows = np.array([max(0, len(e["reward"]) - seq_len + 1) for e in self.episodes])
        if windows.sum() == 0:
            raise ValueError(f"no stored episode has {seq_len} entries yet")
        choices = self.rng.choice(len(self.episodes), batch_size, p=windows / windows.sum())
        starts = [self.rng.integers(windows[index]) for index in choices]
        return {key: np.stack([self.episodes[i][key][s:s + seq_len] for i, s in zip(choices, starts)])
                for key in ("state", "action", "reward", "is_first")}


class StateDreamer:
    """World model and actor-critic of the shared core, on state vectors.

    Args:
        config: a :class:`StateDreamerConfig`.
        state_dim, action_dim: observation and action sizes.
        seed: seeds the network initialization (through the global torch RNG, which the caller
            seeds; see :func:`train_state_dreamer`).
    """

    def __init__(self, config, state_dim, action_dim, seed=0):
        self.config = config
        self.action_dim = action_dim
        self.world_model = WorldModel(action_dim, config.world_model_config(state_dim, seed))
        self.behavior = ActorCritic(self.world_model.rssm.feature_dim, action_dim,
                                    config.behavior_config())

    def initial_state(self):
        """Acting state of one environment: latent state and previous action."""
        return self.world_model.rssm.initial(1), torch.zeros(1, self.action_dim)

    @torch.no_grad()
    def act(self, observation, state, is_first, explore):
        """The action for one state vector; ``explore`` samples the actor, else takes its mode."""
        latent, previous_action = state
        embed = self.world_model.encoder(torch.as_tensor(observation)[None])
        latent, _ = self.world_model.rssm.obs_step(latent, previous_action, embed,
                                                   torch.tensor([bool(is_first)]))
        action = self.behavior.policy(self.world_model.rssm.features(latent), sample=explore)
        return action[0].numpy(), (latent, action)

    def update(self, batch):
        """One world-model and one actor-critic update; returns every metric as a float."""
        post, metrics = self.world_model.train_step(batch)
        metrics.update(self.behavior.train_step(self.start_states(post), self.world_model.imagine,
                                                self.world_model.reward))
        return {name: float(value) for name, value in metrics.items()}

    def start_states(self, post):
        """``imagine_starts`` posterior states of the batch drawn at random (all if ``None``)."""
        start = flatten_states(detach_states(post))
        count = self.config.imagine_starts
        if count is None or count >= start["deter"].shape[0]:
            return start
        chosen = torch.randperm(start["deter"].shape[0])[:count]
        return {key: value[chosen] for key, value in start.items()}


@dataclass
class LearningCurve:
    """What a learning run measured."""

    config: dict
    """The run's :class:`StateDreamerConfig` as a dict."""
    evaluations: list = field(default_factory=list)
    """One dict per evaluation: ``agent_steps``, ``env_steps``, ``updates``, ``wall_s``, ``cpu_s``,
    ``returns`` (list) and ``mean_return``."""
    train_returns: list = field(default_factory=list)
    """``(env_steps, return)`` of every training episode."""
    metrics: list = field(default_factory=list)
    """Per evaluation interval: the mean of every update metric, with ``env_steps``."""
    seconds_per_update: float = math.nan
    """Mean wall-clock seconds of one update (world model + actor-critic)."""
    cpu_seconds_per_update: float = math.nan
    """Mean CPU seconds (this process) of one update."""
    random_return: float = math.nan
    """Mean return of the uniform random prefill episodes."""

    @property
    def best_return(self):
        """Highest mean evaluation return (NaN before the first evaluation)."""
        return max((e["mean_return"] for e in self.evaluations), default=math.nan)

    def to_dict(self):
        """A JSON-able dict of the curve."""
        return {**asdict(self), "best_return": self.best_return}


def run_episode(env, policy, max_steps):
    """Play one episode with ``policy(observation, is_first) -> action``; return (episode, return)."""
    observation = env.reset()
    steps = {"state": [observation], "action": [np.zeros(env.action_dim, np.float32)],
             "reward": [0.0], "is_first": [True]}
    for _ in range(max_steps):
        action = np.asarray(policy(observation, len(steps["reward"]) == 1), np.float32)
        observation, reward, done = env.step(action)
        for key, value in (("state", observation), ("action", action), ("reward", reward),
                           ("is_first", False)):
            steps[key].append(value)
        if done:
            break
    episode = {"state": np.stack(steps["state"]), "action": np.stack(steps["action"]),
               "reward": np.asarray(steps["reward"], np.float32),
               "is_first": np.asarray(steps["is_first"], bool)}
    return episode, float(episode["reward"].sum())


class _AgentPolicy:
    """The agent as a ``policy(observation, is_first)`` callable that keeps its recurrent state."""

    def __init__(self, agent, explore, after_step=None):
        self.agent, self.explore, self.after_step = agent, explore, after_step
        self.state = agent.initial_state()

    def __call__(self, observation, is_first):
        if is_first:
            self.state = self.agent.initial_state()
        action, self.state = self.agent.act(observation, self.state, is_first, self.explore)
        if self.after_step is not None:
            self.after_step()
        return action


def train_state_dreamer(config, *, seed=0, progress=True, log=print):
    """Train a :class:`StateDreamer` online; return its :class:`LearningCurve`.

    Schedule (agent steps): ``prefill_steps`` of uniform random actions, then ``pretrain_steps``
    updates, then one update every ``train_every`` steps while the actor collects (sampling its
    actions), with an evaluation (actor mode) every ``eval_every`` steps and at the end. The run
    stops at ``total_steps``, when ``cpu_budget_s`` is spent, or at the first evaluation that
    reaches ``target_return``. The global torch RNG is seeded
    with ``seed`` inside and restored afterwards, so the same seed gives the same run on CPU.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return _Run(config, seed, progress, log).run()
    finally:
        torch.set_num_threads(threads)


class _Run:
    """One training run of :func:`train_state_dreamer` (its counters and loop)."""

    def __init__(self, config, seed, progress, log):
        self.config, self.log = config, log
        self.env = StateEnv(config.task, seed=seed, action_repeat=config.action_repeat)
        self.eval_env = StateEnv(config.task, seed=seed + 10_000, action_repeat=config.action_repeat)
        self.agent = StateDreamer(config, self.env.state_dim, self.env.action_dim, seed)
        self.replay = StateReplay(seed)
        self.rng = np.random.default_rng(seed)
        self.curve = LearningCurve(asdict(config))
        self.steps = self.updates = 0
        self.pretrained = False
        self.update_seconds = self.update_cpu_seconds = 0.0
        self.interval_metrics = []
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=config.total_steps, unit="step", desc=f"state dreamer {config.task}",
                            dynamic_ncols=True)

    def run(self):
        """Collect, train and evaluate until the budget is spent; return the LearningCurve."""
        config = self.config
        next_eval = config.prefill_steps
        try:
            while self.steps < config.total_steps and not self.out_of_time():
                self.collect_episode()
                if self.steps >= next_eval:
                    next_eval += config.eval_every
                    if self.evaluate() >= (config.target_return or math.inf):
                        break
            if not self.curve.evaluations or self.curve.evaluations[-1]["agent_steps"] != self.steps:
                self.evaluate()
        finally:
            if self.bar is not None:
                self.bar.close()
        self.curve.seconds_per_update = self.update_seconds / max(self.updates, 1)
        self.curve.cpu_seconds_per_update = self.update_cpu_seconds / max(self.updates, 1)
        return self.curve

    def out_of_time(self):
        """True once the CPU budget is spent."""
        return time.process_time() - self.cpu_start >= self.config.cpu_budget_s

    def collect_episode(self):
        """Play one training episode (random actions during the prefill) and store it."""
        config = self.config
        prefill = self.steps < config.prefill_steps
        if prefill:
            def policy(observation, is_first):
                self.after_step()
                return self.rng.uniform(-1, 1, self.env.action_dim)
        else:
            policy = _AgentPolicy(self.agent, explore=True, after_step=self.after_step)
        episode, episode_return = run_episode(self.env, policy, config.max_episode_steps)
        self.replay.add(episode)
        env_steps = self.steps * config.action_repeat
        self.curve.train_returns.append((env_steps, episode_return))
        if prefill:
            prefill_returns = [r for _, r in self.curve.train_returns]
            self.curve.random_return = float(np.mean(prefill_returns))

    def after_step(self):
        """Count one agent step and run the updates that are due after it."""
        config = self.config
        self.steps += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.steps < config.prefill_steps or not self.replay.episodes:
            return
        if not self.pretrained:
            self.pretrained = True
            self.train(config.pretrain_steps)
        elif self.steps % config.train_every == 0:
            self.train(1)

    def train(self, count):
        """``count`` updates on batches from the replay; the last one's metrics go to the bar."""
        config = self.config
        for _ in range(count):
            batch = self.replay.sample(config.batch_size, config.seq_len)
            wall, cpu = time.perf_counter(), time.process_time()
            metrics = self.agent.update(batch)
            self.update_seconds += time.perf_counter() - wall
            self.update_cpu_seconds += time.process_time() - cpu
            self.updates += 1
            self.interval_metrics.append(metrics)
        if self.bar is not None:
            shown = ("model_loss", "kl", "imagined_return", "actor_entropy")
            self.bar.set_postfix({k: f"{metrics[k]:.3g}" for k in shown if k in metrics}, refresh=False)

    def evaluate(self):
        """Evaluate the actor's mode, record the curve row and the interval's mean metrics;
        return the mean evaluation return."""
        config = self.config
        returns = [run_episode(self.eval_env, _AgentPolicy(self.agent, explore=False),
                               config.max_episode_steps)[1] for _ in range(config.eval_episodes)]
        row = {"agent_steps": self.steps, "env_steps": self.steps * config.action_repeat,
               "updates": self.updates, "wall_s": time.perf_counter() - self.start,
               "cpu_s": time.process_time() - self.cpu_start,
               "returns": returns, "mean_return": float(np.mean(returns))}
        self.curve.evaluations.append(row)
        if self.interval_metrics:
            means = {k: float(np.mean([m[k] for m in self.interval_metrics]))
                     for k in self.interval_metrics[0]}
            self.curve.metrics.append({"env_steps": row["env_steps"], **means})
            self.interval_metrics = []
        self.log(f"env steps {row['env_steps']:>7d}  updates {self.updates:>6d}  "
                 f"wall {row['wall_s']:6.0f} s  cpu {row['cpu_s']:6.0f} s  "
                 f"eval return {row['mean_return']:6.1f}")
        return row["mean_return"]
