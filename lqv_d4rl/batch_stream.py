"""The batches a training loop consumes: drawn ahead of the computation, and resumable exactly.

:class:`BatchStream` wraps a sampler of :mod:`lqv_d4rl.samplers`:

* on a CUDA device, when the dataset fits in part of the free device memory (by default half of it,
  leaving the rest for the networks, their activations and the optimizer), it is copied there once
  and every batch is gathered on the GPU (:class:`lqv_d4rl.torch_data.DeviceSequenceSampler`);
* otherwise a background thread draws batches in order and converts them to tensors (pinned host
  memory for a GPU) a few batches ahead (:class:`lqv_d4rl.torch_data.TorchBatchIterator`).

Either way the batches are exactly those of calling ``sampler.sample()`` in a loop, and
:meth:`BatchStream.state` is the sampler's position after the last batch the loop *consumed* (not
the ones drawn ahead), so a checkpoint taken mid-run resumes to the same batches.
"""

import collections
import json

import torch

from .samplers import SequenceSampler
from .torch_data import DeviceMemoryError, DeviceSequenceSampler, TorchBatchIterator, free_device_bytes

TRAINING_SHARE = 0.5
"""Share of the free device memory kept for training when deciding whether the dataset goes on
the GPU."""


def sampler_position(sampler):
    """The sampler's batch counter and random state, as checkpoint-safe values."""
    return {"step": int(sampler.step), "rng": json.dumps(sampler.rng.bit_generator.state)}


def set_sampler_position(sampler, position):
    """Put ``sampler`` back where :func:`sampler_position` found it."""
    sampler.set_step(int(position["step"]))
    sampler.rng.bit_generator.state = json.loads(position["rng"])


class _Recording:
    """A sampler whose every ``sample()`` also records the position after it (for the consumer)."""

    def __init__(self, sampler, positions):
        self.sampler, self.positions = sampler, positions

    def sample(self):
        batch = self.sampler.sample()
        self.positions.append(sampler_position(self.sampler))
        return batch


class BatchStream:
    """Batches of ``sampler`` as tensors on ``device`` (see the module docstring).

    Args:
        sampler: a sequence or transition sampler.
        device: where the batches should be.
        prefetch: batches kept ready by the background thread (host path).
        on_device: ``"auto"`` keeps the dataset on a CUDA device when it fits, ``False`` never does,
            ``True`` insists (raising DeviceMemoryError when it does not fit).
        training_share: share of the free device memory left for training.
    """

    def __init__(self, sampler, device="cpu", *, prefetch=2, on_device="auto",
                 training_share=TRAINING_SHARE):
        self.sampler = sampler
        self.device = torch.device(device)
        self._position = sampler_position(sampler)
        self._positions = collections.deque()
        self._device_sampler = None
        self._iterator = None
        if self.device.type == "cuda" and on_device and isinstance(sampler, SequenceSampler):
            budget = int(free_device_bytes(self.device) * (1 - training_share))
            try:
                self._device_sampler = DeviceSequenceSampler(sampler, device=self.device,
                                                             memory_budget=budget)
            except DeviceMemoryError:
                if on_device is True:
                    raise
        if self._device_sampler is None:
            self._iterator = TorchBatchIterator(_Recording(sampler, self._positions),
                                                device=self.device, prefetch=prefetch)

    @property
    def on_device(self):
        """True when the dataset lives on the device and batches are gathered there."""
        return self._device_sampler is not None

    def next(self):
        """The next batch (a dict of tensors on the device)."""
        if self._device_sampler is not None:
            batch = self._device_sampler.sample()
            self._position = sampler_position(self.sampler)
            return batch
        batch = next(self._iterator)
        self._position = self._positions.popleft()
        return batch

    def state(self):
        """The sampler's position after the last consumed batch (for a checkpoint)."""
        return dict(self._position)

    def close(self):
        """Stop the background thread (the sampler is left where the drawing thread stopped)."""
        if self._iterator is not None:
            self._iterator.close()
