"""Joint mask decoding of two latent branches into one image (TIA, SeMOPO).

Each branch (endogenous = task-relevant, exogenous = distractor) decodes its features with a
:class:`~lqv_d4rl.networks.conv.MaskDecoder` into 3 mean channels and 3 mask-logit channels. A 1x1
convolution with a sigmoid over the 6 concatenated mask channels gives one mask ``m`` per pixel, and
the image mean is the convex combination::

    mean = m * mean_endo + (1 - m) * mean_exo,    m = sigmoid(conv1x1([mask_endo, mask_exo]))

scored with a Normal(sigma=1) likelihood. Images are channels last here, where a 1x1 convolution is
exactly a linear layer over the channel axis, which is how it is implemented.

The same separation for low-dimensional state vectors of size S (:class:`JointStateDecoder`): each
branch's MLP decoder outputs a mean (S) and a gate logit per dimension (S); a learned
per-dimension combination with a sigmoid gives the gate ``g`` in (0, 1)^S::

    mean = g * mean_endo + (1 - g) * mean_exo,
    g_i = sigmoid(w_endo_i * logit_endo_i + w_exo_i * logit_exo_i + b_i)

A pixel of the image model is one position of the frame; its 1x1 convolution mixes the mask
channels of that position only, with weights shared by every position because every pixel is the
same kind of quantity. A state dimension is the analogue of a pixel, but the dimensions are not of
one kind (a joint angle, a velocity, a chaotic exogenous variable), so each dimension gets its own
three weights: the gate of a dimension depends only on the two branches' logits for it. The weights
start at ``w_endo = 1, w_exo = -1, b = 0`` (``g = sigmoid(logit_endo - logit_exo)``): at the start
neither branch is favoured and each branch's logit pulls the gate its own way.
"""

from dataclasses import dataclass

import torch
from torch import nn

from lqv_d4rl.networks.conv import MaskDecoder
from lqv_d4rl.networks.distributions import image_log_likelihood, unit_normal
from lqv_d4rl.networks.heads import MLP


@dataclass
class JointImage:
    """Output of :class:`JointMaskDecoder`; every tensor is ``(..., 64, 64, C)`` channels last.

    Attributes:
        mean: the blended image mean (C = 3).
        mask: ``m`` in (0, 1), the weight of the endogenous branch (C = 1).
        endo_mean, exo_mean: each branch's own image mean (C = 3).
    """

    mean: torch.Tensor
    mask: torch.Tensor
    endo_mean: torch.Tensor
    exo_mean: torch.Tensor

    def log_prob(self, target):
        """Normal(sigma=1) log-likelihood of the preprocessed ``target`` images, one value per image."""
        return image_log_likelihood(self.mean, target)


class MaskCombiner(nn.Module):
    """The 1x1 convolution + sigmoid that blends two branches' means by their mask logits."""

    def __init__(self, image_channels=3):
        super().__init__()
        self.conv1x1 = nn.Linear(2 * image_channels, 1)

    def forward(self, endo_mean, endo_mask, exo_mean, exo_mask):
        """Returns ``(mean, m)``: the blended mean and the endogenous weight ``m`` (1 channel)."""
        logits = self.conv1x1(torch.cat([endo_mask, exo_mask], -1))
        m = torch.sigmoid(logits.float())
        mean = m * endo_mean.float() + (1 - m) * exo_mean.float()
        return mean, m


class JointMaskDecoder(nn.Module):
    """Two mask decoders (endogenous, exogenous) and the combiner that joins them.

    Args:
        endo_feature_dim, exo_feature_dim: feature sizes of the two branches' RSSMs.
        depth: CNN channel multiplier (48 SeMOPO, 26 TIA).
        image_channels: 3 for RGB.
        exo_depth: channel multiplier of the exogenous decoder (``None``: ``depth``).
        activation: module class of the decoders' activations (ELU; TIA uses ReLU).
    """

    def __init__(self, endo_feature_dim, exo_feature_dim, depth=32, image_channels=3, exo_depth=None,
                 activation=nn.ELU):
        super().__init__()
        exo_depth = depth if exo_depth is None else exo_depth
        self.endo = MaskDecoder(endo_feature_dim, depth, image_channels, activation)
        self.exo = MaskDecoder(exo_feature_dim, exo_depth, image_channels, activation)
        self.combiner = MaskCombiner(image_channels)

    def forward(self, endo_features, exo_features):
        """Decode both branches' features ``(..., F)`` into a :class:`JointImage`."""
        endo_mean, endo_mask = self.endo(endo_features)
        exo_mean, exo_mask = self.exo(exo_features)
        mean, m = self.combiner(endo_mean, endo_mask, exo_mean, exo_mask)
        return JointImage(mean=mean, mask=m, endo_mean=endo_mean, exo_mean=exo_mean)


# ---------------------------------------------------------------------------------------------
# The state analogue: a per-dimension gate between two branches' decoded states
# ---------------------------------------------------------------------------------------------


@dataclass
class JointState:
    """Output of :class:`JointStateDecoder`; every tensor is ``(..., S)``.

    Attributes:
        mean: the gated state mean.
        gate: ``g`` in (0, 1), the weight of the endogenous branch per dimension.
        endo_mean, exo_mean: each branch's own state mean.
    """

    mean: torch.Tensor
    gate: torch.Tensor
    endo_mean: torch.Tensor
    exo_mean: torch.Tensor

    def log_prob(self, target):
        """Normal(sigma=1) log-likelihood of the ``target`` states, one value per state vector."""
        return unit_normal(self.mean, 1).log_prob(target)


class StateGateCombiner(nn.Module):
    """``g = sigmoid(w_endo * logit_endo + w_exo * logit_exo + b)`` per dimension (each dimension
    its own weights), then ``mean = g * mean_endo + (1 - g) * mean_exo``."""

    def __init__(self, state_dim):
        super().__init__()
        self.endo_weight = nn.Parameter(torch.ones(state_dim))
        self.exo_weight = nn.Parameter(-torch.ones(state_dim))
        self.bias = nn.Parameter(torch.zeros(state_dim))

    def forward(self, endo_mean, endo_logit, exo_mean, exo_logit):
        """Returns ``(mean, g)``, both ``(..., S)``."""
        logits = (self.endo_weight * endo_logit.float() + self.exo_weight * exo_logit.float()
                  + self.bias)
        g = torch.sigmoid(logits)
        return g * endo_mean.float() + (1 - g) * exo_mean.float(), g


class JointStateDecoder(nn.Module):
    """Two MLP decoders (endogenous, exogenous), each to a state mean and per-dimension gate
    logits, and the :class:`StateGateCombiner` that joins them.

    Args:
        endo_feature_dim, exo_feature_dim: feature sizes of the two branches' RSSMs.
        state_dim: S, the size of the state vector.
        layers, units: each decoder's hidden ELU layers (DreamerV2's MLP decoder: 4 x 400).
    """

    def __init__(self, endo_feature_dim, exo_feature_dim, state_dim, layers=4, units=400):
        super().__init__()
        self.state_dim = int(state_dim)
        self.endo = MLP(endo_feature_dim, 2 * self.state_dim, layers, units)
        self.exo = MLP(exo_feature_dim, 2 * self.state_dim, layers, units)
        self.combiner = StateGateCombiner(self.state_dim)

    def forward(self, endo_features, exo_features):
        """Decode both branches' features ``(..., F)`` into a :class:`JointState`."""
        endo_mean, endo_logit = self.endo(endo_features).chunk(2, -1)
        exo_mean, exo_logit = self.exo(exo_features).chunk(2, -1)
        mean, g = self.combiner(endo_mean, endo_logit, exo_mean, exo_logit)
        return JointState(mean=mean, gate=g, endo_mean=endo_mean, exo_mean=exo_mean)
