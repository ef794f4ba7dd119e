"""The acting policy of the latent-space algorithms (SeMOPO, Offline DV2, LOMPO): filter observations
with the world model's encoder and posterior, act on the latent features.

``policy(observation) -> action`` takes one ``(64, 64, 3)`` uint8 frame (as ``make_env`` returns it)
and keeps the latent state and the previous action between calls; :meth:`LatentPolicy.reset` starts
an episode. It holds only the encoder, the RSSM and the actor, so it pickles small for evaluation
workers.
"""

import numpy as np
import torch
import torch.distributions as td
from torch import nn


class LatentPolicy(nn.Module):
    """Acts with ``actor`` on the posterior features of an RSSM, one observation at a time.

    Args:
        encoder: image encoder (``ConvEncoder``).
        rssm: the world model's ``RSSM``.
        actor: features -> a ``torch.distributions.Distribution`` over actions (its mode is played,
            or a sample with ``sample=True``) or a tensor of actions (a deterministic actor).
        action_dim: size of the action vector.
        sample: sample stochastic actors instead of playing their mode.
    """

    def __init__(self, encoder, rssm, actor, action_dim, *, sample=False):
        super().__init__()
        self.encoder, self.rssm, self.actor = encoder, rssm, actor
        self.action_dim = int(action_dim)
        self.sample = sample
        self.reset()

    @property
    def device(self):
        """Where the networks live."""
        return next(self.parameters()).device

    def reset(self):
        """Forget the episode so far."""
        self._latent = None
        self._action = None
        return self

    @torch.no_grad()
    def forward(self, observation):
        """The action for one ``(64, 64, 3)`` uint8 observation (float32 numpy array in [-1, 1])."""
        device = self.device
        image = torch.as_tensor(np.asarray(observation), device=device)
        if image.dtype != torch.uint8 or tuple(image.shape[-3:]) != (64, 64, 3):
            raise ValueError(f"the policy acts on (64, 64, 3) uint8 observations, got "
                             f"{tuple(image.shape)} {image.dtype}")
        first = self._latent is None
        if first:
            self._latent = self.rssm.initial(1, device)
            self._action = torch.zeros(1, self.action_dim, device=device)
        is_first = torch.tensor([first], device=device)
        # head=0: the posterior does not depend on the prior head, so none is drawn here
        self._latent, _ = self.rssm.obs_step(self._latent, self._action,
                                             self.encoder(image.reshape(1, 64, 64, 3)), is_first,
                                             head=0)
        self._action = self._act(self.rssm.features(self._latent)).float()
        return self._action[0].cpu().numpy().astype(np.float32)

    def _act(self, features):
        output = self.actor(features)
        if isinstance(output, td.Distribution):
            return output.rsample() if self.sample else output.mode
        return output
