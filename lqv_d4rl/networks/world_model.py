"""A single-branch DreamerV2 world model: encoder, RSSM, image decoder and reward head.

This is Offline DV2's model (with ``ensemble=7``) and the template that SeMOPO and TIA extend with a
second branch (see :mod:`lqv_d4rl.networks.mask`). Its loss is the negative ELBO of DreamerV2::

    loss = kl_scale * KLbalanced(post, prior)
           - image_scale * log p(o_t | s_t) - reward_scale * log p(r_t | s_t)

averaged over batch and time. A batch is a dict of ``(B, T, ...)`` arrays or tensors with the keys
``image`` (uint8, channels last), ``action``, ``reward`` and ``is_first`` (the sampler's output).

With ``WorldModelConfig(state_dim=D)`` the observations are instead vectors of D low-dimensional
states under the key ``state``, and MLPs replace the conv encoder and decoder (DreamerV2's
proprioceptive setting); the likelihood is then a unit-variance Normal over the D entries. The
learning check of this core (``benchmarks/learning.py``) trains such a model online.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lqv_d4rl.networks.conv import ConvDecoder, ConvEncoder, preprocess_image
from lqv_d4rl.networks.distributions import image_log_likelihood, unit_normal
from lqv_d4rl.networks.heads import MLP, DenseHead
from lqv_d4rl.networks.losses import kl_balanced
from lqv_d4rl.networks.optim import Optimizer, autocast
from lqv_d4rl.networks.rssm import RSSM, detach_states

BATCH_KEYS = ("image", "action", "reward", "is_first")
STATE_BATCH_KEYS = ("state", "action", "reward", "is_first")


def batch_to_tensors(batch, device, keys=BATCH_KEYS):
    """The keys a world model needs (``BATCH_KEYS``, or ``STATE_BATCH_KEYS``) as tensors on ``device``.

    ``batch`` holds numpy arrays or tensors ``(B, T, ...)``; images stay uint8, states, actions and
    rewards become float32, ``is_first`` bool. A missing key raises a ``KeyError`` that names it.
    """
    missing = [key for key in keys if key not in batch]
    if missing:
        raise KeyError(f"world-model batch lacks {missing}; it needs {list(keys)}")
    tensors = {}
    for key in keys:
        value = batch[key]
        value = value if torch.is_tensor(value) else torch.from_numpy(np.asarray(value))
        tensors[key] = value.to(device, non_blocking=True)
    for key in ("state", "action", "reward"):
        if key in tensors:
            tensors[key] = tensors[key].float()
    tensors["is_first"] = tensors["is_first"].bool()
    return tensors


@dataclass
class WorldModelConfig:
    """Settings of :class:`WorldModel`; defaults are the DreamerV2 / SeMOPO sizes.

    Attributes:
        depth: CNN channel multiplier (48 SeMOPO, 32 DreamerV2, 26 TIA).
        deter, stoch, classes, hidden: RSSM sizes; ``classes=None`` gives a Gaussian latent of
            ``stoch`` units (TIA: stoch 30), else ``stoch`` groups of ``classes`` (32 x 32).
        min_std, std_activation: Gaussian-latent std settings (see :class:`RSSM`).
        ensemble: prior heads (7 for Offline DV2 / SeMOPO / LOMPO, 1 otherwise).
        ensemble_kl: ``"sampled"`` trains the head drawn at each step (one head per step, as the
            published ensemble RSSMs draw it), ``"all"`` averages the KL over all heads.
        units, reward_layers: reward MLP (4 x 400).
        reward_stop_grad: the reward head sees stop-gradient features (SeMOPO).
        kl_balance, free_nats, free_average: see :func:`lqv_d4rl.networks.losses.kl_balanced`.
        kl_scale, image_scale, reward_scale: loss weights (``image_scale`` weighs the observation
            likelihood, images or states).
        lr, eps, clip: Adam settings (model lr 3e-4 in the released SeMOPO config, 6e-5 in its paper).
        weight_decay: DreamerV2's decoupled weight decay before each step (see :class:`Optimizer`;
            ``wd: 1e-6`` in DreamerV2's ``model_opt``; 0 turns it off).
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (mixed precision on CUDA only).
        seed: seeds the ensemble-head generator (``None``: global torch RNG).
        state_dim: ``None`` for 64x64 images (batch key ``image``, conv encoder and decoder); an
            integer for low-dimensional state vectors of that size (batch key ``state``, MLP
            encoder and decoder of ``state_layers`` x ``units``, as DreamerV2 on proprioception).
        state_layers: hidden layers of the MLP encoder and decoder (DreamerV2: 4).
        state_units: their width (``None``: ``units``; DreamerV2: 400).
    """

    depth: int = 48
    deter: int = 200
    stoch: int = 32
    classes: int | None = 32
    hidden: int = 200
    min_std: float = 0.1
    std_activation: str = "softplus"
    ensemble: int = 1
    ensemble_kl: str = "sampled"
    units: int = 400
    reward_layers: int = 4
    reward_stop_grad: bool = False
    kl_balance: float = 0.8
    free_nats: float = 1.0
    free_average: bool = True
    kl_scale: float = 1.0
    image_scale: float = 1.0
    reward_scale: float = 1.0
    lr: float = 3e-4
    eps: float = 1e-5
    clip: float = 100.0
    weight_decay: float = 0.0
    precision: str = "float32"
    seed: int | None = None
    state_dim: int | None = None
    state_layers: int = 4
    state_units: int | None = None

    ALGORITHM_FIELDS = ("depth", "deter", "stoch", "classes", "hidden", "ensemble", "units",
                        "reward_layers", "kl_balance", "free_nats", "kl_scale", "image_scale",
                        "reward_scale", "eps", "clip", "weight_decay", "precision")
    """The fields an image-based algorithm's config (SeMOPO, Offline DV2) spells the same way."""

    @classmethod
    def from_config(cls, config, **overrides):
        """The world-model settings of an algorithm's config: its ``ALGORITHM_FIELDS``, ``lr`` from
        its ``model_lr``, then ``overrides`` (e.g. ``reward_stop_grad``, ``seed``)."""
        values = {name: getattr(config, name) for name in cls.ALGORITHM_FIELDS}
        return cls(**values, lr=config.model_lr, **overrides)


class WorldModel(nn.Module):
    """Encoder + RSSM + image decoder + reward head, trained on sequences of the offline dataset.

    Args:
        action_dim: size of the action vector.
        config: a :class:`WorldModelConfig`.
        device: where the networks live.
    """

    def __init__(self, action_dim, config=None, device="cpu"):
        super().__init__()
        cfg = self.config = config or WorldModelConfig()
        if cfg.ensemble_kl not in ("sampled", "all"):
            raise ValueError(f"ensemble_kl must be 'sampled' or 'all', got {cfg.ensemble_kl!r}")
        self.device = torch.device(device)
        self.observation_key = "image" if cfg.state_dim is None else "state"
        if cfg.state_dim is None:
            self.encoder = ConvEncoder(cfg.depth)
        else:
            self.encoder = MLP(cfg.state_dim, None, cfg.state_layers, cfg.state_units or cfg.units)
        self.rssm = RSSM(self.encoder.output_dim, action_dim, cfg.deter, cfg.stoch, cfg.classes,
                         cfg.hidden, cfg.ensemble, cfg.min_std, seed=cfg.seed,
                         std_activation=cfg.std_activation)
        if cfg.state_dim is None:
            self.decoder = ConvDecoder(self.rssm.feature_dim, cfg.depth)
        else:
            self.decoder = MLP(self.rssm.feature_dim, cfg.state_dim, cfg.state_layers,
                               cfg.state_units or cfg.units)
        self.reward_head = DenseHead(self.rssm.feature_dim, (), "normal", cfg.reward_layers, cfg.units)
        self.to(self.device)
        self.optimizer = Optimizer("model", self, cfg.lr, cfg.eps, cfg.clip, cfg.weight_decay,
                                   precision=cfg.precision, device=self.device)

    def to_tensors(self, batch):
        """Move the batch keys the model needs onto its device (see :func:`batch_to_tensors`)."""
        keys = BATCH_KEYS if self.observation_key == "image" else STATE_BATCH_KEYS
        return batch_to_tensors(batch, self.device, keys)

    def observe(self, batch, state=None):
        """Posterior and prior states ``(B, T, ...)`` of a batch (no loss)."""
        data = self.to_tensors(batch)
        embed = self.encoder(data[self.observation_key])
        return self.rssm.observe(embed, data["action"], data["is_first"], state)

    def observation_log_prob(self, features, observation):
        """Log-likelihood of the observations under the decoder, one value per ``(B, T)`` step:
        unit-variance Normal over all pixels (images) or over the state entries (states)."""
        if self.observation_key == "image":
            return image_log_likelihood(self.decoder(features), preprocess_image(observation))
        return unit_normal(self.decoder(features), 1).log_prob(observation)

    def loss(self, batch, state=None):
        """Negative ELBO of a batch; returns ``(loss, posterior, metrics)``."""
        cfg = self.config
        data = self.to_tensors(batch)
        observation = data[self.observation_key]
        post, prior = self.rssm.observe(self.encoder(observation), data["action"], data["is_first"], state)
        if cfg.ensemble_kl == "all" and cfg.ensemble > 1:
            prior = self.rssm.head_stats(post["deter"])
        kl_loss, kl = kl_balanced(post, prior, cfg.kl_balance, cfg.free_nats, cfg.free_average)
        features = self.rssm.features(post)
        observation_ll = self.observation_log_prob(features, observation).mean()
        reward_input = features.detach() if cfg.reward_stop_grad else features
        reward_ll = self.reward_head(reward_input).log_prob(data["reward"]).mean()
        loss = cfg.kl_scale * kl_loss - cfg.image_scale * observation_ll - cfg.reward_scale * reward_ll
        metrics = {"kl": kl.mean(), f"{self.observation_key}_log_prob": observation_ll.detach(),
                   "reward_log_prob": reward_ll.detach()}
        return loss, post, metrics

    def train_step(self, batch, state=None):
        """One model update; returns ``(posterior, metrics)`` with the posterior detached.

        (Named ``train_step`` because ``nn.Module.train`` switches training mode.)
        """
        with autocast(self.device, self.config.precision):
            loss, post, metrics = self.loss(batch, state)
        metrics.update(self.optimizer.step(loss))
        return detach_states(post), metrics

    def imagine(self, policy, start, horizon, head=None):
        """Imagined rollout from ``start`` states; see :meth:`RSSM.imagine`."""
        return self.rssm.imagine(policy, start, horizon, head)

    def reward(self, imagination):
        """Predicted rewards ``(H, N)`` of an imagination: the reward head at its scored states
        (states 1..H, or 0..H-1 when ``imagination.scored == "current"``)."""
        return self.reward_head(imagination.scored_features()).mean

    def decode(self, state):
        """Image means ``(..., 64, 64, 3)`` of latent states, in normalized pixel space (state
        vectors ``(..., state_dim)`` for a state model)."""
        return self.decoder(self.rssm.features(state))
