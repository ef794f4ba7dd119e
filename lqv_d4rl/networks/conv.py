"""Convolutional image encoder and decoders for 64x64 observations (DreamerV2 layout).

Images follow the dataset layout, channels last: ``(..., 64, 64, C)`` uint8. The encoder also takes
channels-first input. Decoders return image means channels last, in the normalized pixel space of
:func:`preprocess_image` (``x / 255 - 0.5``), so a loss compares them with
``preprocess_image(batch["image"])`` directly.

Encoder: 4 convolutions, kernel 4, stride 2, no padding, ``depth * (1, 2, 4, 8)`` channels, ELU:
64 -> 31 -> 14 -> 6 -> 2, flattened to ``32 * depth`` features (1536 for depth 48).
Decoder: a linear layer to ``32 * depth``, then transposed convolutions with kernels 5, 5, 6, 6 and
stride 2: 1 -> 5 -> 13 -> 30 -> 64.

Speed notes (measured on CPU, torch 2.13): convolution weights are kept in ``channels_last`` memory
format (the images already are; the encoder runs ~1.5x faster), and the decoder's first transposed
convolution, which acts on a 1x1 input, is computed as the equivalent matrix product (PyTorch's CPU
transposed convolution took ~10x longer for it).
"""

import torch
from torch import nn

ENCODER_KERNELS = (4, 4, 4, 4)
DECODER_KERNELS = (5, 5, 6, 6)
IMAGE_SIZE = 64


def preprocess_image(image):
    """uint8 pixels -> float32 in [-0.5, 0.5] (``x / 255 - 0.5``); float input is returned as is.

    Float tensors are taken to be already preprocessed, so calling this twice is harmless.
    """
    if image.dtype == torch.uint8:
        return image.float() / 255.0 - 0.5
    if not image.is_floating_point():
        raise TypeError(f"images must be uint8 pixels or preprocessed floats, got {image.dtype}")
    return image


class ConvEncoder(nn.Module):
    """Embeds 64x64 images into a flat vector of ``output_dim = 32 * depth`` features.

    Args:
        depth: channel multiplier (48 SeMOPO, 32 DreamerV2 / Offline DV2, 26 TIA).
        channels: image channels (3 for RGB).
        activation: module class applied after each convolution.
    """

    def __init__(self, depth=32, channels=3, activation=nn.ELU):
        super().__init__()
        self.depth = depth
        self.channels = channels
        layers = []
        in_channels = channels
        for index, kernel in enumerate(ENCODER_KERNELS):
            out_channels = depth * 2**index
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride=2), activation()]
            in_channels = out_channels
        self.net = nn.Sequential(*layers)
        self.output_dim = in_channels * 2 * 2
        self.to(memory_format=torch.channels_last)

    def forward(self, image):
        """Embed ``image`` of shape ``(..., 64, 64, C)`` or ``(..., C, 64, 64)`` -> ``(..., output_dim)``.

        uint8 input is normalized to ``x / 255 - 0.5``; float input must already be normalized.
        Any number of leading axes (e.g. batch and time) is kept.
        """
        image = self._channels_first(preprocess_image(image))
        leading = image.shape[:-3]
        flat = image.reshape(-1, *image.shape[-3:])
        embedding = self.net(flat).reshape(flat.shape[0], -1)
        return embedding.reshape(*leading, self.output_dim)

    def _channels_first(self, image):
        shape = tuple(image.shape)
        if len(shape) >= 3 and shape[-3:] == (IMAGE_SIZE, IMAGE_SIZE, self.channels):
            return image.movedim(-1, -3)
        if len(shape) >= 3 and shape[-3:] == (self.channels, IMAGE_SIZE, IMAGE_SIZE):
            return image
        raise ValueError(
            f"ConvEncoder expects images of shape (..., {IMAGE_SIZE}, {IMAGE_SIZE}, {self.channels}) "
            f"or (..., {self.channels}, {IMAGE_SIZE}, {IMAGE_SIZE}), got {shape}; resize images to "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} or build the encoder with channels={shape[-1]}"
        )


class ConvDecoder(nn.Module):
    """Decodes a feature vector into a 64x64 image mean (channels last, normalized pixel space).

    Args:
        feature_dim: size of the input feature vector (e.g. ``rssm.feature_dim``).
        depth: channel multiplier, as in :class:`ConvEncoder`.
        channels: output channels (3 for an RGB mean; :class:`MaskDecoder` uses 6).
    """

    def __init__(self, feature_dim, depth=32, channels=3, activation=nn.ELU):
        super().__init__()
        self.depth = depth
        self.channels = channels
        self.linear = nn.Linear(feature_dim, 32 * depth)
        widths = [32 * depth, 4 * depth, 2 * depth, depth, channels]
        self.first = nn.ConvTranspose2d(widths[0], widths[1], DECODER_KERNELS[0], stride=2)
        layers = [activation()]
        for index in range(1, len(DECODER_KERNELS)):
            kernel = DECODER_KERNELS[index]
            layers.append(nn.ConvTranspose2d(widths[index], widths[index + 1], kernel, stride=2))
            if index < len(DECODER_KERNELS) - 1:
                layers.append(activation())
        self.net = nn.Sequential(*layers)
        self.to(memory_format=torch.channels_last)

    def forward(self, features):
        """``(..., feature_dim)`` -> image mean ``(..., 64, 64, channels)``."""
        leading = features.shape[:-1]
        hidden = self.linear(features.reshape(-1, features.shape[-1]))
        image = self.net(self._first_layer(hidden))
        return image.movedim(-3, -1).reshape(*leading, IMAGE_SIZE, IMAGE_SIZE, self.channels)

    def _first_layer(self, hidden):
        """``self.first`` applied to ``hidden`` seen as a 1x1 image, written as a matrix product:
        on a 1x1 input each output pixel is ``hidden @ weight[:, :, i, j] + bias``."""
        weight = self.first.weight  # (in, out, k, k)
        out_channels, kernel = weight.shape[1], weight.shape[2]
        image = (hidden @ weight.reshape(weight.shape[0], -1)).reshape(-1, out_channels, kernel, kernel)
        image = image + self.first.bias.reshape(1, -1, 1, 1)
        return image.contiguous(memory_format=torch.channels_last)


class MaskDecoder(ConvDecoder):
    """A decoder for one branch of the joint mask decoding (TIA, SeMOPO).

    It outputs ``image_channels`` mean channels and as many mask-logit channels; see
    :class:`lqv_d4rl.networks.mask.JointMaskDecoder` for how two branches are combined.
    """

    def __init__(self, feature_dim, depth=32, image_channels=3, activation=nn.ELU):
        super().__init__(feature_dim, depth, 2 * image_channels, activation)
        self.image_channels = image_channels

    def forward(self, features):
        """``(..., feature_dim)`` -> ``(mean, mask_logits)``, each ``(..., 64, 64, image_channels)``."""
        output = super().forward(features)
        return output[..., : self.image_channels], output[..., self.image_channels :]
