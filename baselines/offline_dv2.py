"""Offline DV2 (Lu et al., "Challenges and Opportunities in Offline Reinforcement Learning from Visual
Observations", V-D4RL, 2022) in PyTorch, on the shared world-model core.

::

    lqv-d4rl train offline_dv2 walker_walk-medrep --preset paper --device cuda

The algorithm (V-D4RL ``offlinedv2/``, a DreamerV2 fork, run as its README says:
``--configs dmc_vision --offline_penalty_type meandis --offline_lmbd 10``):

1. **World model** (``model_steps`` updates): DreamerV2's single-branch model (CNN encoder, RSSM
   with 32 x 32 categorical latents, image decoder, reward head) whose prior is an *ensemble* of
   K = 7 heads on one GRU. Each time step of a batch draws one head for the whole batch and only
   that head's KL trains it. Image *and reward* gradients shape the latent (``grad_heads: [decoder,
   reward]``): this is where Offline DV2 differs from SeMOPO's joint-model ablation, whose reward
   head reads stop-gradient features.
2. **Actor-critic** (``policy_steps`` updates, world model frozen): DreamerV2 behaviour learning
   from all B x T posterior states of a batch, imagining ``horizon`` = 5 steps with one random
   head per step, on the penalized reward::

       r~ = r^(s_{t+1}) - lambda * u(s_{t+1}),   u = mean_k || p_k - mean_j p_j ||_F   ("meandis")

   where p_k are the class probabilities head k predicts for the imagined state's latent
   (``imagined_reward_states="current"``: both read at s_t, as V-D4RL's DreamerV2 does).

Sequence windows start from the zero state with a zero action (``is_first`` is set at the first
entry of every window, as DreamerV2's replay does).

Where this port departs from V-D4RL (each a config value or a documented choice): evaluation at
the end of training (``eval_episodes``) instead of one episode every 200 policy updates; rewards
and penalties of imagined states 1..H (the core's alignment; the ``released`` preset reads
DreamerV2's states 0..H-1); bfloat16 instead of float16 mixed precision on CUDA (``released``:
float16).
"""

from dataclasses import dataclass

import torch

from lqv_d4rl.algorithms import Algorithm, ConfigError, config_from_dict, config_to_dict
from lqv_d4rl.networks import (
    ActorCritic,
    BehaviorConfig,
    WorldModel,
    WorldModelConfig,
    flatten_states,
    imagination_disagreement,
)
from lqv_d4rl.observations import (
    check_observation_fields,
    sequence_keys,
    state_size,
    world_model_overrides,
)
from lqv_d4rl.policies import LatentPolicy
from lqv_d4rl.samplers import mark_window_starts

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

PENALTIES = {"meandis": "semopo_code", "log_prob_ens": "lompo"}
"""V-D4RL's ``offline_penalty_type`` names -> the core's disagreement kinds
(:func:`lqv_d4rl.networks.state_disagreement`)."""

CHECKPOINT_VERSION = 2
"""2: the layer-norm GRU has a bias."""


@dataclass
class OfflineDV2Config:
    """Hyperparameters of Offline DV2. Sources: V-D4RL ``offlinedv2/dreamerv2/configs.yaml``
    (``defaults`` with the ``dmc_vision`` overrides), ``train_offline.py`` and the README command."""

    # ----------------------------------------------------------------------- data
    batch_size: int = 64
    """Sequences per batch, both phases (``offline_model_dataset`` / ``offline_train_dataset``: 64)."""
    seq_len: int = 50
    """Entries per sequence (``length: 50``); the RSSM starts each window from the zero state."""

    # ----------------------------------------------------------------------- world model
    observation: str = "image"
    """What the world model encodes and reconstructs: ``image`` (the 64x64 frames, conv encoder
    and decoder: V-D4RL's ``dmc_vision``) or ``state`` (the dataset's stored low-dimensional
    ``state`` vectors: MLP encoder and decoder of ``state_layers`` x ``state_units`` ELU with a
    unit-variance Normal likelihood, DreamerV2's setting for proprioceptive inputs; evaluation
    feeds the policy the environment's ``info["state"]``). Not in V-D4RL: a cheap setting in which
    to test the algorithm (:mod:`lqv_d4rl.observations`)."""
    state_layers: int = 4
    """``observation="state"``: hidden layers of the MLP encoder and decoder (DreamerV2's
    ``encoder.mlp_layers`` / ``decoder.mlp_layers``: 4)."""
    state_units: int = 400
    """``observation="state"``: width of the MLP encoder and decoder (DreamerV2's ``mlp_units``:
    400)."""
    depth: int = 48
    """CNN channel multiplier of the encoder and decoder (``cnn_depth: 48``)."""
    deter: int = 200
    """GRU state size (``dmc_vision`` ``rssm.deter: 200``)."""
    stoch: int = 32
    """Categorical latent groups (``rssm.stoch: 32``)."""
    classes: int = 32
    """Classes per group (``rssm.discrete: 32``)."""
    hidden: int = 200
    """Width of the RSSM's input, posterior and prior-head layers (``dmc_vision``
    ``rssm.hidden: 200``)."""
    ensemble: int = 7
    """Prior heads on the shared GRU (``rssm.ensemble: 7``); one is drawn per step for the whole
    batch."""
    units: int = 400
    """Width of the reward, actor and critic MLPs (400)."""
    reward_layers: int = 4
    """Hidden layers of the reward MLP (``reward_head.layers: 4``); it reads features WITH gradient
    (``dmc_vision`` ``grad_heads: [decoder, reward]``)."""
    kl_balance: float = 0.8
    """KL balancing: share of the KL gradient that trains the prior (``kl.balance: 0.8``)."""
    free_nats: float = 1.0
    """Free nats on the batch-mean KL (``dmc_vision`` ``kl.free: 1.0``, ``free_avg: True``)."""
    kl_scale: float = 1.0
    """Weight of the KL term (``loss_scales.kl: 1.0``)."""
    image_scale: float = 1.0
    """Weight of the image log-likelihood (DreamerV2: 1.0)."""
    reward_scale: float = 1.0
    """Weight of the reward log-likelihood (``loss_scales.reward: 1.0``)."""
    model_lr: float = 3e-4
    """Adam learning rate of the world model (``dmc_vision`` ``model_opt.lr: 3e-4``)."""
    eps: float = 1e-5
    """Adam epsilon of the model, actor and critic optimizers (``eps: 1e-5``)."""
    clip: float = 100.0
    """Global gradient-norm clip of every optimizer (``clip: 100``)."""
    weight_decay: float = 1e-6
    """DreamerV2's weight decay of every optimizer: each parameter times (1 - weight_decay) right
    before its Adam step, not scaled by the learning rate (``wd: 1e-6`` in ``model_opt``,
    ``actor_opt``, ``critic_opt``; ``tfutils.py`` ``Optimizer._apply_weight_decay``, pattern
    ``.*``: every variable)."""
    model_steps: int = 25_000
    """World-model updates before the actor-critic trains (``offline_model_train_steps: 25001``;
    the released loop runs blocks of 100 while its counter is below 25,001, i.e. 25,100)."""

    # ----------------------------------------------------------------------- actor-critic
    horizon: int = 5
    """Imagination horizon from every posterior state of a batch (``imag_horizon: 5``)."""
    imagined_reward_states: str = "next"
    """Where imagined rewards and penalties are read: ``next`` (imagined states 1..H, the state
    each imagined action leads to; the shared core's convention) or ``current`` (states 0..H-1,
    each action scored by the return from the next state on: DreamerV2's ``ActorCritic.target``
    and ``actor_loss``, which V-D4RL's ``offlinedv2`` keeps; its ``penalized_reward`` scores the
    whole imagined sequence, of which ``target`` uses states 0..H-1)."""
    gamma: float = 0.99
    """Discount (``discount: 0.99``); no discount head (``dmc_vision`` ``pred_discount: False``)."""
    lambda_: float = 0.95
    """lambda of the TD(lambda) targets (``discount_lambda: 0.95``)."""
    actor_entropy: float = 1e-4
    """Actor entropy bonus (``dmc_vision`` ``actor_ent: 1e-4``)."""
    actor_lr: float = 8e-5
    """Adam learning rate of the actor (``dmc_vision`` ``actor_opt.lr: 8e-5``)."""
    critic_lr: float = 8e-5
    """Adam learning rate of the critic (``dmc_vision`` ``critic_opt.lr: 8e-5``)."""
    actor_layers: int = 4
    """Hidden layers of the actor MLP (``actor.layers: 4``; truncated-normal actions, min std 0.1)."""
    critic_layers: int = 4
    """Hidden layers of the critic MLP (``critic.layers: 4``)."""
    slow_critic_every: int = 100
    """Updates between copies of the critic into the slow critic (``slow_target_update: 100``)."""
    policy_steps: int = 200_000
    """Actor-critic updates after the model phase (``steps: 2e5``); the ``semopo_steps`` preset runs
    SeMOPO's README length, 100,000."""
    penalty: str = "meandis"
    """Uncertainty u of r - lambda * u (``offline_penalty_type``): ``meandis`` (the README's: mean over
    heads of the Frobenius norm of the head's class probabilities minus their mean) or
    ``log_prob_ens`` (std over heads of the log-probability of the imagined latent, as LOMPO)."""
    penalty_lambda: float = 10.0
    """lambda of r - lambda * u: 10 as the README command runs it (``--offline_lmbd 10``); the
    config default ``offline_lmbd`` is 5."""

    # ----------------------------------------------------------------------- running
    precision: str = "bfloat16"
    """Mixed precision on CUDA (the original ran float16, ``precision: 16``; bfloat16 needs no loss
    scaling); the CPU always computes in float32."""
    log_every: int = 100
    """Updates between rows of the metrics log."""
    checkpoint_every: int = 5_000
    """Updates between checkpoints (``offline_model_save_every: 5000``); also at the end of each
    phase."""
    eval_episodes: int = 10
    """Evaluation episodes after training (V-D4RL plays one every 200 policy updates instead)."""
    eval_max_steps: int | None = None
    """Cap on agent steps per evaluation episode (``None``: the full 500; small for smoke tests)."""

    def __post_init__(self):
        check.positive_ints(self, "batch_size", "seq_len", "depth", "deter", "stoch", "classes",
                            "hidden", "ensemble", "units", "reward_layers", "horizon",
                            "actor_layers", "critic_layers", "slow_critic_every", "log_every",
                            "checkpoint_every", "eval_episodes")
        check.optional_positive_ints(self, "eval_max_steps")
        check.counts(self, "model_steps", "policy_steps")
        check.choice(self, "penalty", tuple(PENALTIES))
        check.choice(self, "precision", ("float32", "bfloat16", "float16"))
        check.choice(self, "imagined_reward_states", ("next", "current"))
        check_observation_fields(self)
        if self.imagined_reward_states == "current" and self.horizon < 2:
            raise ConfigError("imagined_reward_states='current' needs horizon >= 2")
        check.positive(self, "model_lr", "actor_lr", "critic_lr", "eps", "clip")
        check.non_negative(self, "free_nats", "kl_scale", "image_scale", "reward_scale",
                           "actor_entropy", "penalty_lambda")
        check.unit_interval(self, "kl_balance", "gamma", "lambda_")
        if not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight_decay must lie in [0, 1), got {self.weight_decay!r}")
        if self.ensemble < 2 and self.penalty_lambda != 0:
            raise ConfigError(f"the penalty needs at least 2 prior heads (ensemble="
                              f"{self.ensemble}); raise ensemble or set penalty_lambda=0")


PRESETS = {
    # V-D4RL's README command: dmc_vision, meandis, lambda 10, 25k model + 200k policy updates.
    "paper": {},
    # The same with SeMOPO's README length of the policy phase.
    "semopo_steps": {"policy_steps": 100_000},
    # What the released code does beyond the README's settings: DreamerV2's reward alignment, its
    # 251 blocks of 100 model updates, float16.
    "released": {"imagined_reward_states": "current", "model_steps": 25_100,
                 "precision": "float16"},
    # Tiny networks and few steps: a minute or two on a 2-core CPU; for tests and trying the pipeline.
    "smoke": {
        "batch_size": 8, "seq_len": 16, "depth": 8, "deter": 32, "stoch": 8, "classes": 8,
        "hidden": 32, "ensemble": 3, "units": 64, "reward_layers": 2, "actor_layers": 2,
        "critic_layers": 2, "model_lr": 1e-3, "actor_lr": 3e-4, "critic_lr": 3e-4,
        "model_steps": 200, "policy_steps": 100, "slow_critic_every": 20, "log_every": 20,
        "checkpoint_every": 100, "eval_episodes": 2, "precision": "float32",
    },
}
"""Named configurations: field overrides on top of the defaults."""


# ---------------------------------------------------------------------------------------------
# The agent: world model, penalized actor-critic, acting policy, checkpoints
# ---------------------------------------------------------------------------------------------


class DV2WorldModel(WorldModel):
    """The core's single-branch ``WorldModel`` with K prior heads and reward gradients into the latent,
    plus the ensemble disagreement of the config's penalty. With ``config.observation == "state"``
    it models state vectors of size ``state_dim`` (MLP encoder and decoder)."""

    def __init__(self, action_dim, config, device="cpu", seed=0, state_dim=None):
        super().__init__(action_dim, WorldModelConfig.from_config(
            config, reward_stop_grad=False, seed=seed,
            **world_model_overrides(config, state_dim)), device=device)

    def disagreement(self, imagination, penalty):
        """Ensemble disagreement ``u`` ``(H, N)`` of kind ``penalty`` (a config ``penalty`` name) at
        the imagination's scored states (1..H, or 0..H-1 with ``imagined_reward_states="current"``;
        keeps its gradient)."""
        return imagination_disagreement(self.rssm, imagination, PENALTIES[penalty])


class OfflineDV2Agent:
    """World model + penalized actor-critic, with the two training steps and checkpoints.

    Args:
        action_dim: size of the action vector.
        config: an :class:`OfflineDV2Config`.
        task: the benchmark task of the training data (kept for evaluation), or None.
        device: ``"cpu"``, ``"cuda"``, ...
        seed: seeds the ensemble-head draws (parameters are initialized from the global torch RNG:
            seed it first, as :func:`train` does).
        state_dim: size of the dataset's state vectors, needed with ``observation="state"``.
    """

    def __init__(self, action_dim, config=None, *, task=None, device="cpu", seed=0,
                 state_dim=None):
        self.config = config or OfflineDV2Config()
        self.action_dim = int(action_dim)
        self.task = task
        self.device = torch.device(device)
        self.seed = int(seed)
        self.state_dim = (int(state_dim) if self.config.observation == "state"
                          and state_dim is not None else None)
        self.world_model = DV2WorldModel(self.action_dim, self.config, self.device, self.seed,
                                         state_dim=self.state_dim)
        self.behavior = ActorCritic(self.world_model.rssm.feature_dim, self.action_dim,
                                    BehaviorConfig.from_config(self.config), device=self.device)
        self.model_updates = 0
        self.policy_updates = 0

    # ----------------------------------------------------------------------------- training

    def train_model_step(self, batch):
        """One world-model update on a sequence batch; returns detached scalar metric tensors."""
        self.world_model.train()
        _, metrics = self.world_model.train_step(mark_window_starts(batch))
        self.model_updates += 1
        return detached(metrics)

    def penalized_reward(self, imagination):
        """``r - lambda * u`` of each imagined transition, ``(H, N)``; also returns ``(r, u)``."""
        reward = self.world_model.reward(imagination).float()
        penalty = self.world_model.disagreement(imagination, self.config.penalty).float()
        return reward - self.config.penalty_lambda * penalty, reward, penalty

    def start_states(self, batch):
        """All posterior states of a batch, flattened to ``(B*T, ...)`` and detached."""
        with torch.no_grad():
            post, _ = self.world_model.observe(mark_window_starts(batch))
        return flatten_states(post)

    def behavior_step(self, start):
        """One actor and critic update from imagination started at ``start`` (latent states)."""
        parts = {}

        def reward_fn(imagination):
            total, reward, penalty = self.penalized_reward(imagination)
            parts["model_reward"] = reward.mean().detach()
            parts["penalty"] = penalty.mean().detach()
            return total

        metrics = self.behavior.train_step(start, self.world_model.imagine, reward_fn)
        metrics.update(parts)
        self.policy_updates += 1
        return detached(metrics)

    def train_policy_step(self, batch):
        """One actor-critic update whose imagination starts at every posterior state of ``batch``."""
        self.world_model.eval()
        return self.behavior_step(self.start_states(batch))

    # ----------------------------------------------------------------------------- acting

    def policy(self, *, sample=False):
        """A :class:`LatentPolicy` sharing this agent's networks (plays the actor's mode); it acts
        on frames, or on state vectors with ``observation="state"``."""
        model = self.world_model
        return LatentPolicy(model.encoder, model.rssm, self.behavior.actor, self.action_dim,
                            sample=sample, observation_key=model.observation_key,
                            state_dim=self.state_dim)

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self):
        """Networks, optimizers, counters and the head generator: everything to continue training."""
        model, behavior = self.world_model, self.behavior
        return {
            "version": CHECKPOINT_VERSION, "config": config_to_dict(self.config),
            "action_dim": self.action_dim, "task": self.task, "seed": self.seed,
            "state_dim": self.state_dim,
            "world_model": model.state_dict(), "model_optimizer": model.optimizer.state_dict(),
            "behavior": behavior.state_dict(), "actor_optimizer": behavior.actor_opt.state_dict(),
            "critic_optimizer": behavior.critic_opt.state_dict(),
            "behavior_updates": behavior.updates, "head_generator": model.rssm.generator.get_state(),
            "model_updates": self.model_updates, "policy_updates": self.policy_updates,
        }

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (same config and action size)."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r} is not "
                             f"{CHECKPOINT_VERSION}: it was written by another version of "
                             "offline_dv2")
        model, behavior = self.world_model, self.behavior
        model.load_state_dict(state["world_model"])
        model.optimizer.load_state_dict(state["model_optimizer"])
        behavior.load_state_dict(state["behavior"])
        behavior.actor_opt.load_state_dict(state["actor_optimizer"])
        behavior.critic_opt.load_state_dict(state["critic_optimizer"])
        behavior.updates = int(state["behavior_updates"])
        model.rssm.generator.set_state(state["head_generator"])
        self.model_updates = int(state["model_updates"])
        self.policy_updates = int(state["policy_updates"])

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The agent of the run folder ``run_dir`` (its checkpoint, read with ``weights_only``)."""
        state = agent_state(run_dir, CHECKPOINT_VERSION)
        agent = cls(state["action_dim"], config_from_dict(OfflineDV2Config, state["config"]),
                    task=state["task"], device=device, seed=state["seed"],
                    state_dim=state.get("state_dim"))
        agent.load_state_dict(state)
        return agent


# ---------------------------------------------------------------------------------------------
# Training in a run folder
# ---------------------------------------------------------------------------------------------


def train(dataset, config, run, device="cpu"):
    """Train (or finish training) Offline DV2 on ``dataset`` in the run folder ``run``; returns the
    agent. ``ALGORITHM.train``: the run gives the seed, the metrics log and the checkpoint."""
    state_dim = state_size(dataset, config.observation)  # fails clearly without states
    torch.manual_seed(run.seed)
    agent = OfflineDV2Agent(dataset.action_dim, config, task=dataset.task, device=device,
                            seed=run.seed, state_dim=state_dim)
    batches = RunBatches(dataset, config, run.seed, device, keys=sequence_keys(config.observation))
    state = run.load_checkpoint()
    if state is not None:
        restore(state, agent, batches)
        run.truncate_metrics(*(("policy", agent.policy_updates) if agent.policy_updates
                               else ("model", agent.model_updates)))

    def save():
        run.save_checkpoint(checkpoint_state(agent, batches))

    common = dict(checkpoint=save, log_every=config.log_every,
                  checkpoint_every=config.checkpoint_every)
    try:
        model_done = run.phase("model", total=config.model_steps, done=lambda: agent.model_updates,
                               update=lambda: agent.train_model_step(batches.next("model")),
                               description="world model",
                               postfix=("model_loss", f"{config.observation}_log_prob"), **common)
        if model_done:
            run.phase("policy", total=config.policy_steps, done=lambda: agent.policy_updates,
                      update=lambda: agent.train_policy_step(batches.next("policy")),
                      description="actor-critic", postfix=("imagined_return", "penalty"),
                      **common)
    finally:
        batches.close()
    return agent


def load(run_dir, device="cpu"):
    """The acting policy of the Offline DV2 run in ``run_dir``."""
    return OfflineDV2Agent.load(run_dir, device=device).policy()


ALGORITHM = Algorithm(
    name="offline_dv2",
    config_class=OfflineDV2Config,
    presets=PRESETS,
    train=train,
    load=load,
    analyse=analyse,
    summary="Offline DV2 (V-D4RL): DreamerV2 with a 7-head prior ensemble, actor-critic on the "
            "reward minus lambda x the heads' mean disagreement.",
    resumable_fields=RESUMABLE_FIELDS,
)
