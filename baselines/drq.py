"""The DrQ-v2 actor-critic update that DrQ+BC and DrQ+CQL share (V-D4RL ``drqbc/drqv2.py`` and
``drqbc/cql.py``, summarized in ``reference/baselines.md`` section 1).

One update, as V-D4RL does it:

1. augment ``obs`` and ``next_obs`` with independent random shifts; encode ``obs`` with gradients and
   ``next_obs`` without (the online encoder: there is no target encoder);
2. critic: ``y = r + discount * min(Q1', Q2')(next, a')`` with ``a'`` sampled from the (online)
   actor at the next state with clipped noise (TD3's target smoothing) and ``Q'`` the target
   critic; loss ``MSE(Q1, y) + MSE(Q2, y)`` plus the algorithm's penalty (:meth:`critic_penalty`);
   one step of the encoder and the critic;
3. actor, on the detached encoder features: the algorithm's :meth:`actor_loss`; one actor step;
4. target critic: Polyak average with rate ``tau``.

Actor and critic are updated at every update (no delayed policy update).
"""

import torch
import torch.nn.functional as F

from .core import (
    Actor, PixelEncoder, TwinCritic, random_shift, requires_grad, sample_clipped, soft_update,
)
from .model_free import ActingNetwork, AgentBase


def td_target(reward, discount, target_q1, target_q2):
    """``r + discount * min(Q1', Q2')`` (``discount`` already holds gamma^n)."""
    return reward + discount * torch.min(target_q1, target_q2)


def twin_critic_loss(q1, q2, target):
    """``MSE(Q1, y) + MSE(Q2, y)``."""
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


class DrQAgent(AgentBase):
    """Encoder, actor, twin critic and target critic with V-D4RL's update; subclasses define
    :meth:`actor_loss` and may add :meth:`critic_penalty`."""

    def __init__(self, action_dim, config, device):
        super().__init__(action_dim, config, device)
        self.encoder = PixelEncoder(3 * config.frame_stack, config.image_size,
                                    config.encoder_channels).to(device)
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, config.feature_dim, config.units,
                           config.actor_layers).to(device)
        self.critic = TwinCritic(repr_dim, action_dim, config.feature_dim, config.units,
                                 config.critic_layers).to(device)
        self.critic_target = TwinCritic(repr_dim, action_dim, config.feature_dim, config.units,
                                        config.critic_layers).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        requires_grad(self.critic_target, False)
        # the critic loss trains the encoder: one Adam for both (V-D4RL: two, same learning rate)
        self.critic_optimizer = self.adam(
            "critic", [*self.encoder.parameters(), *self.critic.parameters()], config.critic_lr)
        self.actor_optimizer = self.adam("actor", self.actor.parameters(), config.actor_lr)

    def update(self, batch, generator):
        """One actor-critic update on ``batch``; returns its metrics (tensors)."""
        config = self.config
        obs = random_shift(batch["obs"], config.augment_pad, generator)
        next_obs = random_shift(batch["next_obs"], config.augment_pad, generator)
        std = self.noise_std()
        with self.autocast():
            features = self.encoder(obs)
            with torch.no_grad():
                next_features = self.encoder(next_obs)
        metrics = self.update_critic(features, next_features, batch, std, generator)
        metrics.update(self.update_actor(features.detach(), batch, std, generator))
        soft_update(self.critic_target, self.critic, config.tau)
        self.updates += 1
        return metrics

    def update_critic(self, features, next_features, batch, std, generator):
        """Step the encoder and the critic on the TD loss (plus :meth:`critic_penalty`)."""
        config = self.config
        with torch.no_grad(), self.autocast():
            next_mean = self.actor(next_features).float()
            next_action = sample_clipped(next_mean, std, config.std_clip, generator)
            target_q1, target_q2 = self.critic_target(next_features, next_action)
            target = td_target(batch["reward"], batch["discount"], target_q1.float(),
                               target_q2.float())
        with self.autocast():
            trunk = self.critic.trunk_features(features)
            q1, q2 = self.critic.q_values(trunk, batch["action"])
        q1, q2 = q1.float(), q2.float()
        loss = twin_critic_loss(q1, q2, target)
        metrics = {"critic_loss": loss.detach(), "q": q1.detach().mean(),
                   "target_q": target.mean()}
        penalty = self.critic_penalty(features, next_features, trunk, q1, q2, std, generator)
        if penalty is not None:
            loss = loss + penalty
            metrics["critic_penalty"] = penalty.detach()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return metrics

    def critic_penalty(self, features, next_features, trunk, q1, q2, std, generator):
        """An extra critic loss term (None, the default: plain TD learning)."""

    def update_actor(self, features, batch, std, generator):
        """Step the actor on :meth:`actor_loss`; the critic is evaluated without parameter
        gradients (they would be discarded)."""
        requires_grad(self.critic, False)
        try:
            with self.autocast():
                mean = self.actor(features).float()
            action = sample_clipped(mean, std, self.config.std_clip, generator)
            with self.autocast():
                q1, q2 = self.critic(features, action)
            loss, metrics = self.actor_loss(torch.min(q1, q2).float(), action, batch)
        finally:
            requires_grad(self.critic, True)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        return metrics

    def actor_loss(self, q, action, batch):
        """``(loss, metrics)`` of the actor from ``q = min(Q1, Q2)`` of its sampled ``action``."""
        raise NotImplementedError

    def acting_network(self):
        """Encoder + actor mean."""
        return ActingNetwork(self.encoder, self.actor)
