"""Joint mask decoding of two latent branches into one image (TIA, SeMOPO).

Each branch (endogenous = task-relevant, exogenous = distractor) decodes its features with a
:class:`~lqv_d4rl.networks.conv.MaskDecoder` into 3 mean channels and 3 mask-logit channels. A 1x1
convolution with a sigmoid over the 6 concatenated mask channels gives one mask ``m`` per pixel, and
the image mean is the convex combination::

    mean = m * mean_endo + (1 - m) * mean_exo,    m = sigmoid(conv1x1([mask_endo, mask_exo]))

scored with a Normal(sigma=1) likelihood. Images are channels last here, where a 1x1 convolution is
exactly a linear layer over the channel axis, which is how it is implemented.
"""

from dataclasses import dataclass

import torch
from torch import nn

from lqv_d4rl.networks.conv import MaskDecoder
from lqv_d4rl.networks.distributions import image_log_likelihood


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
