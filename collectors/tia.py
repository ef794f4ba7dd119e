"""TIA, the behaviour-policy learner of LQV-D4RL, as an agent object.

TIA (Fu, Yang, Agrawal, Jaakkola, "Learning Task Informed Abstractions", ICML 2021) is Dreamer-v1
with a second, adversarially trained "distractor" world model that soaks up the task-irrelevant
parts of the image; see :mod:`collectors.tia_model` for the model and its losses. The behaviour
(actor and value) learns by imagination in the task branch's latent space with
:class:`lqv_d4rl.networks.ActorCritic`.

The online loop (environment, replay, recorders) lives elsewhere and drives the agent through:

* :meth:`TIAAgent.initial_state` / :meth:`TIAAgent.act` – one action per environment, from the task
  branch's posterior and the actor, with Gaussian exploration noise when ``explore=True``;
* :meth:`TIAAgent.update` – one TIA update on a batch of sequences from ``lqv_d4rl.samplers``;
* :meth:`TIAAgent.save` / :meth:`TIAAgent.load` – checkpoints that continue identically;
* :meth:`TIAAgent.reconstruct` – preview images of the decomposition.

Randomness: network initialization is seeded by ``seed``; acting and updating each draw from their
own ``torch.Generator`` (seeded from ``seed``), so the same seed gives the same actions and the same
training run on CPU, evaluation episodes do not change the training updates, and the global torch
RNG is left untouched.

Defaults of :class:`TIAConfig` are the values of the published code (``Dreamer/train_configs/tia.yaml``
of github.com/kyonofx/tia, config ``dmc``).
"""

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from collectors.tia_model import TIAWorldModel
from lqv_d4rl.errors import LQVError
from lqv_d4rl.networks import (
    ActorCritic,
    BehaviorConfig,
    Optimizer,
    autocast,
    detach_states,
    flatten_states,
    preprocess_image,
)
from lqv_d4rl.tasks import get_task

IMAGE_SHAPE = (64, 64, 3)
CHECKPOINT_FORMAT = "lqv-d4rl-tia"
CHECKPOINT_VERSION = 2
"""2: the ``dreamerv2`` GRU cell's linear layer has a bias (as DreamerV2's Keras ``Dense``)."""

ADVERSARIAL_SCALES = {
    "walker_walk": 20000.0,
    "cheetah_run": 20000.0,
    "hopper_hop": 30000.0,
    # Not tasks of the TIA paper: the released code's default (tia.yaml ``disen_neg_rew_scale``).
    "humanoid_walk": 20000.0,
    "car_racing": 20000.0,
}
"""lambda_adv per task: 20000 walker / cheetah and 30000 hopper (TIA paper); 20000 elsewhere."""


class TIAInputError(LQVError, ValueError):
    """Settings, observations, batches or checkpoints that TIA cannot use (the message says what is
    wrong)."""


@dataclass
class TIAConfig:
    """Settings of :class:`TIAAgent`; defaults are the published TIA values for DMC.

    Schedule fields count *environment* steps (action repeat included), as the published code does.
    """

    # --- sizes
    cnn_depth: int = 26
    """Channel multiplier of the task branch's conv encoder and mask decoder."""
    distractor_cnn_depth: int = 26
    """Channel multiplier of the distractor branch's encoder, mask decoder and own decoder."""
    cnn_activation: str = "relu"
    """Activation of all convolutional networks (``"relu"`` in TIA; ``"elu"`` as in DreamerV2)."""
    deter: int = 200
    """GRU state size of the task RSSM."""
    stoch: int = 30
    """Gaussian latent size of the task RSSM."""
    distractor_deter: int = 200
    """GRU state size of the distractor RSSM."""
    distractor_stoch: int = 30
    """Gaussian latent size of the distractor RSSM."""
    hidden: int = 200
    """Width of the RSSMs' input, prior and posterior layers (Dreamer-v1 uses the deter size)."""
    min_std: float = 0.1
    """Lower bound of the latent standard deviation (Dreamer-v1)."""
    cell: str = "gru"
    """GRU cell of both RSSMs: ``"gru"``, the standard GRU of Dreamer-v1 / TIA (Keras
    ``GRUCell``), or ``"dreamerv2"``, DreamerV2's variant (reset gate on the whole candidate input,
    update-gate bias -1; the cell of checkpoints written before this option existed)."""
    gru_layer_norm: bool = False
    """Layer-normalize the gates of the ``"dreamerv2"`` cell (DreamerV2 does)."""
    units: int = 400
    """Width of the dense heads (reward, distractor reward, actor, value)."""
    reward_layers: int = 2
    """Hidden layers of the task reward head."""
    distractor_reward_layers: int = 2
    """Hidden layers of the distractor reward head."""
    actor_layers: int = 4
    """Hidden layers of the actor."""
    critic_layers: int = 3
    """Hidden layers of the value network."""
    actor_init_std: float = 5.0
    """Initial pre-tanh standard deviation of the tanh-Normal actor (Dreamer-v1)."""

    # --- losses
    free_nats: float = 3.0
    """Free nats of both branches' KL: the mean KL gives no gradient below this value."""
    kl_balance: float | None = None
    """``None``: Dreamer-v1's unbalanced ``max(mean KL, free_nats)`` (TIA). A float in (0, 1) uses
    DreamerV2's KL balancing with that weight on the prior side instead."""
    kl_scale: float = 1.0
    """Weight of the task branch's KL."""
    distractor_kl_scale: float = 1.0
    """Weight of the distractor branch's KL."""
    reward_scale: float = 1.0
    """Weight of the task reward log-likelihood."""
    distractor_image_scale: float = 1.5
    """Weight of the distractor-only image log-likelihood in the distractor loss."""
    adversarial_scale: float = 20000.0
    """lambda_adv, weight of the distractor reward head's log-likelihood in the distractor loss
    (20000 walker / cheetah, 30000 hopper; see ``ADVERSARIAL_SCALES`` and :meth:`paper`)."""
    distractor_reward_steps: int = 20
    """Adam steps that fit the distractor reward head before each update's adversarial term."""
    distractor_reward_lr: float = 6e-4
    """Learning rate of the distractor reward head."""

    # --- optimization
    model_lr: float = 6e-4
    """Adam learning rate of the task branch, the distractor branch and the joint decoder."""
    actor_lr: float = 8e-5
    """Adam learning rate of the actor."""
    critic_lr: float = 8e-5
    """Adam learning rate of the value network."""
    eps: float = 1e-7
    """Adam epsilon (TensorFlow's default, which the published code uses)."""
    clip: float = 100.0
    """Global gradient-norm clip, applied per optimizer (task, distractor, decoder, actor, value...)."""

    # --- behaviour
    horizon: int = 15
    """Imagination horizon of the actor-critic."""
    gamma: float = 0.99
    """Discount of imagined returns."""
    lambda_: float = 0.95
    """TD(lambda) parameter of imagined returns."""
    actor_entropy: float = 0.0
    """Actor entropy bonus (Dreamer-v1 / TIA have none)."""
    slow_critic_every: int = 1
    """Updates between copies of the value network into its bootstrap copy (Dreamer-v1 bootstraps
    on the current value network: 1)."""
    expl_noise: float = 0.3
    """Std of the Gaussian noise added to sampled actions when acting with ``explore=True``."""

    # --- schedule (environment steps)
    batch_size: int = 50
    """Sequences per update batch."""
    seq_len: int = 50
    """Steps per sequence."""
    prefill_steps: int = 5000
    """Environment steps of uniformly random actions collected before the first update."""
    pretrain_steps: int = 100
    """Updates done at the first training point, right after the prefill."""
    train_every: int = 1000
    """Environment steps between training points."""
    train_steps: int = 100
    """Updates per training point."""
    total_steps: int = 1_000_000
    """Environment steps of a full training run (the published default; collectors may stop early)."""
    eval_every: int = 5000
    """Environment steps between evaluations (the published code evaluates every 5000)."""
    eval_episodes: int = 1
    """Episodes per evaluation, acting with ``explore=False`` (1 in the published code)."""

    # --- hardware
    precision: str = "float32"
    """``"float32"``, or ``"bfloat16"`` / ``"float16"`` autocast on CUDA (TIA ran float16 with loss
    scaling; bfloat16 needs none). Ignored on CPU, where everything runs in float32."""

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise :class:`TIAInputError` for a setting that cannot work (the message names the field)."""
        if self.cnn_activation not in ("relu", "elu"):
            raise TIAInputError(f"cnn_activation must be 'relu' or 'elu', got {self.cnn_activation!r}")
        if self.cell not in ("gru", "dreamerv2"):
            raise TIAInputError(f"cell must be 'gru' or 'dreamerv2', got {self.cell!r}")
        for name in ("cnn_depth", "distractor_cnn_depth", "deter", "stoch", "distractor_deter",
                     "distractor_stoch", "hidden", "units", "reward_layers", "distractor_reward_layers",
                     "actor_layers", "critic_layers", "horizon", "batch_size", "seq_len", "train_every",
                     "eval_every", "eval_episodes", "slow_critic_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("distractor_reward_steps", "prefill_steps", "pretrain_steps", "train_steps",
                     "total_steps"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("model_lr", "actor_lr", "critic_lr", "distractor_reward_lr", "eps", "clip",
                     "actor_init_std", "min_std"):
            if not getattr(self, name) > 0:
                raise TIAInputError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("free_nats", "kl_scale", "distractor_kl_scale", "reward_scale",
                     "distractor_image_scale", "adversarial_scale", "expl_noise", "actor_entropy"):
            if not getattr(self, name) >= 0:
                raise TIAInputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("gamma", "lambda_"):
            if not 0 <= getattr(self, name) <= 1:
                raise TIAInputError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.precision not in ("float32", "bfloat16"):
            # TIA steps its branches with Optimizer.apply_gradients, which takes no fp16 loss scaling
            raise TIAInputError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.kl_balance is not None and not 0 < self.kl_balance < 1:
            raise TIAInputError(f"kl_balance must be None or lie in (0, 1), got {self.kl_balance!r}")

    @classmethod
    def smoke(cls) -> "TIAConfig":
        """Tiny networks and a short schedule: a whole ``generate`` run on 2 CPU cores in minutes."""
        return cls(
            cnn_depth=4, distractor_cnn_depth=4, deter=16, stoch=4, distractor_deter=16,
            distractor_stoch=4, hidden=16, units=16, actor_layers=2, critic_layers=2,
            distractor_reward_steps=2, horizon=3, batch_size=4, seq_len=8, prefill_steps=1000,
            pretrain_steps=2, train_every=500, train_steps=2, total_steps=3000, eval_every=2000,
            eval_episodes=1,
        )

    @classmethod
    def paper(cls, task: str) -> "TIAConfig":
        """The published settings for ``task`` (one of ``lqv_d4rl.tasks.TASKS``)."""
        get_task(task)
        return cls(adversarial_scale=ADVERSARIAL_SCALES[task])

    def behavior_config(self) -> BehaviorConfig:
        """The Dreamer-v1 actor-critic settings (tanh-Normal actor, value bootstraps on itself)."""
        return BehaviorConfig.from_config(self, actor_dist="tanh_normal", actor_grad="dynamics")


def _check_int(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TIAInputError(f"{name} must be an integer >= {minimum}, got {value!r}")


@contextlib.contextmanager
def forked_torch_rng(seed, device):
    """Run the body with the global torch RNG (CPU, and ``device`` if it is a GPU) seeded with
    ``seed``, then restore the previous RNG state.

    The networks sample latents and actions from the global RNG; this makes those draws a function
    of the agent's own seeds without disturbing anyone else's random numbers.
    """
    device = torch.device(device)
    index = None
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[] if index is None else [index]):
        torch.random.default_generator.manual_seed(seed)
        if index is not None:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def seeded_torch_rng(generator, device):
    """:func:`forked_torch_rng` with a fresh seed drawn from ``generator`` (advancing it)."""
    return forked_torch_rng(int(torch.randint(0, 2**62, (), generator=generator)), device)


class TIAAgent(nn.Module):
    """A TIA agent: two-branch world model, distractor reward head, actor and value.

    Args:
        config: a :class:`TIAConfig`.
        action_dim: size of the action vector (actions live in [-1, 1]).
        device: torch device of the networks.
        seed: seeds initialization and the agent's acting and updating generators.
    """

    def __init__(self, config: TIAConfig, action_dim: int, *, device="cpu", seed=0):
        super().__init__()
        if not isinstance(config, TIAConfig):
            raise TypeError(f"config must be a TIAConfig, got {type(config).__name__}")
        if int(action_dim) < 1:
            raise TIAInputError(f"action_dim must be a positive integer, got {action_dim}")
        self.config = config
        self.action_dim = int(action_dim)
        self.seed = int(seed)
        self.device = torch.device(device)
        with forked_torch_rng(self.seed, "cpu"):  # networks are built on the CPU, then moved
            self.world_model = TIAWorldModel(config, self.action_dim).to(self.device)
            self.behavior = ActorCritic(self.world_model.task_rssm.feature_dim, self.action_dim,
                                        config.behavior_config(), device=self.device)
        # ActorCritic builds the actor with ActionHead's tanh-Normal defaults; its forward pass
        # reads init_std, so setting it here applies TIA's value.
        self.behavior.actor.init_std = config.actor_init_std
        self._make_optimizers()
        self.act_generator = torch.Generator().manual_seed(self.seed * 2 + 1)
        self.update_generator = torch.Generator().manual_seed(self.seed * 2 + 2)
        self.updates = 0

    def _make_optimizers(self):
        cfg, model = self.config, self.world_model
        options = dict(eps=cfg.eps, clip=cfg.clip, precision=cfg.precision, device=self.device)
        self.model_optimizers = {
            "task": Optimizer("task", model.task_parameters(), cfg.model_lr, **options),
            "distractor": Optimizer("distractor", model.distractor_parameters(), cfg.model_lr, **options),
            "decoder": Optimizer("decoder", model.decoder_parameters(), cfg.model_lr, **options),
        }
        self.distractor_reward_optimizer = Optimizer(
            "distractor_reward", model.distractor_reward_head, cfg.distractor_reward_lr, **options
        )

    # ------------------------------------------------------------------------------ acting

    def initial_state(self, batch_size: int):
        """Recurrent acting state of ``batch_size`` environments: task latent and previous action.

        A dict ``{"latent": state dict of (N, ...) tensors, "action": (N, A) tensor}``; pass it back
        to :meth:`act` unchanged.
        """
        return {
            "latent": self.world_model.task_rssm.initial(batch_size, self.device),
            "action": torch.zeros(batch_size, self.action_dim, device=self.device),
        }

    @torch.no_grad()
    def act(self, obs, state, is_first, *, explore: bool):
        """Actions for a batch of observations; returns ``(actions (N, A) float32 in [-1, 1], state)``.

        Args:
            obs: ``(N, 64, 64, 3)`` uint8 images.
            state: from :meth:`initial_state` or the previous call (``None`` = initial state).
            is_first: ``(N,)`` bool, true where an episode starts (that environment's state resets).
            explore: sample from the actor and add Gaussian noise of std ``expl_noise`` (clipped to
                [-1, 1]), as during data collection; ``False`` takes the actor's mode (evaluation).

        The task posterior is sampled in both modes, as in Dreamer-v1; all draws come from the
        agent's acting generator, so the same seed and inputs give the same actions.
        """
        images = self._check_observations(obs)
        count = images.shape[0]
        state = self.initial_state(count) if state is None else state
        first = np.asarray(is_first, dtype=bool).reshape(-1)
        if first.shape != (count,):
            raise TIAInputError(f"is_first must hold one flag per observation ({count}), got {first.shape}")
        first = torch.as_tensor(first, device=self.device)
        rssm = self.world_model.task_rssm
        with seeded_torch_rng(self.act_generator, self.device), autocast(self.device, self.config.precision):
            embed = self.world_model.task_encoder(images)
            latent, _ = rssm.obs_step(state["latent"], state["action"], embed, first)
            policy = self.behavior.actor(rssm.features(latent))
            action = policy.sample() if explore else policy.mode
            if explore and self.config.expl_noise > 0:
                action = action + self.config.expl_noise * torch.randn_like(action)
            action = action.float().clamp(-1.0, 1.0)
        return action.cpu().numpy().astype(np.float32), {"latent": detach_states(latent), "action": action}

    def _check_observations(self, obs):
        images = np.asarray(obs)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise TIAInputError(
                f"act needs uint8 observations of shape (N, 64, 64, 3), got {images.dtype} "
                f"{images.shape}; stack one 64x64 RGB frame per environment"
            )
        return torch.from_numpy(images).to(self.device)

    # ------------------------------------------------------------------------------ learning

    def update(self, batch: dict) -> dict:
        """One TIA update on a batch of sequences; returns metrics as 0-dim float32 tensors on the
        agent's device.

        In order: observe both branches; fit the distractor reward head on stop-gradient distractor
        features; one backward pass of both branch losses, each parameter group stepped by its own
        optimizer; then an actor and a value update by imagination from the task posteriors.
        """
        data = self.to_tensors(batch)
        model = self.world_model
        with seeded_torch_rng(self.update_generator, self.device), autocast(self.device, self.config.precision):
            observed = model.observe(data)
            fit_loss = model.fit_distractor_reward_head(
                observed["distractor_features"], data["reward"],
                self.distractor_reward_optimizer, self.config.distractor_reward_steps,
            )
            objective, metrics = model.losses(data, observed)
            metrics.update(self._step_world_model(objective))
            metrics["distractor_reward_fit_loss"] = fit_loss
            start = flatten_states(detach_states(observed["task_post"]))
            metrics.update(self.behavior.train_step(start, model.task_rssm.imagine, self._imagined_reward))
        self.updates += 1
        # tensors, not floats: reading them here would wait for the GPU at every update; the
        # training loop's MetricMeter reads them back once per logged row
        return {name: torch.as_tensor(value, dtype=torch.float32, device=self.device).detach().reshape(())
                for name, value in metrics.items()}

    def _step_world_model(self, objective):
        """Compute all world-model gradients in one backward pass, then step each group's optimizer.

        Each optimizer clips its own group's gradient, as the published code does.
        """
        parameters = [p for optimizer in self.model_optimizers.values() for p in optimizer.parameters]
        gradients = torch.autograd.grad(objective, parameters, allow_unused=True)
        by_parameter = dict(zip(map(id, parameters), gradients))
        metrics = {}
        for optimizer in self.model_optimizers.values():
            metrics.update(optimizer.apply_gradients([by_parameter[id(p)] for p in optimizer.parameters]))
        return metrics

    def _imagined_reward(self, imagination):
        """Task reward head's mean at the imagined states 1..H: ``(H, N)``."""
        return self.world_model.reward_head(imagination.features[1:]).mean

    def to_tensors(self, batch):
        """The batch keys TIA uses as tensors on the agent's device, after checking their shapes."""
        required = ("image", "action", "reward", "is_first")
        missing = [key for key in required if key not in batch]
        if missing:
            raise TIAInputError(f"TIA batch lacks {missing}; a sequence batch needs {list(required)}")
        tensors = {key: torch.as_tensor(np.asarray(batch[key])) if not torch.is_tensor(batch[key]) else batch[key]
                   for key in required}
        image, action = tensors["image"], tensors["action"]
        if image.dtype != torch.uint8 or image.dim() != 5 or tuple(image.shape[2:]) != IMAGE_SHAPE:
            raise TIAInputError(
                f"batch image must be uint8 (B, T, 64, 64, 3), got {image.dtype} {tuple(image.shape)}"
            )
        expected = (*image.shape[:2], self.action_dim)
        if tuple(action.shape) != expected:
            raise TIAInputError(f"batch action must have shape {expected}, got {tuple(action.shape)}")
        for key in ("reward", "is_first"):
            if tuple(tensors[key].shape) != tuple(image.shape[:2]):
                raise TIAInputError(
                    f"batch {key} must have shape {tuple(image.shape[:2])}, got {tuple(tensors[key].shape)}"
                )
        return {
            "image": image.to(self.device),
            "action": action.to(self.device, torch.float32),
            "reward": tensors["reward"].to(self.device, torch.float32),
            "is_first": tensors["is_first"].to(self.device, torch.bool),
        }

    # ------------------------------------------------------------------------------ previews

    def reconstruct(self, batch):
        """Posterior reconstructions of a batch, as uint8 images ``(B, T, 64, 64, 3)`` for previews.

        Keys: ``truth`` (the input), ``joint`` (blended image), ``task`` and ``distractor`` (each
        branch's mean in the joint decoding), ``distractor_only`` (the distractor's own decoder) and
        ``mask`` (the task-branch weight m, gray). Uses a fixed seed, not the agent's generators.
        """
        return self.decompose(batch)[0]

    @torch.no_grad()
    def decompose(self, batch):
        """What the world model makes of a batch, from one posterior pass: ``(images, rewards)``.

        ``images`` is :meth:`reconstruct`'s dict; ``rewards`` holds float32 ``(B, T)`` arrays of the
        reward each branch reads: ``task`` (the reward head) and ``distractor`` (the adversary's
        distractor reward head). Uses a fixed seed, not the agent's generators.
        """
        data = self.to_tensors(batch)
        model = self.world_model
        with forked_torch_rng(0, self.device), autocast(self.device, self.config.precision):
            observed = model.observe(data)
            joint = model.decode_joint(observed["task_features"], observed["distractor_features"])
            distractor_only = model.distractor_decoder(observed["distractor_features"])
            rewards = {"task": model.reward_head(observed["task_features"]).mean,
                       "distractor": model.fixed_head_reward(observed["distractor_features"]).mean}
        images = {
            "truth": preprocess_image(data["image"]),
            "joint": joint.mean,
            "task": joint.endo_mean,
            "distractor": joint.exo_mean,
            "distractor_only": distractor_only,
            "mask": joint.mask.expand(*joint.mask.shape[:-1], 3) - 0.5,
        }
        return ({name: _to_pixels(image) for name, image in images.items()},
                {name: reward.float().cpu().numpy() for name, reward in rewards.items()})

    # ------------------------------------------------------------------------------ checkpoints

    def save(self, path):
        """Write config, networks, optimizers, generators and counters to ``path`` (torch format).

        The file is written under a temporary name and renamed, so a crash never leaves half a
        checkpoint behind.
        """
        path = Path(path)
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": dataclasses.asdict(self.config),
            "action_dim": self.action_dim,
            "seed": self.seed,
            "networks": self.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self._optimizers().items()},
            "generators": {"act": self.act_generator.get_state(), "update": self.update_generator.get_state()},
            "updates": self.updates,
            "behavior_updates": self.behavior.updates,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, temporary)
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, path, *, device="cpu") -> "TIAAgent":
        """An agent restored from :meth:`save`; it acts and trains on exactly as the saved one would."""
        path = Path(path)
        if not path.is_file():
            raise TIAInputError(f"no TIA checkpoint at {path}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for a truncated or foreign file
            raise TIAInputError(f"{path} is not a readable TIA checkpoint ({error})") from error
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise TIAInputError(f"{path} is not a TIA checkpoint written by TIAAgent.save")
        known = {field.name for field in dataclasses.fields(TIAConfig)}
        saved = {"cell": "dreamerv2", **checkpoint["config"]}  # older checkpoints: DreamerV2's cell
        if saved["cell"] == "dreamerv2" and checkpoint.get("version", 1) < 2:
            raise TIAInputError(
                f"{path} was written before the dreamerv2 GRU cell got its bias (checkpoint "
                f"version {checkpoint.get('version', 1)}, this lqv-d4rl reads version "
                f"{CHECKPOINT_VERSION}); train it again (TIA's default cell 'gru' is unaffected)")
        config = TIAConfig(**{key: value for key, value in saved.items() if key in known})
        agent = cls(config, checkpoint["action_dim"], device=device, seed=checkpoint["seed"])
        agent.load_state_dict(checkpoint["networks"])
        for name, optimizer in agent._optimizers().items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        agent.act_generator.set_state(checkpoint["generators"]["act"])
        agent.update_generator.set_state(checkpoint["generators"]["update"])
        agent.updates = checkpoint["updates"]
        agent.behavior.updates = checkpoint["behavior_updates"]
        return agent

    def _optimizers(self):
        return {
            **self.model_optimizers,
            "distractor_reward": self.distractor_reward_optimizer,
            "actor": self.behavior.actor_opt,
            "critic": self.behavior.critic_opt,
        }


def _to_pixels(image):
    """Normalized image tensor (``x / 255 - 0.5``) -> uint8 numpy array."""
    pixels = ((image.float() + 0.5) * 255.0).round().clamp(0, 255)
    return pixels.to(torch.uint8).cpu().numpy()


def synthetic_batch(config, action_dim, *, batch_size=None, seq_len=None, seed=0):
    """A random batch of sequences in the sampler's layout, for benchmarks and smoke checks."""
    rng = np.random.default_rng(seed)
    batch = batch_size or config.batch_size
    length = seq_len or config.seq_len
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    return {
        "image": rng.integers(0, 256, (batch, length, *IMAGE_SHAPE), dtype=np.uint8),
        "action": rng.uniform(-1, 1, (batch, length, action_dim)).astype(np.float32),
        "reward": rng.uniform(0, 1, (batch, length)).astype(np.float32),
        "discount": np.ones((batch, length), np.float32),
        "is_first": is_first,
    }


def benchmark_update(config, steps=1, *, action_dim=6, device="cpu", seed=0, warmup=1):
    """Time ``steps`` TIA updates on a synthetic batch of ``config.batch_size x config.seq_len``.

    Returns ``{"steps_per_s", "seconds_per_update", "cpu_seconds_per_update", "batch_size",
    "seq_len", "device"}``; ``warmup`` untimed updates run first. CPU seconds (all threads of this
    process) are the fairer figure on a shared machine, where wall time depends on the load.
    """
    agent = TIAAgent(config, action_dim, device=device, seed=seed)
    batch = synthetic_batch(config, action_dim, seed=seed)
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        agent.update(batch)
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        agent.update(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - wall) / max(steps, 1)
    return {"steps_per_s": 1.0 / seconds, "seconds_per_update": seconds,
            "cpu_seconds_per_update": (time.process_time() - cpu) / max(steps, 1),
            "batch_size": config.batch_size, "seq_len": config.seq_len, "device": str(device)}
