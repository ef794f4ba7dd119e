"""The acting policy of the latent-space algorithms (SeMOPO, Offline DV2, LOMPO): filter observations
with the world model's encoder and posterior, act on the latent features.

``policy(observation) -> action`` takes one ``(64, 64, 3)`` uint8 frame (as ``make_env`` returns it)
or, for a world model trained on states (``observation_key == "state"``), one ``(S,)`` state vector
(the environment's ``info["state"]``, which :func:`lqv_d4rl.evaluation.play_episode` passes to such
a policy), and keeps the latent state and the previous action between calls;
:meth:`LatentPolicy.reset` starts an episode. It holds only the encoder, the RSSM and the actor, so it pickles small for evaluation
workers.
"""

import numpy as np
import torch
import torch.distributions as td
from torch import nn


class LatentPolicy(nn.Module):
    """Acts with ``actor`` on the posterior features of an RSSM, one observation at a time.

    Args:
        encoder: image encoder (``ConvEncoder``), or the MLP encoder of a state model.
        rssm: the world model's ``RSSM``.
        actor: features -> a ``torch.distributions.Distribution`` over actions (its mode is played,
            or a sample with ``sample=True``) or a tensor of actions (a deterministic actor).
        action_dim: size of the action vector.
        sample: sample stochastic actors instead of playing their mode.
        observation_key: what it acts on: ``"image"`` (``(64, 64, 3)`` uint8 frames) or ``"state"``
            (``(state_dim,)`` vectors, the environment's ``info["state"]``).
        state_dim: the size of those vectors (``observation_key="state"`` only).
    """

    def __init__(self, encoder, rssm, actor, action_dim, *, sample=False, observation_key="image",
                 state_dim=None):
        super().__init__()
        if observation_key not in ("image", "state"):
            raise ValueError(f"observation_key must be 'image' or 'state', got {observation_key!r}")
        if observation_key == "state" and state_dim is None:
            raise ValueError("a policy acting on states needs their size (state_dim)")
        self.encoder, self.rssm, self.actor = encoder, rssm, actor
        self.action_dim = int(action_dim)
        self.sample = sample
        self.observation_key = observation_key
        self.state_dim = None if state_dim is None else int(state_dim)
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
        """The action for one observation (float32 numpy array in [-1, 1]): a ``(64, 64, 3)``
        uint8 frame, or a ``(state_dim,)`` state vector for a policy with
        ``observation_key == "state"``."""
        device = self.device
        embed = self.encoder(self._observation_tensor(observation, device))
        first = self._latent is None
        if first:
            self._latent = self.rssm.initial(1, device)
            self._action = torch.zeros(1, self.action_dim, device=device)
        is_first = torch.tensor([first], device=device)
        # head=0: the posterior does not depend on the prior head, so none is drawn here
        self._latent, _ = self.rssm.obs_step(self._latent, self._action, embed, is_first, head=0)
        self._action = self._act(self.rssm.features(self._latent)).float()
        return self._action[0].cpu().numpy().astype(np.float32)

    def _observation_tensor(self, observation, device):
        """One observation as a batch of one on ``device``, checked against what the policy takes."""
        if self.observation_key == "state":
            state = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=device)
            if tuple(state.shape) != (self.state_dim,):
                raise ValueError(f"the policy acts on ({self.state_dim},) state vectors (the "
                                 f"environment's info['state']), got {tuple(state.shape)}")
            return state.reshape(1, self.state_dim)
        image = torch.as_tensor(np.asarray(observation), device=device)
        if image.dtype != torch.uint8 or tuple(image.shape[-3:]) != (64, 64, 3):
            raise ValueError(f"the policy acts on (64, 64, 3) uint8 observations, got "
                             f"{tuple(image.shape)} {image.dtype}")
        return image.reshape(1, 64, 64, 3)

    def _act(self, features):
        output = self.actor(features)
        if isinstance(output, td.Distribution):
            return output.rsample() if self.sample else output.mode
        return output
