"""Training batches of the model-free baselines: frame-stacked n-step transitions and
InfoGating's (o_t, o_{t+k}) pairs, drawn uniformly inside episodes.

This extends the conventions of :class:`lqv_d4rl.samplers.TransitionSampler` (transition t of an
episode pairs o_t with the action stored in entry t+1; frames before the episode start repeat its
first frame; windows never cross an episode boundary) with what V-D4RL's ``EfficientReplayBuffer``
(``drqbc/numpy_replay_buffer.py``) and the InfoGating offline code add:

* n-step returns: ``reward = sum_i gamma^i prod_{j<i} d_{t+1+j} r_{t+1+i}`` over ``i < n`` and
  ``discount = gamma^n prod_{j<n} d_{t+1+j}``, with ``next_obs`` the stack ending at o_{t+n}; only
  transitions with ``t + n <= length - 1`` are drawn. V-D4RL multiplies only the last discount in;
  the two agree on every window, since only the last entry of an episode can be terminal;
* gap pairs (``max_gap > 0``): ``future_obs`` is the stack ending at o_{t+k} with k uniform in
  ``[1, min(max_gap, length - 1 - t)]`` (InfoGating: k in [1, 14]).

Observation stacks are ``(B, 3 * frame_stack, H, W)`` uint8, oldest frame first, as in
TransitionSampler. The frames are kept as channel-first planes (one transposed copy of the
dataset's images, made once), so that a batch is gathered from contiguous 64 x 64 planes as
V-D4RL's buffer does, not interleaved pixel by pixel.

Batch ``i`` is drawn with ``numpy.random.default_rng([seed, i])``: the batches are a function of
the seed and their index, so a prefetching thread may run ahead and a resumed run continues with
exactly the batches an uninterrupted one would have drawn. :meth:`FrameStackBatches.stream`
prefetches host batches in a background thread (:class:`lqv_d4rl.torch_data.TorchBatchIterator`);
on a CUDA device the frames are uploaded once and gathered on the GPU instead (the same batches).
Either way the planes take as much memory as the dataset's images (more at ``image_size=84``).
"""

import numpy as np
import torch

from lqv_d4rl.samplers import SamplerError, WindowTable, check_dataset, eligible_episodes

from .core import NATIVE_IMAGE_SIZE, resize_frames


def nstep_return(rewards, discounts, gamma):
    """``(reward, discount)`` of n-step transitions from ``rewards`` and ``discounts`` ``(B, n)`` of
    entries t+1 .. t+n: ``sum_i gamma^i (prod_{j<i} d_j) r_i`` and ``gamma^n prod_j d_j``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    discounts = np.asarray(discounts, dtype=np.float64)
    steps = rewards.shape[1]
    carried = np.cumprod(np.concatenate([np.ones((len(rewards), 1)), discounts[:, :-1]], axis=1),
                         axis=1)
    weights = gamma ** np.arange(steps) * carried
    reward = (weights * rewards).sum(axis=1)
    discount = gamma ** steps * np.prod(discounts, axis=1)
    return reward.astype(np.float32), discount.astype(np.float32)


def frame_planes(images, image_size, device, chunk=4096):
    """``(N, H, W, 3)`` uint8 images as ``(N, 3, image_size, image_size)`` planes on ``device``,
    resized with :func:`baselines.core.resize_frames` and transposed in chunks (a clear error when
    they do not fit on a CUDA device)."""
    from lqv_d4rl.torch_data import DeviceMemoryError, free_device_bytes

    count = len(images)
    shape = (count, images.shape[3], image_size, image_size)
    needed = int(np.prod(shape))
    free = free_device_bytes(device) if device.type == "cuda" else None
    if free is not None and needed > 0.9 * free:
        raise DeviceMemoryError(
            f"the dataset's frames need {needed / 2**30:.1f} GiB but {device} has "
            f"{free / 2**30:.1f} GiB free; sample on the host with --set sample_on_device=false")
    planes = torch.empty(shape, dtype=torch.uint8, device=device)
    for start in range(0, count, chunk):
        frames = resize_frames(np.asarray(images[start:start + chunk]), image_size)
        planes[start:start + chunk] = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2)
    return planes


class FrameStackBatches:
    """Batches of frame-stacked transitions from a dataset (see the module docstring).

    Args:
        dataset: a :class:`lqv_d4rl.Dataset` (or an object with the same flat arrays).
        batch_size, frame_stack: batch shape (V-D4RL: 256, 3).
        nstep: steps of the return and of ``next_obs`` (0: no ``next_obs``, ``reward`` or
            ``discount``, for behaviour cloning).
        gamma: discount of the n-step return.
        max_gap: > 0 adds ``future_obs`` and ``gap`` (k) for InfoGating's multi-step inverse model.
        image_size: frames are resized to this side (:func:`baselines.core.resize_frames`) once,
            here, when it differs from the stored 64 px.
        seed: batch ``i`` is drawn with ``numpy.random.default_rng([seed, i])``.
        device: where :meth:`stream` delivers batches.
        frames_on_device: keep the frames on ``device`` and gather batches there (default: on a
            CUDA device); otherwise they stay in host memory and :meth:`stream` gathers batches in
            a prefetch thread and copies them over. Both give the same batches.

    A batch is a dict of tensors: ``obs`` (B, 3S, H, W) uint8, ``action`` (B, A) (the action
    taken at o_t), ``episode`` and ``index`` (t) (B,), plus ``reward``, ``discount`` (B,) and
    ``next_obs`` when ``nstep > 0``, and ``future_obs``, ``gap`` when ``max_gap > 0``.
    """

    def __init__(self, dataset, *, batch_size=256, frame_stack=3, nstep=1, gamma=0.99,
                 max_gap=0, image_size=NATIVE_IMAGE_SIZE, seed=0, device="cpu",
                 frames_on_device=None):
        check_dataset(dataset)
        for name, value, low in (("batch_size", batch_size, 1), ("frame_stack", frame_stack, 1),
                                 ("nstep", nstep, 0), ("max_gap", max_gap, 0), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise SamplerError(f"{name} must be an integer >= {low}, got {value!r}")
        self.batch_size, self.frame_stack = int(batch_size), int(frame_stack)
        self.nstep, self.gamma, self.max_gap, self.seed = int(nstep), float(gamma), int(max_gap), seed
        self.device = torch.device(device)
        lengths = np.asarray(dataset.episode_lengths, dtype=np.int64)
        window = max(self.nstep, 1) + 1
        self.windows = WindowTable.for_length(lengths, window, eligible_episodes(dataset, window))
        self.episode_starts = np.asarray(dataset.episode_starts, dtype=np.int64)
        self.episode_lengths = lengths
        self.actions = np.asarray(dataset.actions, dtype=np.float32)
        self.rewards = np.asarray(dataset.rewards, dtype=np.float32)
        self.discounts = np.asarray(dataset.discounts, dtype=np.float32)
        if frames_on_device is None:
            frames_on_device = self.device.type == "cuda"
        self.frames_on_device = bool(frames_on_device)
        self.planes = frame_planes(dataset.images, image_size,
                                   self.device if frames_on_device else torch.device("cpu"))

    @property
    def action_dim(self):
        """Size of the action vector."""
        return self.actions.shape[1]

    @property
    def obs_shape(self):
        """``(3 * frame_stack, H, W)`` of one observation stack."""
        channels, height, width = self.planes.shape[1:]
        return (channels * self.frame_stack, height, width)

    # ------------------------------------------------------------------------------ drawing

    def choose(self, index):
        """The transitions of batch ``index``: ``(episodes, t, gaps)`` arrays of shape (B,)
        (``gaps`` is None without ``max_gap``)."""
        rng = np.random.default_rng([self.seed, int(index)])
        episodes, t = self.windows.draw(rng, self.batch_size)
        gaps = None
        if self.max_gap:
            limit = np.minimum(self.max_gap, self.episode_lengths[episodes] - 1 - t)
            gaps = rng.integers(1, limit + 1)
        return episodes, t, gaps

    def batch(self, index):
        """Batch ``index`` as a dict of tensors (frames on the device where they are kept)."""
        return self.gather(*self.choose(index))

    def gather(self, episodes, t, gaps=None):
        """The batch of transitions ``t`` of ``episodes`` (and their ``gaps``)."""
        episodes, t = np.asarray(episodes, dtype=np.int64), np.asarray(t, dtype=np.int64)
        first_rows = self.episode_starts[episodes]
        batch = {"obs": self._stacks(first_rows, t), "action": self.actions[first_rows + t + 1],
                 "episode": episodes, "index": t}
        if self.nstep:
            rows = first_rows[:, None] + t[:, None] + 1 + np.arange(self.nstep)
            batch["reward"], batch["discount"] = nstep_return(
                self.rewards[rows], self.discounts[rows], self.gamma)
            batch["next_obs"] = self._stacks(first_rows, t + self.nstep)
        if gaps is not None:
            batch["future_obs"] = self._stacks(first_rows, t + gaps)
            batch["gap"] = np.asarray(gaps, dtype=np.int64)
        return {key: value if torch.is_tensor(value) else torch.from_numpy(np.asarray(value))
                for key, value in batch.items()}

    def _stacks(self, first_rows, ends):
        """Frame stacks ending at entry ``ends`` of the episodes starting at ``first_rows``, as
        ``(B, 3 * frame_stack, H, W)``; entries before the episode start repeat its first frame."""
        offsets = np.maximum(ends[:, None] + np.arange(1 - self.frame_stack, 1), 0)
        rows = torch.from_numpy(first_rows[:, None] + offsets).to(self.planes.device)
        return self.planes[rows].flatten(1, 2)

    # ------------------------------------------------------------------------------ streams

    def stream(self, start=0, prefetch=2):
        """An iterator over batches ``start, start + 1, ...`` as tensors on the device. Host
        batches are prefetched in a background thread; close it (or use ``with``) when done."""
        if self.frames_on_device:
            return _DeviceStream(self, start)
        from lqv_d4rl.torch_data import TorchBatchIterator

        return TorchBatchIterator(_Counter(self, start), device=self.device, prefetch=prefetch)


class _Counter:
    """``sample()`` returns batches start, start + 1, ... as numpy arrays (for TorchBatchIterator)."""

    def __init__(self, batches, start):
        self.batches, self.index = batches, int(start)

    def sample(self):
        batch = self.batches.batch(self.index)
        self.index += 1
        return {key: value.numpy() for key, value in batch.items()}


class _DeviceStream:
    """Batches gathered on the device, in order; a context manager like TorchBatchIterator."""

    def __init__(self, batches, start):
        self.batches, self.index = batches, int(start)

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.batches.batch(self.index)
        self.index += 1
        device = self.batches.device
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}

    def close(self):
        """Nothing to stop (for symmetry with TorchBatchIterator)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
