"""The model-free core that BC, DrQ+BC, DrQ+CQL and InfoGating share: augmentation, encoder, actor,
twin critic, the clipped-noise action sampler, the exploration-noise schedule and target updates.

Architecture and constants follow V-D4RL's ``drqbc/`` (conglu1997/v-d4rl, ``drqv2.py`` and
``utils.py``; see ``reference/baselines.md`` section 1):

* observations are ``frame_stack`` stacked RGB frames, ``(B, 3 * frame_stack, H, W)`` uint8, oldest
  frame first (V-D4RL's layout, and :class:`lqv_d4rl.samplers.TransitionSampler`'s);
  the encoders convert them, in one copy, to float32 in PyTorch's ``channels_last`` memory format
  (:func:`conv_input`), in which the convolutions run faster on CPU, and scale them to
  ``x / 255 - 0.5`` inside their first convolution (:class:`ScaledInputConv`);
* random-shift augmentation (DrQ): replicate-pad by ``pad`` pixels, crop back at an integer offset
  in ``[0, 2 * pad]`` per sample. V-D4RL does this with ``grid_sample`` on float images; at integer
  offsets that is exactly a crop, done here by gathering the uint8 pixels (:func:`shift_frames`);
* the encoder: Conv(C->32, 3, stride 2) + 3 x Conv(32->32, 3), ReLU after each, flattened; its
  output size is computed from the image size (20,000 at 64 px, 39,200 at 84 px), not hard-coded.
  Features are flattened in (H, W, C) order where V-D4RL flattens (C, H, W): a fixed permutation of
  the trunk's input columns, which the orthogonally initialized trunk absorbs (the same model, the
  same initial distribution); it keeps gradients in the ``channels_last`` layout of the
  convolutions (mixing layouts makes the ReLU backward ~15x slower on CPU);
* actor and critic each have their own trunk, Linear(repr -> 50) + LayerNorm + Tanh; actor
  MLP 50 -> 1024 -> 1024 -> A with a tanh mean; twin Q MLPs (50 + A) -> 1024 -> 1024 -> 1;
* orthogonal weights (conv gain: ReLU gain), zero biases.

Frames can be upsampled from the datasets' 64 px to V-D4RL's 84 px with :func:`resize_frames`
(OpenCV bicubic, as V-D4RL's ``npz_to_hdf5.py`` converter does), for training and evaluation alike.
"""

import math

import numpy as np
import torch
from torch import nn

NATIVE_IMAGE_SIZE = 64
"""Side of the frames stored in LQV-D4RL datasets."""
ACTION_BOUND = 1.0 - 1e-6
"""Sampled actions are clamped to +-(1 - 1e-6) (V-D4RL ``utils.TruncatedNormal._clamp``)."""


# ---------------------------------------------------------------------------------- frames


def resize_frames(frames, size):
    """``(N, H, W, 3)`` uint8 frames resized to ``(N, size, size, 3)`` with OpenCV's bicubic
    interpolation (``cv2.INTER_CUBIC``, what V-D4RL's converter uses to make its 84 px data).

    The same function serves training data and evaluation frames, so that a policy never sees
    frames prepared one way in training and another way in evaluation.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"resize_frames takes (N, H, W, C) uint8 frames, got {frames.shape} "
                         f"{frames.dtype}")
    if frames.shape[1:3] == (size, size):
        return frames
    out = np.empty((len(frames), size, size, frames.shape[3]), dtype=np.uint8)
    for index, frame in enumerate(frames):
        out[index] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC)
    return out


def conv_input(frames):
    """``(B, C, H, W)`` frames (uint8 or float, any layout) as float32 in ``channels_last`` memory
    format: one copy at most."""
    return frames.to(dtype=torch.float32, memory_format=torch.channels_last)


def draw_shifts(batch_size, pad, generator, device):
    """Random-shift offsets: ``(B, 2)`` integers in ``[0, 2 * pad]``, column (x) shift first, as
    V-D4RL's ``RandomShiftsAug`` draws them."""
    return torch.randint(0, 2 * pad + 1, (batch_size, 2), generator=generator, device=device)


def shift_frames(frames, shifts, pad):
    """DrQ's random shift of ``(B, C, H, W)`` frames by ``shifts`` (from :func:`draw_shifts`).

    Output pixel ``(i, j)`` of sample b is pixel ``(i + dy - pad, j + dx - pad)`` of the input with
    coordinates clamped to the image (replicate padding), ``(dx, dy) = shifts[b]``. This equals
    V-D4RL's pad-then-``grid_sample`` crop, whose sampling points fall on pixel centres; gathering
    keeps the frames uint8 and is cheaper than interpolating floats.
    """
    batch, channels, height, width = frames.shape
    device = frames.device
    rows = (torch.arange(height, device=device) + shifts[:, 1:2] - pad).clamp_(0, height - 1)
    cols = (torch.arange(width, device=device) + shifts[:, 0:1] - pad).clamp_(0, width - 1)
    pixels = (rows[:, :, None] * width + cols[:, None, :]).reshape(batch, 1, height * width)
    planes = frames.reshape(batch, channels, height * width)
    return planes.gather(2, pixels.expand(batch, channels, height * width)).view(frames.shape)


def random_shift(frames, pad, generator):
    """:func:`shift_frames` with offsets drawn from ``generator`` (no-op when ``pad`` is 0)."""
    if pad == 0:
        return frames
    return shift_frames(frames, draw_shifts(len(frames), pad, generator, frames.device), pad)


# ---------------------------------------------------------------------------------- networks


def orthogonal_init(module):
    """V-D4RL's ``weight_init``: orthogonal weights (gain sqrt(2) for convolutions), zero biases."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        gain = nn.init.calculate_gain("relu") if isinstance(module, nn.Conv2d) else 1.0
        nn.init.orthogonal_(module.weight.data, gain)
        if module.bias is not None:
            module.bias.data.fill_(0.0)


def mlp(input_dim, units, layers, output_dim):
    """``layers`` x (Linear ``units`` + ReLU), then Linear to ``output_dim``."""
    modules, width = [], input_dim
    for _ in range(layers):
        modules += [nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    modules.append(nn.Linear(width, output_dim))
    return nn.Sequential(*modules)


def conv_output_dim(convnet, channels, image_size):
    """Number of features ``convnet`` gives for one ``(channels, image_size, image_size)`` input,
    found by running it on zeros."""
    with torch.no_grad():
        return int(math.prod(convnet(torch.zeros(1, channels, image_size, image_size)).shape))


def flatten_channels_last(maps):
    """``(B, C, H, W)`` feature maps flattened in (H, W, C) order (a view for ``channels_last``
    maps; see the module docstring)."""
    return maps.permute(0, 2, 3, 1).flatten(1)


class ScaledInputConv(nn.Conv2d):
    """A convolution (without padding) of ``x / 255 - 0.5`` computed from 0-255 inputs ``x`` as
    ``conv(x, W / 255, b - 0.5 * sum(W))``: the same layer and parameters as V-D4RL's
    ``Conv2d`` after its ``obs / 255.0 - 0.5``, without two passes over the input."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding not in ((0, 0), 0):
            raise ValueError("ScaledInputConv folds the input scaling into the bias, which is "
                             "exact only without padding")

    def forward(self, frames):
        """The convolution of ``frames / 255 - 0.5``."""
        weight = self.weight / 255.0
        bias = self.bias - 0.5 * self.weight.sum(dim=(1, 2, 3))
        return self._conv_forward(frames, weight, bias)


class PixelEncoder(nn.Module):
    """V-D4RL's DrQ encoder: Conv(C->ch, 3, s2) and ``layers - 1`` x Conv(ch->ch, 3), ReLU after
    each, flattened with :func:`flatten_channels_last`.

    ``forward`` takes ``(B, C, H, W)`` frames (uint8 or float on the 0-255 scale) and returns
    ``(B, repr_dim)``; ``repr_dim`` is computed for ``image_size`` (20,000 at 64 px).
    """

    def __init__(self, in_channels, image_size, channels=32, layers=4):
        super().__init__()
        modules = [ScaledInputConv(in_channels, channels, 3, stride=2), nn.ReLU(inplace=True)]
        for _ in range(layers - 1):
            modules += [nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(inplace=True)]
        self.convnet = nn.Sequential(*modules)
        self.repr_dim = conv_output_dim(self.convnet, in_channels, image_size)
        self.apply(orthogonal_init)
        self.to(memory_format=torch.channels_last)

    def forward(self, frames):
        """``(B, C, H, W)`` frames on the 0-255 scale -> ``(B, repr_dim)`` features."""
        return flatten_channels_last(self.convnet(conv_input(frames)))


def normalize_frames(frames):
    """0-255 frames as ``x / 255 - 0.5`` floats (V-D4RL's encoder input)."""
    return frames.float() / 255.0 - 0.5


class FeatureTrunk(nn.Sequential):
    """Linear(repr_dim -> feature_dim) + LayerNorm + Tanh: the trunk of V-D4RL's actor and critic."""

    def __init__(self, repr_dim, feature_dim):
        super().__init__(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class Actor(nn.Module):
    """Deterministic-mean actor: trunk -> MLP -> tanh. Training samples around the mean with
    :func:`sample_clipped` (V-D4RL's ``TruncatedNormal.sample(clip)``); evaluation plays the mean.

    ``trunk=False`` drops the trunk (InfoGating's policy head reads its encoder's features directly).
    """

    def __init__(self, repr_dim, action_dim, feature_dim=50, units=1024, layers=2, trunk=True):
        super().__init__()
        self.trunk = FeatureTrunk(repr_dim, feature_dim) if trunk else nn.Identity()
        self.policy = mlp(feature_dim if trunk else repr_dim, units, layers, action_dim)
        self.apply(orthogonal_init)

    def forward(self, features):
        """The mean action ``tanh(MLP(trunk(features)))``, ``(..., A)``."""
        return torch.tanh(self.policy(self.trunk(features)))


class TwinCritic(nn.Module):
    """V-D4RL's critic: its own trunk, then two Q MLPs on ``[trunk features, action]``.

    :meth:`trunk_features` and :meth:`q_values` are separate so that several actions per state
    (CQL) reuse one trunk pass: ``q_values(h (B, F), actions (B, N, A))`` broadcasts ``h`` over N.
    """

    def __init__(self, repr_dim, action_dim, feature_dim=50, units=1024, layers=2):
        super().__init__()
        self.trunk = FeatureTrunk(repr_dim, feature_dim)
        self.q1 = mlp(feature_dim + action_dim, units, layers, 1)
        self.q2 = mlp(feature_dim + action_dim, units, layers, 1)
        self.apply(orthogonal_init)

    def trunk_features(self, features):
        """``(B, repr_dim)`` encoder features -> ``(B, feature_dim)`` trunk features."""
        return self.trunk(features)

    def q_values(self, trunk_features, actions):
        """``(Q1, Q2)``, each of shape ``actions.shape[:-1]``."""
        if actions.dim() == trunk_features.dim() + 1:
            trunk_features = trunk_features.unsqueeze(-2).expand(
                *actions.shape[:-1], trunk_features.shape[-1])
        inputs = torch.cat([trunk_features, actions], dim=-1)
        return self.q1(inputs).squeeze(-1), self.q2(inputs).squeeze(-1)

    def forward(self, features, actions):
        """``(Q1, Q2)`` of ``actions`` in the states whose encoder features are ``features``."""
        return self.q_values(self.trunk_features(features), actions)


# ---------------------------------------------------------------------------------- sampling


def sample_clipped(mean, std, clip, generator, shape=None):
    """V-D4RL's ``TruncatedNormal(mean, std).sample(clip)``: ``mean + clamp(std * N(0, 1), +-clip)``
    clamped to +-(1 - 1e-6) with a straight-through gradient (the gradient reaches ``mean`` as if
    there were no clamp). ``shape`` draws several samples per mean (it must broadcast with it)."""
    shape = mean.shape if shape is None else shape
    noise = torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    value = mean + (noise * std).clamp_(-clip, clip)
    return value - value.detach() + value.detach().clamp(-ACTION_BOUND, ACTION_BOUND)


def linear_schedule(start, end, duration, step):
    """V-D4RL's ``linear(start, end, duration)`` schedule at ``step`` (constant after ``duration``)."""
    mix = min(max(step / duration, 0.0), 1.0) if duration > 0 else 1.0
    return (1.0 - mix) * start + mix * end


@torch.no_grad()
def soft_update(target, online, tau):
    """``target <- (1 - tau) * target + tau * online`` for every parameter (Polyak averaging)."""
    for target_param, param in zip(target.parameters(), online.parameters(), strict=True):
        target_param.lerp_(param, tau)


def requires_grad(module, flag):
    """Switch gradients of ``module``'s parameters on or off (a critic evaluated in the actor loss
    needs no parameter gradients)."""
    for param in module.parameters():
        param.requires_grad_(flag)
