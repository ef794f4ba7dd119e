"""Model-free baselines: updates per second at the paper's sizes, against a reference-style update.

    python benchmarks/bench_model_free.py                      # all four, CPU (and CUDA if present)
    python benchmarks/bench_model_free.py --algorithms drq_bc --rounds 5
    python benchmarks/bench_model_free.py --device cuda --steps 50

For each algorithm two implementations of the same update run in the same process, alternating in
rounds (medians over rounds are reported):

* ``ours``: ``baselines.<algorithm>`` (uint8 random-shift crops by gathering, channels_last
  convolutions with the input scaling folded into the first one, fused Adam, one critic-trunk pass
  per state for CQL's 31 actions, the energy model's state part once per sample, batches
  prefetched in a thread or gathered on the GPU);
* ``reference``: the update written the way V-D4RL's ``drqbc/`` writes it (float ``grid_sample``
  random shifts, NCHW convolutions, the 20,000-d features repeated 10x through the critic trunk for
  CQL, ``soft_update_params``, batches gathered synchronously from a V-D4RL-style numpy buffer),
  and InfoGating's as its author's code structures it (U-Net and encoder run on o_t and o_{t+k}
  separately, the energy MLP on every (state, action) row, the BC head on features re-encoded
  after the encoder's step).

They are the same updates: ``tests/test_model_free_reference.py`` runs one update of each from the
same weights, batch and random draws (:class:`Draws`) and compares the parameters.

Two figures per implementation: ``update`` (the gradient update alone, on one batch) and ``loop``
(sampling included, as in training). Updates per second are wall-clock medians; the speedup is the
ratio of the median process CPU seconds per update on a CPU (all threads counted, so the prefetch
thread's work is charged to ``ours``; CPU time barely moves when other processes load a shared
machine, wall time does) and of the median wall time on CUDA. Networks have the paper's sizes
(batch 256, frame stack 3, 64 px, hidden 1024; InfoGating's U-Net and 256 negatives); the data is
noise frames. The projected wall time of a paper-length run is 550,000 / (ours' loop updates per
second), training only (evaluation not included). On CPU the process uses ``--threads`` threads (default 1, the
project's rule for benchmarks); the prefetch thread of ``ours`` runs beside them.
"""

import argparse
import json
import math
import platform
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import bc, drq_bc, drq_cql, infogating
from baselines.replay import FrameStackBatches

MODULES = {"bc": bc, "drq_bc": drq_bc, "drq_cql": drq_cql, "infogating": infogating}
AGENTS = {"bc": bc.BCAgent, "drq_bc": drq_bc.DrQBCAgent, "drq_cql": drq_cql.DrQCQLAgent,
          "infogating": infogating.InfoGatingAgent}
ACTION_DIM = 6
PAPER_UPDATES = 550_000


# ---------------------------------------------------------------------------------- data


def noise_dataset(episodes, length, seed=0):
    """A dataset-like object of noise frames with the flat arrays samplers read."""
    rng = np.random.default_rng(seed)
    steps = episodes * length
    is_first = np.zeros(steps, bool)
    is_first[::length] = True
    return SimpleNamespace(
        images=rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32),
        rewards=rng.random(steps).astype(np.float32), discounts=np.ones(steps, np.float32),
        is_first=is_first, is_last=np.roll(is_first, -1), is_terminal=np.zeros(steps, bool),
        episode_starts=np.arange(0, steps, length), episode_lengths=np.full(episodes, length),
        returns=np.zeros(episodes), policy_ids=np.zeros(episodes), policy_steps=np.zeros(episodes))


class ReferenceReplay:
    """V-D4RL's ``EfficientReplayBuffer`` sampling, written plainly: channel-first frames, a
    uniform choice over the valid indices at every call, stacks gathered by index ranges."""

    def __init__(self, dataset, batch_size, frame_stack, nstep, gamma, max_gap=0, seed=0):
        self.frames = np.ascontiguousarray(dataset.images.transpose(0, 3, 1, 2))
        self.dataset, self.batch_size, self.frame_stack = dataset, batch_size, frame_stack
        self.nstep, self.gamma, self.max_gap = max(nstep, 1), gamma, max_gap
        self.rng = np.random.default_rng(seed)
        valid = []
        for start, length in zip(dataset.episode_starts, dataset.episode_lengths):
            valid.extend(range(start, start + length - self.nstep))
        self.valid = np.array(valid)
        self.episode_end = np.repeat(dataset.episode_starts + dataset.episode_lengths,
                                     dataset.episode_lengths)
        self.first = np.repeat(dataset.episode_starts, dataset.episode_lengths)

    def stack(self, ends):
        ranges = np.stack([np.maximum(np.arange(end - self.frame_stack + 1, end + 1), first)
                           for end, first in zip(ends, self.first[ends])])
        return self.frames[ranges].reshape(len(ends), -1, 64, 64)

    def sample(self):
        index = self.rng.choice(self.valid, size=self.batch_size)
        data = self.dataset
        rewards = data.rewards[index[:, None] + 1 + np.arange(self.nstep)]
        batch = {"obs": self.stack(index), "action": data.actions[index + 1],
                 "reward": (rewards * self.gamma ** np.arange(self.nstep)).sum(1),
                 "discount": self.gamma ** self.nstep * data.discounts[index + self.nstep],
                 "next_obs": self.stack(index + self.nstep)}
        if self.max_gap:
            limit = np.minimum(self.max_gap, self.episode_end[index] - 1 - index)
            batch["future_obs"] = self.stack(index + self.rng.integers(1, limit + 1))
        return batch


def to_torch(batch, device):
    """V-D4RL's ``utils.to_torch``."""
    return {key: torch.as_tensor(value, device=device) for key, value in batch.items()}


# ---------------------------------------------------------------------------------- reference


class Draws:
    """The random numbers of a reference update, from ``generator`` (None: the global RNG, as
    V-D4RL and the InfoGating code draw them).

    Each method draws what the reference draws at that point of an update, in the shape in which
    ``baselines``' updates draw the same numbers from their generator; a reference update given a
    generator seeded like ours therefore sees the same shifts, noise and random actions
    (``tests/test_model_free_reference.py`` relies on it).
    """

    def __init__(self, generator=None):
        self.generator = generator

    def shifts(self, count, pad, device):
        """Random-shift offsets ``(count, 2)``, x first (V-D4RL draws them as ``(n, 1, 1, 2)``)."""
        return torch.randint(0, 2 * pad + 1, (count, 2), generator=self.generator, device=device)

    def normal(self, shape, device):
        """Standard normal noise (``TruncatedNormal.sample``'s ``randn_like``)."""
        return torch.randn(shape, generator=self.generator, device=device)

    def uniform(self, shape, device):
        """U(-1, 1) actions (V-D4RL: ``uniform_(-1, 1)``; InfoGating: ``np.random.uniform``)."""
        return torch.rand(shape, generator=self.generator, device=device) * 2 - 1

    def subset(self, count, size, device):
        """``size`` distinct indices out of ``count`` (``torch.randperm(count)[:size]``)."""
        return torch.randperm(count, generator=self.generator, device=device)[:size]


class RandomShiftsAug(nn.Module):
    """DrQ-v2's augmentation: replicate pad, then ``grid_sample`` at the given integer shifts."""

    def __init__(self, pad=4):
        super().__init__()
        self.pad = pad

    def forward(self, x, shifts):
        n, _, h, _ = x.size()
        x = F.pad(x, (self.pad,) * 4, "replicate")
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0)
        shift = shifts.reshape(n, 1, 1, 2).float() * 2.0 / (h + 2 * self.pad)
        grid = base_grid.repeat(n, 1, 1, 1) + shift
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def reference_sample(mean, std, clip, draws):
    """``TruncatedNormal(mean, std).sample(clip)``."""
    eps = (draws.normal(mean.shape, mean.device) * std).clamp(-clip, clip)
    x = mean + eps
    return x - x.detach() + x.clamp(-1 + 1e-6, 1 - 1e-6).detach()


def reference_schedule(config, step):
    """V-D4RL's ``linear(start, end, duration)`` noise schedule (counted in updates)."""
    mix = min(step / config.std_decay_updates, 1.0)
    return (1.0 - mix) * config.std_start + mix * config.std_end


def reference_encoder(in_channels, channels=32):
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=2), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3), nn.ReLU(), nn.Flatten())


def reference_mlp(input_dim, output_dim, units=1024, layers=2):
    modules, width = [], input_dim
    for _ in range(layers):
        modules += [nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    return nn.Sequential(*modules, nn.Linear(width, output_dim))


def trunk(repr_dim, feature_dim=50):
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def conv_shape(convnet, channels, image_size):
    """``(C, H, W)`` of the feature maps ``convnet`` makes of one input (before flattening)."""
    with torch.no_grad():
        return tuple(convnet(torch.zeros(1, channels, image_size, image_size)).shape[1:])


def chw_columns(weight, shape):
    """A trunk weight that reads (H, W, C)-flattened features (``baselines.core``) rearranged to
    read (C, H, W)-flattened ones (V-D4RL's ``h.view(h.shape[0], -1)``)."""
    channels, height, width = shape
    return weight.reshape(len(weight), height, width, channels).permute(0, 3, 1, 2).reshape(
        len(weight), -1)


def with_chw_trunk(state, shape, key="trunk.0.weight"):
    """``state`` (a state dict) with its trunk weight from :func:`chw_columns`."""
    return {**state, key: chw_columns(state[key], shape)}


class ReferenceActor(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim=50, units=1024, layers=2,
                 with_trunk=True):
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim) if with_trunk else nn.Identity()
        self.policy = reference_mlp(feature_dim if with_trunk else repr_dim, action_dim, units,
                                    layers)

    def forward(self, obs):
        return torch.tanh(self.policy(self.trunk(obs)))


class ReferenceCritic(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim=50, units=1024, layers=2):
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.q1 = reference_mlp(feature_dim + action_dim, 1, units, layers)
        self.q2 = reference_mlp(feature_dim + action_dim, 1, units, layers)

    def forward(self, obs, action):
        h = torch.cat([self.trunk(obs), action], dim=-1)
        return self.q1(h), self.q2(h)


def soft_update_params(net, target_net, tau):
    for param, target_param in zip(net.parameters(), target_net.parameters()):
        target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)


class ReferenceDrQ:
    """V-D4RL's BCAgent / DrQV2Agent (with ``use_bc``) / CQLAgent update, written as V-D4RL writes
    it (``drqbc/bcagent.py``, ``drqv2.py``, ``cql.py``) for a config of ``baselines.bc``,
    ``drq_bc`` or ``drq_cql`` (``kind``); random numbers come from ``draws``."""

    def __init__(self, kind, config, action_dim, device, draws=None):
        self.kind, self.config, self.device, self.step = kind, config, device, 0
        self.action_dim, self.draws = action_dim, draws or Draws()
        channels = 3 * config.frame_stack
        self.encoder = reference_encoder(channels, config.encoder_channels).to(device)
        self.conv_shape = conv_shape(self.encoder[:-1], channels, config.image_size)
        repr_dim = math.prod(self.conv_shape)
        self.actor = ReferenceActor(repr_dim, action_dim, config.feature_dim, config.units,
                                    config.actor_layers).to(device)
        self.aug = RandomShiftsAug(config.augment_pad)
        # V-D4RL: one lr for all three Adams; here the encoder takes the lr of the loss that
        # trains it (the BC loss, or the critic's)
        encoder_lr = config.actor_lr if kind == "bc" else config.critic_lr
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=encoder_lr,
                                            eps=config.eps)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr,
                                          eps=config.eps)
        if kind != "bc":
            critic = lambda: ReferenceCritic(repr_dim, action_dim, config.feature_dim,  # noqa: E731
                                             config.units, config.critic_layers).to(device)
            self.critic, self.critic_target = critic(), critic()
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr,
                                               eps=config.eps)

    def copy_weights_from(self, agent):
        """Take the weights of ``agent`` (a ``baselines`` agent of the same config): the same
        modules, the trunks reading (C, H, W)-flattened features."""
        self.encoder.load_state_dict(agent.encoder.convnet.state_dict())
        self.actor.load_state_dict(with_chw_trunk(agent.actor.state_dict(), self.conv_shape))
        if self.kind != "bc":
            self.critic.load_state_dict(with_chw_trunk(agent.critic.state_dict(), self.conv_shape))
            self.critic_target.load_state_dict(
                with_chw_trunk(agent.critic_target.state_dict(), self.conv_shape))

    def std(self):
        return reference_schedule(self.config, self.step)

    def augment(self, frames):
        frames = frames.float()
        if self.config.augment_pad == 0:
            return frames
        return self.aug(frames, self.draws.shifts(len(frames), self.config.augment_pad,
                                                  frames.device))

    def update(self, batch):
        obs = self.augment(batch["obs"])
        if self.kind == "bc":
            action = reference_sample(self.actor(self.encoder(obs / 255.0 - 0.5)), self.std(),
                                      self.config.std_clip, self.draws)
            loss = F.mse_loss(action, batch["action"])
            self.encoder_opt.zero_grad(set_to_none=True)
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_opt.step()
            self.encoder_opt.step()
            self.step += 1
            return {"loss": loss}
        next_obs = self.augment(batch["next_obs"])
        obs = self.encoder(obs / 255.0 - 0.5)
        with torch.no_grad():
            next_obs = self.encoder(next_obs / 255.0 - 0.5)
        metrics = self.update_critic(obs, batch, next_obs)
        metrics.update(self.update_actor(obs.detach(), batch))
        soft_update_params(self.critic, self.critic_target, self.config.tau)
        self.step += 1
        return metrics

    def update_critic(self, obs, batch, next_obs):
        with torch.no_grad():
            next_action = reference_sample(self.actor(next_obs), self.std(), self.config.std_clip,
                                           self.draws)
            target_q = torch.min(*self.critic_target(next_obs, next_action))
            target_q = batch["reward"].float()[:, None] + batch["discount"][:, None] * target_q
        q1, q2 = self.critic(obs, batch["action"])
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        if self.kind == "drq_cql":
            loss = loss + self.cql_penalty(obs, next_obs, q1, q2)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        return {"critic_loss": loss}

    def cql_penalty(self, obs, next_obs, q1, q2):
        config = self.config
        num_random, weight, temp = (config.cql_random_actions, config.cql_weight,
                                    config.cql_temperature)
        obs = obs.unsqueeze(1).repeat(1, num_random, 1)
        next_obs = next_obs.unsqueeze(1).repeat(1, num_random, 1)
        random_actions = self.draws.uniform((q1.shape[0], num_random, self.action_dim),
                                            self.device)
        with torch.no_grad():
            curr_actions = reference_sample(self.actor(obs), self.std(), config.std_clip,
                                            self.draws)
            next_actions = reference_sample(self.actor(next_obs), self.std(), config.std_clip,
                                            self.draws)
        q1_rand, q2_rand = self.critic(obs, random_actions)
        q1_curr, q2_curr = self.critic(obs, curr_actions)
        q1_next, q2_next = self.critic(obs, next_actions)
        cat1 = torch.cat([q1_rand, q1.unsqueeze(1), q1_next, q1_curr], 1)
        cat2 = torch.cat([q2_rand, q2.unsqueeze(1), q2_next, q2_curr], 1)
        return (torch.logsumexp(cat1 / temp, dim=1).mean() * weight * temp - q1.mean() * weight
                + torch.logsumexp(cat2 / temp, dim=1).mean() * weight * temp - q2.mean() * weight)

    def update_actor(self, obs, batch):
        action = reference_sample(self.actor(obs), self.std(), self.config.std_clip, self.draws)
        q = torch.min(*self.critic(obs, action))
        if self.kind == "drq_bc":
            loss = (-q.mean() * self.config.alpha / q.detach().abs().mean()
                    + F.mse_loss(action, batch["action"]))
        else:
            loss = -q.mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return {"actor_loss": loss}


class ReferenceInfoGating:
    """The offline InfoGating update as its author's code structures it (manantomar/
    agent-centric-representations ``infogating.py`` ``update``, re-written from its facts): the
    U-Net and the encoder run on o_t and o_{t+k} separately, half of each batch is left
    unmasked, the energy MLP runs on every (state pair, candidate action) row, the encoder and
    U-Net step first, then the BC head steps on the gated o_t re-encoded by the stepped encoder.
    Draws that cannot change the update are left out (the code's unused third augmentation and
    its shuffling of the candidate actions, which the cross-entropy does not see)."""

    def __init__(self, config, action_dim, device, draws=None):
        self.config, self.device, self.step = config, device, 0
        self.draws = draws or Draws()
        channels, width = 3 * config.frame_stack, config.encoder_channels
        self.unet = infogating.GatingUNet(channels, config.frame_stack, config.image_size,
                                          config.mask_filters, config.blocks,
                                          config.mask_bottleneck).to(
            device, memory_format=torch.contiguous_format)  # plain NCHW, as PyTorch modules are
        convnet = nn.Sequential(
            nn.Conv2d(channels, width, 6, stride=6), nn.ReLU(), nn.Conv2d(width, width, 1),
            nn.ReLU(), nn.Conv2d(width, width, 3), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2), nn.ReLU())
        self.conv_shape = conv_shape(convnet, channels, config.image_size)
        self.encoder = nn.Sequential(
            *convnet, nn.Flatten(), nn.Linear(math.prod(self.conv_shape), config.feature_dim),
            nn.LayerNorm(config.feature_dim), nn.Tanh()).to(device)
        self.energy = nn.Sequential(
            nn.Linear(2 * config.feature_dim + action_dim, config.inverse_units, bias=False),
            nn.BatchNorm1d(config.inverse_units), nn.ReLU(),
            nn.Linear(config.inverse_units, 1)).to(device)
        self.policy = ReferenceActor(config.feature_dim, action_dim, units=config.units,
                                     layers=config.actor_layers, with_trunk=False).to(device)
        self.aug = RandomShiftsAug(config.augment_pad)
        def adam(parameters, lr):
            return torch.optim.Adam(parameters, lr=lr, eps=config.eps)

        self.opt = adam([*self.encoder.parameters(), *self.energy.parameters()], config.encoder_lr)
        self.unet_opt = adam(self.unet.parameters(), config.mask_lr)
        self.policy_opt = adam(self.policy.parameters(), config.actor_lr)

    def copy_weights_from(self, agent):
        """Take the weights of ``agent`` (a ``baselines.infogating`` agent of the same config)."""
        self.unet.load_state_dict(agent.gating.state_dict())
        encoder = agent.encoder.convnet.state_dict()
        head = len(self.encoder) - 3  # the Linear after the convolutions and the Flatten
        encoder.update({f"{head}.weight": chw_columns(agent.encoder.trunk[0].weight,
                                                      self.conv_shape),
                        f"{head}.bias": agent.encoder.trunk[0].bias,
                        f"{head + 1}.weight": agent.encoder.trunk[1].weight,
                        f"{head + 1}.bias": agent.encoder.trunk[1].bias})
        self.encoder.load_state_dict(encoder)
        energy = {"0.weight": torch.cat([agent.inverse.state.weight, agent.inverse.action.weight],
                                        dim=1)}
        for index, module in ((1, agent.inverse.norm), (3, agent.inverse.energy)):
            energy.update({f"{index}.{key}": value for key, value in module.state_dict().items()})
        self.energy.load_state_dict(energy)
        self.policy.load_state_dict(agent.actor.state_dict())

    def augment(self, frames):
        frames = frames.float()
        if self.config.augment_pad == 0:
            return frames
        return self.aug(frames, self.draws.shifts(len(frames), self.config.augment_pad,
                                                  frames.device))

    def encode(self, frames):
        return self.encoder(frames / 255.0 - 0.5)

    def mask(self, frames):
        logits = self.unet(frames / 255.0 - 0.5)
        if self.step < self.config.mask_noise_updates:
            logits = reference_sample(logits, self.config.mask_noise_std,
                                      self.config.mask_noise_clip, self.draws)
        return torch.relu(torch.tanh(logits))

    def gate(self, frames):
        """``(gated frames with part of the batch left unmasked, mask)``."""
        mask = self.mask(frames)
        gated = frames * mask.repeat_interleave(3, dim=1)
        rows = self.draws.subset(len(frames), int(len(frames) * self.config.unmasked_fraction),
                                 frames.device)
        gated[rows] = frames[rows]
        return gated, mask

    def inverse_loss(self, z_t, z_k, action):
        count, negatives = len(z_t), self.config.negatives
        candidates = torch.cat([action[:, None], self.draws.uniform(
            (count, negatives, action.shape[-1]), self.device)], dim=1)
        rows = torch.cat([z_t[:, None].expand(-1, negatives + 1, -1),
                          z_k[:, None].expand(-1, negatives + 1, -1), candidates], dim=-1)
        energies = self.energy(rows.reshape(count * (negatives + 1), -1)).reshape(count, -1)
        return F.cross_entropy(-energies, torch.zeros(count, dtype=torch.long, device=self.device))

    def update(self, batch):
        config = self.config
        obs, future = self.augment(batch["obs"]), self.augment(batch["future_obs"])
        gated_t, mask_t = self.gate(obs)
        gated_k, mask_k = self.gate(future)
        masks = 0.5 * (mask_t.mean() + mask_k.mean())
        squares = 0.5 * (mask_t.pow(2).mean() + mask_k.pow(2).mean())
        if self.step < config.warmup_updates:
            inverse = self.inverse_loss(self.encode(gated_t.detach()),
                                        self.encode(gated_k.detach()), batch["action"])
            loss = inverse - config.mask_penalty * masks
        else:
            inverse = self.inverse_loss(self.encode(gated_t), self.encode(gated_k),
                                        batch["action"])
            loss = inverse + config.mask_penalty * masks + config.mask_square_penalty * squares
        self.opt.zero_grad(set_to_none=True)
        self.unet_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.unet_opt.step()
        action = reference_sample(self.policy(self.encode(gated_t).detach()),
                                  reference_schedule(config, self.step), config.std_clip,
                                  self.draws)
        bc = F.mse_loss(action, batch["action"])
        self.policy_opt.zero_grad(set_to_none=True)
        bc.backward()
        self.policy_opt.step()
        self.step += 1
        return {"loss": loss, "bc_loss": bc}


# ---------------------------------------------------------------------------------- timing


def synchronize(device):
    """Wait for queued CUDA work (no-op on CPU), so that timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_updates(update, next_batch, steps, device):
    """``(wall seconds, process CPU seconds)`` per call of ``update(next_batch())``, over ``steps``
    calls (CPU time counts every thread of the process, the prefetch thread included)."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        metrics = update(next_batch())
    float(next(iter(metrics.values())).detach())
    synchronize(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def implementations(name, dataset, device):
    """``{"ours": (update, fixed batch, stream), "reference": (...)}`` for algorithm ``name``."""
    config = MODULES[name].ALGORITHM.config("paper")
    torch.manual_seed(0)
    agent = AGENTS[name](ACTION_DIM, config, device)
    generator = torch.Generator(device=device).manual_seed(0)
    options = {"bc": {"nstep": 0}, "drq_bc": {"nstep": 3}, "drq_cql": {"nstep": 1},
               "infogating": {"nstep": 0, "max_gap": 14}}[name]
    batches = FrameStackBatches(dataset, batch_size=config.batch_size, seed=0, device=device,
                                **options)
    stream = batches.stream()
    def ours_update(batch):
        return agent.update({key: value.to(device) for key, value in batch.items()}, generator)

    reference = (ReferenceInfoGating(config, ACTION_DIM, device) if name == "infogating" else
                 ReferenceDrQ(name, config, ACTION_DIM, device))
    replay = ReferenceReplay(dataset, 256, 3, max(options["nstep"], 1), 0.99,
                             options.get("max_gap", 0))
    def reference_next():
        return to_torch(replay.sample(), device)

    return {"ours": (ours_update, batches.batch(0), lambda: next(stream), stream),
            "reference": (reference.update, reference_next(), reference_next, None)}


def benchmark(name, dataset, device, *, warmup, steps, rounds):
    """One result row for algorithm ``name`` on ``device``: medians over ``rounds`` rounds, in each
    of which both implementations run ``steps`` updates on a fixed batch (``update``) and
    ``steps`` with sampling (``loop``), in alternating order."""
    runs = implementations(name, dataset, device)
    for update, _, next_batch, _ in runs.values():
        for _ in range(warmup):
            update(next_batch())
    times = {(kind, what): [] for kind in runs for what in ("update", "loop")}
    for index in range(rounds):
        for kind in (list(runs) if index % 2 == 0 else list(runs)[::-1]):
            update, batch, next_batch, _ = runs[kind]
            times[kind, "update"].append(time_updates(update, lambda fixed=batch: fixed, steps,
                                                      device))
            times[kind, "loop"].append(time_updates(update, next_batch, steps, device))
    runs["ours"][3].close()
    row = {"algorithm": name, "device": str(device)}
    # on CUDA the wall clock is the measure; on a (shared) CPU the process CPU time is steadier
    clock = 0 if torch.device(device).type == "cuda" else 1
    for what in ("update", "loop"):
        for kind in runs:
            row[f"{kind}_{what}_per_s"] = 1 / statistics.median(t[0] for t in times[kind, what])
            row[f"{kind}_{what}_cpu_s"] = statistics.median(t[1] for t in times[kind, what])
        row[f"speedup_{what}"] = (statistics.median(t[clock] for t in times["reference", what])
                                  / statistics.median(t[clock] for t in times["ours", what]))
    row["paper_run_hours"] = PAPER_UPDATES / row["ours_loop_per_s"] / 3600
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algorithms", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: both that exist)")
    parser.add_argument("--steps", type=int, default=2, help="timed updates per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--episodes", type=int, default=10, help="noise episodes of 501 entries")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    dataset = noise_dataset(args.episodes, 501)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU thread(s); paper sizes, batch 256; median of {args.rounds} rounds "
          f"of {args.steps} updates. upd/s: wall clock; speedup: ratio of CPU seconds per update "
          f"on a CPU (steadier on a shared machine), of wall time on CUDA")
    rows = []
    header = (f"{'algorithm':<11} {'device':<6} {'ours upd/s':>10} {'ref upd/s':>10} "
              f"{'speedup':>8} {'ours loop/s':>11} {'ref loop/s':>10} {'speedup':>8} "
              f"{'550k run':>9}")
    print(header)
    for device in devices:
        for name in args.algorithms:
            row = benchmark(name, dataset, device, warmup=args.warmup, steps=args.steps,
                            rounds=args.rounds)
            rows.append(row)
            print(f"{name:<11} {device:<6} {row['ours_update_per_s']:>10.3f} "
                  f"{row['reference_update_per_s']:>10.3f} {row['speedup_update']:>7.2f}x "
                  f"{row['ours_loop_per_s']:>11.3f} {row['reference_loop_per_s']:>10.3f} "
                  f"{row['speedup_loop']:>7.2f}x {_hours(row['paper_run_hours']):>9}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


def _hours(hours):
    return f"{hours:.1f} h" if hours < 100 else f"{hours / 24:.0f} d" if math.isfinite(hours) else "-"


if __name__ == "__main__":
    main()
