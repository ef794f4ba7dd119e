"""What the four model-free baselines share on the algorithm platform: the config fields, the
training loop in a run folder, the frame-stacking policy that evaluation plays, and ``load``.

An algorithm module (``bc.py``, ``drq_bc.py``, ``drq_cql.py``, ``infogating.py``) defines a config
dataclass derived from :class:`ModelFreeConfig` and an agent class with

* ``Agent(action_dim, config, device)``: networks and optimizers;
* ``agent.update(batch, generator) -> {metric: tensor}``: one gradient update on a batch of
  :class:`baselines.replay.FrameStackBatches` (all randomness from ``generator``);
* ``agent.acting_network()``: the module that maps a ``(1, 3 * frame_stack, H, W)`` uint8 stack
  to the deterministic action (V-D4RL evaluates ``dist.mean``);
* ``agent.updates``: the number of updates done;

and passes the class to :func:`train_model_free` and :func:`load_policy`.

Sources: V-D4RL ``drqbc/`` (conglu1997/v-d4rl @1ceaf22; ``cfgs/config.yaml``,
``cfgs/task/offline_dmc.yaml``, ``train.py``), summarized in ``reference/baselines.md`` section 1.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lqv_d4rl.algorithms import ConfigError

from .config_checks import (
    choice, counts, non_negative, optional_positive_ints, positive, positive_ints, unit_interval,
)
from .core import NATIVE_IMAGE_SIZE, linear_schedule, resize_frames

PRECISIONS = ("float32", "bfloat16")
SMOKE = {"updates": 60, "batch_size": 16, "encoder_channels": 8, "feature_dim": 16, "units": 64,
         "std_decay_updates": 30, "log_every": 10, "checkpoint_every": 30, "eval_episodes": 2}
"""The tiny settings of the model-free ``smoke`` presets (seconds of training on a CPU)."""
RESUMABLE_FIELDS = ("updates", "sample_on_device", "log_every", "checkpoint_every",
                    "eval_episodes", "eval_max_steps")
"""Config fields that may change when a model-free run is resumed (``updates`` extends a run)."""


@dataclass
class ModelFreeConfig:
    """Fields every model-free baseline has (defaults: V-D4RL's DrQ+BC / BC / CQL runs)."""

    updates: int = 550_000
    """Gradient updates. V-D4RL runs ``num_train_frames: 1100000`` loop steps with
    ``update_every_steps: 2``, i.e. 550,000 updates (``offline_dmc.yaml``, ``drqv2.py``)."""
    batch_size: int = 256
    """Transitions per batch (V-D4RL ``config.yaml``: 256)."""
    frame_stack: int = 3
    """Stacked frames per observation (V-D4RL: 3); the first frame of an episode is repeated."""
    image_size: int = NATIVE_IMAGE_SIZE
    """Side of the frames the networks see. 64 (default) trains on LQV-D4RL's native frames, a
    departure from V-D4RL, whose model-free agents are 84 px; 84 upsamples every frame with
    OpenCV bicubic interpolation as V-D4RL's ``npz_to_hdf5.py`` converter does, in training and in
    evaluation alike."""
    augment_pad: int = 4
    """Random-shift augmentation pad in pixels (V-D4RL ``RandomShiftsAug(pad=4)``); 0 turns
    augmentation off (V-D4RL's ``noaug_bc``)."""
    encoder_channels: int = 32
    """Channels of each conv layer of the encoder (V-D4RL ``Encoder``: 32)."""
    feature_dim: int = 50
    """Size of the trunk features, Linear + LayerNorm + Tanh (V-D4RL ``feature_dim: 50``)."""
    units: int = 1024
    """Width of the actor and critic MLPs (V-D4RL ``hidden_dim: 1024``)."""
    actor_layers: int = 2
    """Hidden layers of the actor MLP (V-D4RL: 2)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor, and for BC of the encoder too, which the BC loss trains
    (V-D4RL ``lr``: 3e-4, set by ``task/offline_dmc.yaml``, which overrides ``config.yaml``'s
    1e-4)."""
    eps: float = 1e-8
    """Adam epsilon of every optimizer (V-D4RL uses PyTorch's default, 1e-8)."""
    std_start: float = 1.0
    """Std of the actor's sampling noise at the start (V-D4RL ``stddev_schedule:
    linear(1.0,0.1,250000)``)."""
    std_end: float = 0.1
    """Std of the actor's sampling noise at the end of the schedule (0.1)."""
    std_decay_updates: int = 125_000
    """Updates over which the noise std falls linearly from ``std_start`` to ``std_end``. V-D4RL's
    schedule runs over 250,000 loop steps, which are 125,000 updates."""
    std_clip: float = 0.3
    """Clip of the sampling noise (V-D4RL ``stddev_clip: 0.3``)."""
    precision: str = "float32"
    """``float32`` (V-D4RL), or ``bfloat16`` autocast on CUDA (a speed option; on a CPU everything
    runs in float32)."""
    sample_on_device: bool = True
    """On a CUDA device, keep the dataset's frames in GPU memory and gather batches there (same
    batches as host sampling); False gathers on the host in a prefetch thread."""
    log_every: int = 1000
    """Updates between rows of metrics.csv."""
    checkpoint_every: int = 10_000
    """Updates between checkpoints."""
    eval_episodes: int = 10
    """Evaluation episodes after training (V-D4RL ``num_eval_episodes: 10``)."""
    eval_max_steps: int | None = None
    """Cap on agent steps per evaluation episode (None: full episodes, as in the paper)."""

    def __post_init__(self):
        positive_ints(self, "updates", "batch_size", "frame_stack", "image_size",
                      "encoder_channels", "feature_dim", "units", "std_decay_updates",
                      "log_every", "checkpoint_every", "eval_episodes")
        counts(self, "augment_pad", "actor_layers")
        non_negative(self, "std_start", "std_end", "std_clip")
        positive(self, "actor_lr", "eps")
        optional_positive_ints(self, "eval_max_steps")
        choice(self, "precision", PRECISIONS)
        if self.image_size < NATIVE_IMAGE_SIZE:
            raise ConfigError(f"image_size must be >= {NATIVE_IMAGE_SIZE} (the datasets' frame "
                              f"size; 84 reproduces V-D4RL), got {self.image_size}")


@dataclass
class ActorCriticConfig(ModelFreeConfig):
    """Fields of the baselines that learn a twin critic (DrQ+BC, DrQ+CQL)."""

    critic_lr: float = 3e-4
    """Adam learning rate of the critic and of the encoder, which the critic loss trains
    (V-D4RL ``lr``: 3e-4)."""
    critic_layers: int = 2
    """Hidden layers of each Q MLP (V-D4RL: 2)."""
    gamma: float = 0.99
    """Discount (V-D4RL ``discount: 0.99``)."""
    tau: float = 0.01
    """Polyak rate of the target critic, updated after every update (V-D4RL
    ``critic_target_tau: 0.01``)."""
    nstep: int = 1
    """Steps of the TD target (V-D4RL ``offline_dmc.yaml``: 1)."""

    def __post_init__(self):
        super().__post_init__()
        positive(self, "critic_lr")
        counts(self, "critic_layers")
        positive_ints(self, "nstep")
        unit_interval(self, "gamma", "tau")


# ---------------------------------------------------------------------------------- training


def train_model_free(dataset, config, run, device, agent_class, *, sampler_options=None,
                     postfix=()):
    """Train (or finish training) ``agent_class`` on ``dataset`` in the run folder ``run``.

    Seeds: ``torch.manual_seed(run.seed)`` initializes the networks; the batches and the update's
    random draws (augmentation, action noise, random actions) use generators seeded from
    ``run.seed``. A checkpoint holds the agent, its optimizers and the draw generator's state; the
    batch stream restarts at the checkpointed update, so a resumed run equals an uninterrupted one
    on CPU. ``sampler_options`` go to :class:`baselines.replay.FrameStackBatches`.
    """
    from lqv_d4rl.runs import rng_state, set_rng_state

    from .replay import FrameStackBatches

    batch_seed, draw_seed = np.random.SeedSequence(run.seed).generate_state(2)
    torch.manual_seed(run.seed)
    agent = agent_class(dataset.action_dim, config, device)
    generator = torch.Generator(device=device).manual_seed(int(draw_seed))
    state = run.load_checkpoint()
    if state is not None:
        agent.load_state_dict(state["agent"])
        set_rng_state(state["rng"], [generator])
        run.truncate_metrics("train", agent.updates)
    if agent.updates >= config.updates:
        return agent

    def save():
        run.save_checkpoint({"agent": agent.state_dict(), "action_dim": int(dataset.action_dim),
                             "rng": rng_state([generator])})

    batches = FrameStackBatches(
        dataset, batch_size=config.batch_size, frame_stack=config.frame_stack,
        image_size=config.image_size, seed=int(batch_seed), device=device,
        frames_on_device=config.sample_on_device and torch.device(device).type == "cuda",
        **(sampler_options or {}))
    with batches.stream(start=agent.updates) as stream:
        run.phase("train", total=config.updates, done=lambda: agent.updates,
                  update=lambda: agent.update(next(stream), generator),
                  checkpoint=save, log_every=config.log_every,
                  checkpoint_every=config.checkpoint_every, description=run.algorithm,
                  postfix=postfix)
    return agent


def load_policy(run_dir, agent_class, config_class, name, device="cpu"):
    """The evaluation policy of the ``name`` run in ``run_dir`` (from its checkpoint)."""
    from lqv_d4rl.algorithms import config_from_dict
    from lqv_d4rl.errors import LQVError
    from lqv_d4rl.runs import load_checkpoint_file, read_run_config

    record = read_run_config(run_dir)
    config = config_from_dict(config_class, record["config"], name)
    state = load_checkpoint_file(run_dir)
    if state is None:
        raise LQVError(f"{run_dir} holds no checkpoint of a {name} run yet; train it first")
    agent = agent_class(int(state["action_dim"]), config, "cpu")
    agent.load_state_dict(state["agent"])
    return agent.policy().to(device)


class AgentBase(nn.Module):
    """Bookkeeping every model-free agent shares: the update counter, optimizer state in
    ``state_dict``, and the evaluation policy."""

    def __init__(self, action_dim, config, device):
        super().__init__()
        self.action_dim = int(action_dim)
        self.config = config
        self.device = torch.device(device)
        self.updates = 0
        self.optimizers = {}

    def adam(self, name, parameters, lr):
        """Register an Adam optimizer called ``name`` (checkpointed with the agent); the fused
        implementation where this torch has it for the device (the same update, in one kernel)."""
        parameters = list(parameters)
        try:
            optimizer = torch.optim.Adam(parameters, lr=lr, eps=self.config.eps, fused=True)
        except (RuntimeError, TypeError):  # torch < 2.4 has no fused Adam on the CPU
            optimizer = torch.optim.Adam(parameters, lr=lr, eps=self.config.eps)
        self.optimizers[name] = optimizer
        return optimizer

    def noise_std(self):
        """Std of the actor's sampling noise at the current update (V-D4RL's linear schedule)."""
        config = self.config
        return linear_schedule(config.std_start, config.std_end, config.std_decay_updates,
                               self.updates)

    def autocast(self):
        """Mixed precision on CUDA when ``config.precision`` asks for it (else a no-op)."""
        from lqv_d4rl.networks.optim import autocast

        return autocast(self.device, self.config.precision)

    def state_dict(self, *args, **kwargs):
        """Networks, optimizers and the update counter."""
        return {"networks": super().state_dict(*args, **kwargs), "updates": self.updates,
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state, strict=True):
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state["networks"], strict=strict)
        self.updates = int(state["updates"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])

    def policy(self):
        """The frame-stacking evaluation policy (holds only the acting networks)."""
        return FrameStackPolicy(self.acting_network(), self.config.frame_stack,
                                self.config.image_size)


class ActingNetwork(nn.Module):
    """``actor(encoder(stack))``: a ``(B, C, H, W)`` uint8 frame stack -> the actor's mean action."""

    def __init__(self, encoder, actor):
        super().__init__()
        self.encoder, self.actor = encoder, actor

    def forward(self, stack):
        """Mean actions ``(B, A)``."""
        return self.actor(self.encoder(stack))


class FrameStackPolicy(nn.Module):
    """Plays ``network`` on environment observations, keeping the last ``frame_stack`` frames.

    ``policy(observation)``: one ``(64, 64, 3)`` uint8 frame -> float32 action in [-1, 1]^A. At the
    first frame of an episode (after :meth:`reset`) the stack holds that frame ``frame_stack``
    times, as training batches do. Frames are resized to ``image_size`` with the same function that
    prepared the training frames. The action is deterministic (the actor's mean).
    """

    def __init__(self, network, frame_stack, image_size):
        super().__init__()
        self.network = network.eval()
        self.frame_stack, self.image_size = int(frame_stack), int(image_size)
        self.reset()

    def reset(self):
        """Forget the episode so far."""
        self._frames = None
        return self

    @torch.no_grad()
    def forward(self, observation):
        """The action for one ``(64, 64, 3)`` uint8 observation (float32 numpy array)."""
        frame = np.asarray(observation)
        if frame.dtype != np.uint8 or frame.shape != (NATIVE_IMAGE_SIZE, NATIVE_IMAGE_SIZE, 3):
            raise ValueError(f"the policy acts on ({NATIVE_IMAGE_SIZE}, {NATIVE_IMAGE_SIZE}, 3) "
                             f"uint8 observations, got {frame.shape} {frame.dtype}")
        frame = resize_frames(frame[None], self.image_size)[0].transpose(2, 0, 1)
        if self._frames is None:
            self._frames = deque([frame] * self.frame_stack, maxlen=self.frame_stack)
        else:
            self._frames.append(frame)
        stack = torch.from_numpy(np.concatenate(self._frames, axis=0))[None]
        device = next(self.network.parameters()).device
        action = self.network(stack.to(device))
        return action[0].float().cpu().numpy().astype(np.float32)

    act = forward
