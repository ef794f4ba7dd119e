"""InfoGating: behaviour cloning on an information-gated, contrastive multi-step inverse-dynamics
representation (Tomar, Islam, Taylor, Levine, Bachman, NeurIPS 2023; the offline version that the
SeMOPO paper compares with).

Re-implemented from the description in ``reference/baselines.md`` section 5 (the paper's abstract
and figures, and the facts of the first author's offline code, which has no licence: no code was
copied). One update on a batch of pairs (o_t, a_t, o_{t+k}), k uniform in [1, 14]:

1. random shifts (pad 4), independently on o_t and o_{t+k};
2. a small U-Net gives one mask per stacked frame, ``m = ReLU(tanh(unet(x)))`` (during the first
   500 updates its output is perturbed with clipped noise first); the gated input is ``m * x`` on
   the 0-255 scale (hidden pixels become 0, i.e. -0.5 after the encoder's scaling), and a random
   half of o_t's and of o_{t+k}'s batch is left unmasked;
3. an encoder (Conv 6/6, 1x1, 3x3, 4/2, then Linear + LayerNorm + Tanh to 256) embeds both; an
   energy model E(z_t, z_{t+k}, a) scores the true a_t against 256 uniform random actions, and the
   contrastive loss is the cross-entropy of ``softmax(-E)`` on the true action;
4. warm-up (the first 2,500 updates): the encoder sees the gated input detached, and the U-Net is
   trained by ``-0.1 mean(m)`` alone (the mask opens); after it, the U-Net is trained by the
   inverse loss through the gated input plus ``0.1 mean(m) + 1e-3 mean(m^2)``;
5. the encoder and inverse model, and the U-Net, take their Adam steps; then a BC head (MLP
   256 -> 1024 -> 1024 -> A, tanh) learns ``MSE(a_sampled, a_t)`` on the detached features of the
   gated o_t, re-encoded by the encoder *after* its step (the author's ``update`` calls
   ``self.encoder(mask_obs).detach()`` after ``encoder_opt.step()``); the encoder is trained only
   by the inverse loss.

The energy model's linear layers are initialized like the author's ``InfoNCE`` (``apply(
weight_init)``: orthogonal weights with gain 1, zero biases; its BatchNorm keeps PyTorch's
initialization).

Evaluation acts on the *unmasked* observation: ``head(encoder(o))``, deterministic mean.

    lqv-d4rl train infogating cheetah_run-medium --preset paper --device cuda
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lqv_d4rl.algorithms import Algorithm, ConfigError

from .config_checks import non_negative, optional_positive_ints, positive, positive_ints
from .core import (
    Actor, FeatureTrunk, ScaledInputConv, conv_input, conv_output_dim, flatten_channels_last,
    normalize_frames, orthogonal_init, random_shift, sample_clipped,
)
from .model_free import (
    RESUMABLE_FIELDS, SMOKE, ActingNetwork, AgentBase, ModelFreeConfig, load_policy,
    train_model_free,
)


@dataclass
class InfoGatingConfig(ModelFreeConfig):
    """InfoGating's offline version (defaults: the first author's offline code, ``cfgs/algo/
    infogating.yaml`` on top of V-D4RL's drqbc configs; facts in ``reference/baselines.md`` sec. 5).
    The shared fields are those of :class:`baselines.model_free.ModelFreeConfig`."""

    encoder_channels: int = 128
    """Channels of the InfoGating encoder's first three convolutions; the last has twice as many
    (the code: Conv(9->128, 6, s6), 1x1 128, 3x3 128, Conv(128->256, 4, s2))."""
    feature_dim: int = 256
    """Size of the encoder's features (Linear + LayerNorm + Tanh), which the inverse model and the
    BC head read (the code's ``feature_dim: 256``)."""
    encoder_lr: float = 3e-4
    """Adam learning rate of the encoder and the inverse model (one optimizer; 3e-4)."""
    mask_lr: float = 3e-4
    """Adam learning rate of the gating U-Net (3e-4)."""
    mask_filters: int = 32
    """Channels of the U-Net's first blocks; its down path has [f, f, 2f, 2f, 2f] (the code: U-Net of
    applied-ai-lab/genesis, ``filter_start 32``, GroupNorm with 8 groups)."""
    mask_blocks: int | None = None
    """U-Net blocks; None computes ``int(log2(image_size) - 1)`` as the code does (5 at 64 and
    84 px)."""
    mask_bottleneck: int = 128
    """Width of the U-Net's bottleneck MLP (flattened features -> 128 -> 128 -> back)."""
    inverse_units: int = 256
    """Hidden units of the energy model Linear(2 * feature_dim + A -> units, no bias) + BatchNorm +
    ReLU + Linear(units -> 1)."""
    negatives: int = 256
    """Uniform random actions scored against the true action per sample (256)."""
    max_gap: int = 14
    """Largest gap k between o_t and o_{t+k}; k is uniform in [1, min(max_gap, steps to the episode
    end)] (the code: k ~ randint(1, 15), clipped at the episode end)."""
    warmup_updates: int = 2500
    """Updates of the warm-up, during which the mask only opens (the code: loop steps < 5000)."""
    mask_penalty: float = 0.1
    """Weight of mean(m) in the mask penalty (the code's ``lam: 0.1``); the warm-up uses its
    negative."""
    mask_square_penalty: float = 1e-3
    """Weight of mean(m^2) in the mask penalty after the warm-up (1e-3)."""
    unmasked_fraction: float = 0.5
    """Share of each batch (o_t and o_{t+k} drawn separately) that the encoder sees unmasked (0.5)."""
    mask_noise_updates: int = 500
    """Updates during which the U-Net's output is perturbed before the mask is formed (the code:
    loop steps <= 1000, i.e. its first 501 updates)."""
    mask_noise_std: float = 0.5
    """Std of that perturbation (the code's TruncatedNormal(mu, 0.5))."""
    mask_noise_clip: float = 0.3
    """Clip of that perturbation (0.3); the perturbed value is clamped to +-(1 - 1e-6) like a
    sampled action, with a straight-through gradient."""
    bc_reencode: bool = True
    """The BC head reads the gated o_t re-encoded by the encoder after the update's encoder step,
    as the author's code does (``self.encoder(mask_obs).detach()`` after ``encoder_opt.step()``).
    False reuses the features of the update's forward pass, from before the step (one encoder
    pass fewer per update)."""

    def __post_init__(self):
        super().__post_init__()
        positive(self, "encoder_lr", "mask_lr")
        positive_ints(self, "mask_filters", "mask_bottleneck", "inverse_units", "negatives",
                      "max_gap")
        optional_positive_ints(self, "mask_blocks")
        non_negative(self, "warmup_updates", "mask_penalty", "mask_square_penalty",
                     "mask_noise_updates", "mask_noise_std", "mask_noise_clip")
        if not 0 <= self.unmasked_fraction <= 1:
            raise ConfigError(f"unmasked_fraction must lie in [0, 1], got {self.unmasked_fraction!r}")
        if self.blocks < 2 or self.image_size // 2 ** (self.blocks - 1) < 1:
            raise ConfigError(f"mask_blocks must be at least 2 and leave at least one pixel "
                              f"after {self.blocks - 1} halvings of {self.image_size} px")

    @property
    def blocks(self):
        """Number of U-Net blocks in use."""
        return self.mask_blocks or int(math.log2(self.image_size) - 1)


# ---------------------------------------------------------------------------------- networks


class ConvBlock(nn.Sequential):
    """Conv 3x3 (padding 1) + GroupNorm (8 groups, fewer for narrow layers) + ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.GroupNorm(math.gcd(8, out_channels), out_channels),
                         nn.ReLU(inplace=True))


class GatingUNet(nn.Module):
    """A U-Net from ``(B, C, H, W)`` frames (scaled to x / 255 - 0.5) to ``out_channels`` logit maps
    of the same size: conv blocks with nearest 2x downsampling between them, an MLP bottleneck on
    the flattened coarsest features, and an up path that concatenates the skips."""

    def __init__(self, in_channels, out_channels, image_size, filters=32, blocks=5,
                 bottleneck=128):
        super().__init__()
        channels = [filters, filters] + [2 * filters] * (blocks - 2)
        self.down = nn.ModuleList(ConvBlock(c_in, c_out) for c_in, c_out
                                  in zip([in_channels] + channels[:-1], channels))
        side = image_size
        for _ in range(blocks - 1):
            side //= 2
        flat = channels[-1] * side * side
        self.coarse_shape = (channels[-1], side, side)
        self.bottleneck = nn.Sequential(
            nn.Linear(flat, bottleneck), nn.ReLU(inplace=True), nn.Linear(bottleneck, bottleneck),
            nn.ReLU(inplace=True), nn.Linear(bottleneck, flat), nn.ReLU(inplace=True))
        self.up = nn.ModuleList(ConvBlock(2 * channels[i], channels[max(i - 1, 0)])
                                for i in range(blocks))
        self.out = nn.Conv2d(channels[0], out_channels, 1)
        self.to(memory_format=torch.channels_last)  # ~1.5x faster on CPU

    def forward(self, x):
        """Logits ``(B, out_channels, H, W)``."""
        skips = []
        for index, block in enumerate(self.down):
            x = block(x)
            skips.append(x)
            if index < len(self.down) - 1:
                x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        x = self.bottleneck(x.flatten(1)).view(len(x), *self.coarse_shape)
        x = x.contiguous(memory_format=torch.channels_last)
        for index in reversed(range(len(self.up))):
            x = self.up[index](torch.cat([x, skips[index]], dim=1))
            if index > 0:
                x = F.interpolate(x, size=skips[index - 1].shape[-2:], mode="nearest")
        return self.out(x)


class GatedEncoder(nn.Module):
    """InfoGating's encoder: Conv(C->ch, 6, s6), Conv(ch->ch, 1), Conv(ch->ch, 3),
    Conv(ch->2ch, 4, s2), ReLU after each, flattened (2,304 at 64 px; in (H, W, C) order, see
    :mod:`baselines.core`), then Linear + LayerNorm + Tanh to ``feature_dim``. Takes 0-255
    frames (uint8, or gated floats)."""

    def __init__(self, in_channels, image_size, channels=128, feature_dim=256):
        super().__init__()
        self.convnet = nn.Sequential(
            ScaledInputConv(in_channels, channels, 6, stride=6), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2 * channels, 4, stride=2), nn.ReLU(inplace=True))
        self.repr_dim = conv_output_dim(self.convnet, in_channels, image_size)
        self.trunk = FeatureTrunk(self.repr_dim, feature_dim)
        self.apply(orthogonal_init)
        self.to(memory_format=torch.channels_last)

    def forward(self, frames):
        """``(B, C, H, W)`` 0-255 frames -> ``(B, feature_dim)``."""
        return self.trunk(flatten_channels_last(self.convnet(conv_input(frames))))


class InverseEnergyModel(nn.Module):
    """Energy E(z_t, z_{t+k}, a) = Linear(BatchNorm(W [z_t, z_{t+k}, a])) with ReLU, W without bias.

    ``W [z_t, z_{t+k}, a]`` is computed as ``W_z [z_t, z_{t+k}] + W_a a``, so the state part is
    computed once per sample rather than once per candidate action (the same numbers). W is
    initialized as one orthogonal ``(units, 2 * feature_dim + A)`` matrix (gain 1) and split into
    W_z and W_a; the output layer is orthogonal with a zero bias: the author's ``weight_init``.
    """

    def __init__(self, feature_dim, action_dim, units=256):
        super().__init__()
        self.state = nn.Linear(2 * feature_dim, units, bias=False)
        self.action = nn.Linear(action_dim, units, bias=False)
        self.norm = nn.BatchNorm1d(units)
        self.energy = nn.Linear(units, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """The author's initialization of the two linear layers (see the class docstring)."""
        weight = torch.empty(self.state.out_features,
                             self.state.in_features + self.action.in_features)
        nn.init.orthogonal_(weight)
        self.state.weight.copy_(weight[:, :self.state.in_features])
        self.action.weight.copy_(weight[:, self.state.in_features:])
        orthogonal_init(self.energy)

    def forward(self, z_t, z_future, actions):
        """Energies ``(B, N)`` of ``actions`` ``(B, N, A)``."""
        hidden = self.state(torch.cat([z_t, z_future], dim=-1))[:, None] + self.action(actions)
        batch, count, units = hidden.shape
        hidden = F.relu(self.norm(hidden.reshape(batch * count, units)))
        return self.energy(hidden).reshape(batch, count)


# ---------------------------------------------------------------------------------- losses


def contrastive_inverse_loss(energies):
    """Cross-entropy of ``softmax(-energies)`` with the true action in column 0."""
    target = torch.zeros(len(energies), dtype=torch.long, device=energies.device)
    return F.cross_entropy(-energies, target)


def mask_penalty(masks, weight, square_weight):
    """``weight * mean(m) + square_weight * mean(m^2)`` over all masks."""
    return weight * masks.mean() + square_weight * masks.pow(2).mean()


def unmasked_rows(batch_size, fraction, generator, device):
    """A boolean ``(B,)`` tensor with ``round(fraction * B)`` randomly placed True entries."""
    chosen = torch.randperm(batch_size, generator=generator, device=device)
    rows = torch.zeros(batch_size, dtype=torch.bool, device=device)
    rows[chosen[:round(fraction * batch_size)]] = True
    return rows


# ---------------------------------------------------------------------------------- agent


class InfoGatingAgent(AgentBase):
    """Gating U-Net, encoder, inverse energy model and BC head, with three Adam optimizers."""

    def __init__(self, action_dim, config, device):
        super().__init__(action_dim, config, device)
        channels = 3 * config.frame_stack
        self.gating = GatingUNet(channels, config.frame_stack, config.image_size,
                                 config.mask_filters, config.blocks,
                                 config.mask_bottleneck).to(device)
        self.encoder = GatedEncoder(channels, config.image_size, config.encoder_channels,
                                    config.feature_dim).to(device)
        self.inverse = InverseEnergyModel(config.feature_dim, action_dim,
                                          config.inverse_units).to(device)
        self.actor = Actor(config.feature_dim, action_dim, units=config.units,
                           layers=config.actor_layers, trunk=False).to(device)
        self.adam("encoder", [*self.encoder.parameters(), *self.inverse.parameters()],
                  config.encoder_lr)
        self.adam("mask", self.gating.parameters(), config.mask_lr)
        self.adam("actor", self.actor.parameters(), config.actor_lr)

    def masks(self, frames, generator):
        """One mask per stacked frame, ``(B, frame_stack, H, W)`` in [0, 1)."""
        config = self.config
        logits = self.gating(normalize_frames(frames)).float()
        if self.updates < config.mask_noise_updates:
            logits = sample_clipped(logits, config.mask_noise_std, config.mask_noise_clip,
                                    generator)
        return F.relu(torch.tanh(logits))

    def update(self, batch, generator):
        """One InfoGating update on ``batch``: the representation step, then the BC step on the
        stepped encoder's features; returns its metrics (tensors)."""
        losses, gated, metrics = self.losses(batch, generator)
        self._step(("encoder", "mask"), losses["inverse"] + losses["mask"])
        bc = self.bc_loss(gated, batch, generator)
        self._step(("actor",), bc)
        metrics["bc_loss"] = bc.detach()
        self.updates += 1
        return metrics

    def _step(self, names, loss):
        """One step of the optimizers ``names`` on ``loss``."""
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.optimizers[name].step()

    def bc_loss(self, gated, batch, generator):
        """``MSE(a_sampled, a_t)`` of the BC head on the gated o_t of :meth:`losses`: re-encoded by
        the current encoder (``bc_reencode``, after the update's encoder step) or the features of
        that forward pass. Its gradient reaches only the head."""
        if self.config.bc_reencode:
            with torch.no_grad(), self.autocast():
                features = self.encoder(gated["inputs"]).float()
        else:
            features = gated["features"]
        with self.autocast():
            mean = self.actor(features).float()
        action = sample_clipped(mean, self.noise_std(), self.config.std_clip, generator)
        return F.mse_loss(action, batch["action"])

    def losses(self, batch, generator):
        """``({"inverse", "mask"}: loss tensors, gated, metrics)`` of one update's representation
        step, with ``gated = {"inputs": the encoder's input for o_t (gated, or unmasked for half
        the batch), "features": its features, detached}`` for :meth:`bc_loss`. Gradients are
        routed by construction: the mask penalty reaches only the U-Net, and the inverse loss
        reaches the U-Net only after the warm-up."""
        config = self.config
        count = len(batch["obs"])
        both = torch.cat([random_shift(batch["obs"], config.augment_pad, generator),
                          random_shift(batch["future_obs"], config.augment_pad, generator)])
        frames = conv_input(both)
        warm = self.updates < config.warmup_updates
        with self.autocast():
            masks = self.masks(frames, generator)
            gated = frames * masks.repeat_interleave(3, dim=1)
            unmasked = torch.cat([unmasked_rows(count, config.unmasked_fraction, generator,
                                                frames.device) for _ in range(2)])
            inputs = torch.where(unmasked[:, None, None, None], frames, gated)
            features = self.encoder(inputs.detach() if warm else inputs).float()
            z_t, z_future = features[:count], features[count:]
            negatives = torch.rand((count, config.negatives, self.action_dim),
                                   generator=generator, device=frames.device) * 2 - 1
            candidates = torch.cat([batch["action"][:, None], negatives], dim=1)
            energies = self.inverse(z_t, z_future, candidates).float()
        losses = {
            "inverse": contrastive_inverse_loss(energies),
            "mask": (-config.mask_penalty * masks.mean() if warm else
                     mask_penalty(masks, config.mask_penalty, config.mask_square_penalty)),
        }
        gated = {"inputs": inputs[:count].detach(), "features": z_t.detach()}
        metrics = {"inverse_loss": losses["inverse"].detach(),
                   "mask_penalty": losses["mask"].detach(), "mask_mean": masks.detach().mean(),
                   "inverse_accuracy": (energies.detach().argmin(dim=1) == 0).float().mean()}
        return losses, gated, metrics

    def acting_network(self):
        """Encoder + BC head on the unmasked observation."""
        return ActingNetwork(self.encoder, self.actor)


def train(dataset, config, run, device="cpu"):
    """Train InfoGating on ``dataset`` in the run folder ``run`` (``ALGORITHM.train``)."""
    return train_model_free(dataset, config, run, device, InfoGatingAgent,
                            sampler_options={"nstep": 0, "max_gap": config.max_gap},
                            postfix=("inverse_loss", "bc_loss", "mask_mean"))


def load(run_dir, device="cpu"):
    """The evaluation policy of the InfoGating run in ``run_dir``."""
    return load_policy(run_dir, InfoGatingAgent, InfoGatingConfig, "infogating", device)


PRESETS = {
    "paper": {},
    "smoke": {**SMOKE, "mask_filters": 8, "mask_bottleneck": 16, "inverse_units": 16,
              "negatives": 16, "warmup_updates": 20, "mask_noise_updates": 5},
}
"""``paper``: the offline code's settings (550k updates, 10 evaluation episodes); ``smoke``: tiny."""

ALGORITHM = Algorithm(
    name="infogating",
    config_class=InfoGatingConfig,
    presets=PRESETS,
    train=train,
    load=load,
    summary="InfoGating (Tomar et al. 2023), offline version: BC on an information-gated "
            "contrastive multi-step inverse-dynamics representation.",
    resumable_fields=RESUMABLE_FIELDS,
)
