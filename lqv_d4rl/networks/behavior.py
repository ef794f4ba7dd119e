"""Imagination-based actor-critic (DreamerV2 behaviour learning).

One update (:meth:`ActorCritic.train_step`):

1. imagine ``horizon`` steps from a batch of start states with the current actor;
2. rewards ``r_t`` (t = 0..H-1) come from a caller-supplied ``reward_fn`` (a reward head, or
   SeMOPO's penalized ``r - lambda * u``), read at the states the rollout's ``scored`` names
   (``imagined_reward_states``, below); discounts ``gamma * c_t`` from an optional ``continue_fn``
   (default: never terminate);
3. lambda-returns with the slow critic as bootstrap::

       R_H = v(s_H),   R_t = r_t + gamma_t * ((1 - lambda) * v(s_{t+1}) + lambda * R_{t+1})

4. actor loss ``-mean_t w_t (R_{t+k} + eta * H[pi(.|s_t)])`` (dynamics backpropagation), or with
   ``actor_grad="reinforce"`` / ``"both"`` a REINFORCE term ``log pi(a_t|s_t) sg(R_{t+k} - v(s_t))``;
   ``w_t = prod_{i<t} gamma_i`` are stop-gradient weights of reaching s_t;
5. critic regression of ``v(s_t)`` on ``sg(R_t)`` (Normal sigma 1 log-likelihood), weighted by ``w_t``;
6. every ``slow_critic_every`` updates the slow critic moves to the critic (fraction 1 = copy).

Two alignments of rewards (``BehaviorConfig.imagined_reward_states``):

* ``"next"`` (default, k = 0): r_t is read at s_{t+1}, the state that a_t leads to, and R_t scores
  a_t, taken in s_t for t = 0..H-1;
* ``"current"`` (DreamerV2, k = 1): r_t is read at s_t itself (the start state and the first H-1
  imagined ones). R_t then opens with a reward that a_t cannot change, so a_t (taken in s_t) is
  scored by R_{t+1}, for t = 0..H-2: DreamerV2's ``policy(feat[:-2])`` against ``target[1:]``
  (danijar/dreamerv2 ``agent.py`` ``ActorCritic.actor_loss`` / ``target``, unchanged in V-D4RL's
  Offline DV2 and the released SeMOPO).

Only the actor and critic parameters are updated: the world model receives no gradient
accumulation from these losses.
"""

import copy
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from lqv_d4rl.networks.heads import ActionHead, DenseHead
from lqv_d4rl.networks.optim import Optimizer, autocast
from lqv_d4rl.networks.rssm import SCORED_STATES


def lambda_return(rewards, values, discounts, lambda_):
    """TD(lambda) returns, computed right to left.

    Args:
        rewards: ``(H, ...)`` reward of transition t -> t+1.
        values: ``(H+1, ...)`` value estimates of states 0..H (``values[H]`` bootstraps).
        discounts: ``(H, ...)`` discount of transition t -> t+1 (gamma times continuation).
        lambda_: the lambda of TD(lambda) (0.95).
    Returns:
        ``(H, ...)`` returns R_0..R_{H-1}.
    """
    if values.shape[0] != rewards.shape[0] + 1 or discounts.shape != rewards.shape:
        raise ValueError(
            f"lambda_return needs rewards (H, ...), values (H+1, ...), discounts (H, ...); got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(discounts.shape)}"
        )
    returns = []
    last = values[-1]
    for t in reversed(range(rewards.shape[0])):
        last = rewards[t] + discounts[t] * ((1 - lambda_) * values[t + 1] + lambda_ * last)
        returns.append(last)
    return torch.stack(returns[::-1])


@dataclass
class BehaviorConfig:
    """Settings of :class:`ActorCritic`; defaults are DreamerV2's / SeMOPO's.

    Attributes:
        horizon: imagination steps (15 Dreamer / TIA, 5 for the offline methods).
        gamma, lambda_: discount and TD(lambda) parameter.
        actor_layers, critic_layers, units: MLP sizes (4 x 400).
        actor_dist: ``"trunc_normal"`` (DreamerV2) or ``"tanh_normal"`` (Dreamer-v1 / TIA).
        actor_grad: ``"dynamics"`` (backprop through the model), ``"reinforce"`` or ``"both"``.
        actor_grad_mix: weight of the dynamics term when ``actor_grad="both"``.
        actor_entropy: actor entropy bonus eta (1e-4).
        actor_lr, critic_lr, eps, clip: Adam learning rates, epsilon and gradient-norm clip.
        weight_decay: DreamerV2's decoupled weight decay of the actor and critic, before each step
            (``wd: 1e-6`` in DreamerV2's ``actor_opt`` / ``critic_opt``; 0 turns it off).
        imagined_reward_states: ``"next"`` (rewards read at imagined states 1..H) or ``"current"``
            (states 0..H-1, DreamerV2's alignment; needs ``horizon >= 2``): see the module docs.
        slow_critic_every: updates between slow-critic refreshes (100).
        slow_critic_fraction: how far the slow critic moves to the critic at a refresh (1 = copy).
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (mixed precision on CUDA only).
    """

    horizon: int = 15
    gamma: float = 0.99
    lambda_: float = 0.95
    actor_layers: int = 4
    critic_layers: int = 4
    units: int = 400
    actor_dist: str = "trunc_normal"
    actor_grad: str = "dynamics"
    actor_grad_mix: float = 0.1
    actor_entropy: float = 1e-4
    actor_lr: float = 8e-5
    critic_lr: float = 8e-5
    eps: float = 1e-5
    clip: float = 100.0
    weight_decay: float = 0.0
    imagined_reward_states: str = "next"
    slow_critic_every: int = 100
    slow_critic_fraction: float = 1.0
    precision: str = "float32"

    @classmethod
    def from_config(cls, config, **overrides):
        """The behaviour settings of an algorithm's config: every field of this class that
        ``config`` has under the same name (the project spells each hyperparameter one way in every
        config: ``lambda_``, ``eps``, ``clip``, ``actor_entropy``, ``slow_critic_every``, ...), then
        ``overrides``."""
        values = {item.name: getattr(config, item.name) for item in fields(cls)
                  if hasattr(config, item.name)}
        return cls(**{**values, **overrides})


class ActorCritic(nn.Module):
    """Actor, critic and slow critic trained on imagined trajectories.

    Args:
        feature_dim: latent feature size (``rssm.feature_dim``).
        action_dim: action size.
        config: a :class:`BehaviorConfig`.
        device: where the networks live.
    """

    ACTOR_GRADS = ("dynamics", "reinforce", "both")

    def __init__(self, feature_dim, action_dim, config=None, device="cpu"):
        super().__init__()
        self.config = config or BehaviorConfig()
        cfg = self.config
        if cfg.actor_grad not in self.ACTOR_GRADS:
            raise ValueError(
                f"unknown actor_grad {cfg.actor_grad!r}; choose one of {self.ACTOR_GRADS}"
            )
        if cfg.imagined_reward_states not in SCORED_STATES:
            raise ValueError(f"imagined_reward_states must be one of {SCORED_STATES}, got "
                             f"{cfg.imagined_reward_states!r}")
        if cfg.imagined_reward_states == "current" and cfg.horizon < 2:
            raise ValueError("imagined_reward_states='current' scores the actions of states "
                             "0..H-2, so it needs horizon >= 2")
        self.device = torch.device(device)
        self.actor = ActionHead(feature_dim, action_dim, cfg.actor_layers, cfg.units, cfg.actor_dist)
        self.critic = DenseHead(feature_dim, (), "normal", cfg.critic_layers, cfg.units)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.to(self.device)
        self.actor_opt = Optimizer("actor", self.actor, cfg.actor_lr, cfg.eps, cfg.clip,
                                   cfg.weight_decay, precision=cfg.precision, device=self.device)
        self.critic_opt = Optimizer("critic", self.critic, cfg.critic_lr, cfg.eps, cfg.clip,
                                    cfg.weight_decay, precision=cfg.precision, device=self.device)
        self.updates = 0

    def policy(self, features, sample=True):
        """Action for ``features (..., F)``: a sample, or the mode with ``sample=False`` (evaluation)."""
        dist = self.actor(features)
        return dist.rsample() if sample else dist.mode

    def imagine(self, imagine_fn, start):
        """Imagine ``config.horizon`` steps from ``start`` with the current (sampling) actor.

        ``imagine_fn(policy, start, horizon) -> Imagination``, e.g. ``rssm.imagine``. The actor sees
        detached features (as in DreamerV2); its sampled actions carry gradients into the dynamics.
        The rollout's ``scored`` is set to ``config.imagined_reward_states``, so reward functions
        that read ``scored_features()`` / ``scored_states()`` follow the config.
        """
        trajectory = imagine_fn(lambda features: self.policy(features.detach()), start,
                                self.config.horizon)
        return replace(trajectory, scored=self.config.imagined_reward_states)

    def train_step(self, start, imagine_fn, reward_fn, continue_fn=None):
        """One actor and one critic update from imagined rollouts; returns a dict of metric tensors.

        (Named ``train_step`` because ``nn.Module.train`` switches training mode.)

        Args:
            start: start states (e.g. flattened, detached posteriors), passed to ``imagine_fn``.
            imagine_fn: ``(policy, start, horizon) -> Imagination`` (see :meth:`RSSM.imagine`).
            reward_fn: ``Imagination -> (H, N)`` rewards of the imagined transitions; gradients must
                reach the imagined features for dynamics backpropagation.
            continue_fn: optional ``Imagination -> (H, N)`` continuation probabilities (discount head).
        """
        if not isinstance(start, (dict, torch.Tensor)):
            raise TypeError("start must be a state dict or a tensor of start states")
        with autocast(self.device, self.config.precision):
            trajectory = self.imagine(imagine_fn, start)
            rewards = reward_fn(trajectory).float()
            discounts = self._discounts(trajectory, continue_fn, rewards)
            values = self.slow_critic(trajectory.features).mean
            returns = lambda_return(rewards, values, discounts, self.config.lambda_)
            weights = self._weights(discounts)
            actor_loss, actor_metrics = self._actor_loss(trajectory, returns, values, weights)
        metrics = self.actor_opt.step(actor_loss)
        with autocast(self.device, self.config.precision):
            critic_loss = self._critic_loss(trajectory, returns, weights)
        metrics.update(self.critic_opt.step(critic_loss))
        self._update_slow_critic()
        metrics.update(actor_metrics)
        metrics["imagined_reward"] = rewards.mean().detach()
        metrics["imagined_return"] = returns[0].mean().detach()
        return metrics

    def _discounts(self, trajectory, continue_fn, rewards):
        if continue_fn is None:
            return torch.full_like(rewards, self.config.gamma)
        return self.config.gamma * continue_fn(trajectory).float()

    @staticmethod
    def _weights(discounts):
        reach = torch.cumprod(torch.cat([torch.ones_like(discounts[:1]), discounts[:-1]]), 0)
        return reach.detach()

    def _actor_loss(self, trajectory, returns, values, weights):
        cfg = self.config
        # the actions scored: those of states 0..H-1 ("next"), or of 0..H-2 by R_{t+1} ("current")
        shift = 1 if cfg.imagined_reward_states == "current" else 0
        count = trajectory.horizon - shift
        returns, weights = returns[shift:], weights[:count]
        policy = self.actor(trajectory.features[:count].detach())
        if cfg.actor_grad == "dynamics":
            objective = returns
        else:
            advantage = (returns - values[:count]).detach()  # slow-critic baseline v(s_t)
            reinforce = policy.log_prob(trajectory.actions[:count].detach()) * advantage
            objective = reinforce if cfg.actor_grad == "reinforce" else (
                cfg.actor_grad_mix * returns + (1 - cfg.actor_grad_mix) * reinforce
            )
        entropy = policy.entropy()
        loss = -(weights * (objective + cfg.actor_entropy * entropy)).mean()
        return loss, {"actor_entropy": entropy.mean().detach()}

    def _critic_loss(self, trajectory, returns, weights):
        value = self.critic(trajectory.features[:-1].detach())
        return -(weights * value.log_prob(returns.detach())).mean()

    def _update_slow_critic(self):
        cfg = self.config
        if self.updates % cfg.slow_critic_every == 0:
            with torch.no_grad():
                for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
                    slow.mul_(1 - cfg.slow_critic_fraction).add_(cfg.slow_critic_fraction * fast)
        self.updates += 1
