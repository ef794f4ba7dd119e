"""Fully connected networks and the heads that turn features into distributions.

* :class:`MLP`: ``layers`` x (Linear ``units`` -> optional LayerNorm -> ELU) -> optional output layer.
* :class:`DenseHead`: an MLP whose output parameterizes a distribution over a value of shape
  ``shape``: ``"normal"`` (Normal, sigma 1: reward and value heads) or ``"bernoulli"`` (discount).
* :class:`ActionHead`: the actor; ``"trunc_normal"`` (DreamerV2) or ``"tanh_normal"`` (Dreamer-v1 /
  TIA) over actions in [-1, 1].
"""

import math

import torch
import torch.distributions as td
import torch.nn.functional as F
from torch import nn

from lqv_d4rl.networks.distributions import TanhNormal, TruncatedNormal, bernoulli, unit_normal


class MLP(nn.Module):
    """``layers`` hidden layers of ``units`` ELU units, then a linear map to ``output_dim``.

    Args:
        input_dim: input features.
        output_dim: size of the final linear layer; ``None`` returns the last hidden layer.
        layers, units: depth and width of the hidden part (DreamerV2 heads: 4 x 400).
        layer_norm: put a LayerNorm before each activation.
    """

    def __init__(self, input_dim, output_dim=None, layers=4, units=400, layer_norm=False,
                 activation=nn.ELU):
        super().__init__()
        modules = []
        width = input_dim
        for _ in range(layers):
            modules.append(nn.Linear(width, units))
            if layer_norm:
                modules.append(nn.LayerNorm(units))
            modules.append(activation())
            width = units
        if output_dim is not None:
            modules.append(nn.Linear(width, output_dim))
            width = output_dim
        self.net = nn.Sequential(*modules)
        self.output_dim = width

    def forward(self, inputs):
        """``(..., input_dim)`` -> ``(..., output_dim)``."""
        return self.net(inputs)


class DenseHead(nn.Module):
    """An MLP that predicts a distribution over a tensor of shape ``shape`` (``()`` for a scalar).

    Args:
        input_dim: feature size.
        shape: event shape of the prediction, ``()`` for rewards, values and discounts.
        dist: ``"normal"`` (Normal with sigma 1) or ``"bernoulli"`` (logits).
        layers, units, layer_norm: the MLP (reward 4x400 in DreamerV2 / SeMOPO, 2x400 in TIA).
    """

    DISTRIBUTIONS = ("normal", "bernoulli")

    def __init__(self, input_dim, shape=(), dist="normal", layers=4, units=400, layer_norm=False):
        super().__init__()
        if dist not in self.DISTRIBUTIONS:
            raise ValueError(f"unknown head distribution {dist!r}; choose one of {self.DISTRIBUTIONS}")
        self.shape = tuple(shape)
        self.dist = dist
        self.mlp = MLP(input_dim, math.prod(self.shape), layers, units, layer_norm)

    def forward(self, features):
        """A distribution whose ``mean`` / ``log_prob`` have the leading shape of ``features``."""
        output = self.mlp(features).reshape(*features.shape[:-1], *self.shape)
        if self.dist == "normal":
            return unit_normal(output, len(self.shape))
        return bernoulli(output, len(self.shape))


class ActionHead(nn.Module):
    """The actor: features -> a distribution over actions in [-1, 1]^action_dim.

    ``"trunc_normal"`` (DreamerV2): mean ``tanh(x)``, std ``2 * sigmoid((s + init_std) / 2) + min_std``
    (defaults min_std 0.1, init_std 0), truncated to [-1, 1], exact entropy.
    ``"tanh_normal"`` (Dreamer-v1 / TIA): pre-tanh mean ``mean_scale * tanh(x / mean_scale)``, std
    ``softplus(s + softplus^-1(init_std)) + min_std`` (Dreamer-v1: init_std 5, min_std 1e-4,
    mean_scale 5), entropy estimated from samples.
    """

    DISTRIBUTIONS = ("trunc_normal", "tanh_normal")

    def __init__(self, input_dim, action_dim, layers=4, units=400, dist="trunc_normal",
                 min_std=None, init_std=None, mean_scale=5.0, layer_norm=False):
        super().__init__()
        if dist not in self.DISTRIBUTIONS:
            raise ValueError(f"unknown action distribution {dist!r}; choose one of {self.DISTRIBUTIONS}")
        self.dist = dist
        self.action_dim = action_dim
        defaults = {"trunc_normal": (0.1, 0.0), "tanh_normal": (1e-4, 5.0)}[dist]
        self.min_std = defaults[0] if min_std is None else min_std
        self.init_std = defaults[1] if init_std is None else init_std
        self.mean_scale = mean_scale
        if dist == "tanh_normal" and self.init_std <= 0:
            raise ValueError(f"tanh_normal needs init_std > 0 (got {self.init_std}); Dreamer-v1 uses 5")
        self.mlp = MLP(input_dim, 2 * action_dim, layers, units, layer_norm)

    def forward(self, features):
        """A distribution with event shape ``(action_dim,)``; use ``rsample()``, ``mode``, ``entropy()``."""
        mean, std = self.mlp(features).float().chunk(2, -1)
        if self.dist == "trunc_normal":
            mean = torch.tanh(mean)
            std = 2 * torch.sigmoid((std + self.init_std) / 2) + self.min_std
            base = TruncatedNormal(mean, std, -1.0, 1.0)
        else:
            raw_init_std = math.log(math.expm1(self.init_std))
            mean = self.mean_scale * torch.tanh(mean / self.mean_scale)
            std = F.softplus(std + raw_init_std) + self.min_std
            base = TanhNormal(mean, std)
        return td.Independent(base, 1, validate_args=False)
