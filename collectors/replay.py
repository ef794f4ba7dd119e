"""The online replay of a training run: finished episodes, growing, sampled like a dataset.

:class:`EpisodeReplay` keeps every finished episode back to back in flat arrays and exposes the same
attributes as :class:`lqv_d4rl.dataset.Dataset` (``images``, ``actions``, ..., ``episode_starts``,
``episode_lengths``, ``returns``, ``policy_ids``, ``policy_steps``). So the samplers of
:mod:`lqv_d4rl.samplers` work on it unchanged, with their never-cross-an-episode window logic::

    replay = EpisodeReplay(action_dim=6, seed=0)
    replay.add_episode(steps, policy_id="tia-seed0-step005000", policy_step=5000, seed=3)
    batch = replay.sample(batch_size=50, seq_len=50)       # (50, 50, ...) windows

Like DreamerV1 (and TIA) the replay keeps every episode of the run. It saves to and loads from one
``.npz`` file (written under a temporary name and renamed), for training checkpoints.
"""

import json
import os
from pathlib import Path

import numpy as np

from lqv_d4rl.format import STEP_KEYS, validate_episode
from lqv_d4rl.samplers import SequenceSampler

_INITIAL_CAPACITY = 4096


class EpisodeReplay:
    """Finished episodes in flat, growing arrays, with the attributes the samplers need.

    ``seed`` seeds the sampling; the generator lives in :attr:`rng` and is saved with the replay.
    """

    def __init__(self, action_dim, *, seed=0, image_shape=(64, 64, 3)):
        self.action_dim = int(action_dim)
        self.image_shape = tuple(image_shape)
        self.rng = np.random.default_rng(seed)
        self._num_steps = 0
        self._buffers = self._allocate(_INITIAL_CAPACITY)
        self._episodes = {"episode_starts": [], "episode_lengths": [], "returns": [],
                          "policy_ids": [], "policy_steps": [], "episode_seeds": []}
        self._video_ids = []
        self._sampler = None

    # -- Dataset-like attributes ---------------------------------------------------------------

    images = property(lambda self: self._steps("image"), doc="(N, 64, 64, 3) uint8 images.")
    actions = property(lambda self: self._steps("action"), doc="(N, A) float32 actions.")
    rewards = property(lambda self: self._steps("reward"), doc="(N,) float32 rewards.")
    discounts = property(lambda self: self._steps("discount"), doc="(N,) float32 discounts.")
    is_first = property(lambda self: self._steps("is_first"), doc="(N,) bool.")
    is_last = property(lambda self: self._steps("is_last"), doc="(N,) bool.")
    is_terminal = property(lambda self: self._steps("is_terminal"), doc="(N,) bool.")
    episode_starts = property(lambda self: self._column("episode_starts", np.int64),
                              doc="(E,) int64 row of each episode's entry 0.")
    episode_lengths = property(lambda self: self._column("episode_lengths", np.int64),
                               doc="(E,) int64 entries per episode.")
    returns = property(lambda self: self._column("returns", np.float64),
                       doc="(E,) float64 episodic returns.")
    policy_ids = property(lambda self: self._column("policy_ids", str),
                          doc="(E,) str behaviour policy of each episode.")
    policy_steps = property(lambda self: self._column("policy_steps", np.int64),
                            doc="(E,) int64 env steps of the policy snapshot.")
    episode_seeds = property(lambda self: self._column("episode_seeds", np.int64),
                             doc="(E,) int64 environment seed of each episode.")

    def __len__(self):
        """Number of episodes."""
        return len(self._episodes["episode_starts"])

    @property
    def num_steps(self):
        """Number of stored entries (all episodes)."""
        return self._num_steps

    def episode(self, index):
        """The step dict of episode ``index`` (views of the flat arrays)."""
        start = self._episodes["episode_starts"][index]
        stop = start + self._episodes["episode_lengths"][index]
        return {key: self._buffers[key][start:stop] for key in STEP_KEYS}

    def episode_info(self, index):
        """The ShardWriter keyword arguments of episode ``index`` (policy_id, policy_step, ...)."""
        return {"policy_id": self._episodes["policy_ids"][index],
                "policy_step": self._episodes["policy_steps"][index],
                "seed": self._episodes["episode_seeds"][index],
                "video_ids": self._video_ids[index]}

    # -- growing -------------------------------------------------------------------------------

    def add_episode(self, steps, *, policy_id, policy_step=-1, seed=-1, video_ids=()):
        """Append one finished episode (checked like ShardWriter does); return its index."""
        arrays = validate_episode(steps, self.action_dim)
        length = len(arrays["image"])
        self._reserve(self._num_steps + length)
        for key in STEP_KEYS:
            self._buffers[key][self._num_steps:self._num_steps + length] = arrays[key]
        self._episodes["episode_starts"].append(self._num_steps)
        self._episodes["episode_lengths"].append(length)
        self._episodes["returns"].append(float(arrays["reward"].sum(dtype=np.float64)))
        self._episodes["policy_ids"].append(str(policy_id))
        self._episodes["policy_steps"].append(int(policy_step))
        self._episodes["episode_seeds"].append(int(seed))
        self._video_ids.append(np.asarray(video_ids, np.int32))
        self._num_steps += length
        self._sampler = None  # the window table changed
        return len(self) - 1

    def sample(self, batch_size, seq_len):
        """A batch of ``batch_size`` windows of ``seq_len`` entries, uniform over all valid windows
        (lqv_d4rl.samplers.SequenceSampler, mode ``random``); never crosses an episode."""
        return self._sequence_sampler(batch_size, seq_len).sample()

    def batches(self, count, batch_size, seq_len, device="cpu"):
        """The next ``count`` batches of :meth:`sample` (the same ones, in the same order) as tensors
        on ``device``, drawn ahead by a background thread (pinned memory for a GPU) while the caller
        trains on the previous ones: a :class:`lqv_d4rl.torch_data.TorchBatchIterator`, to use as a
        context manager. Add no episode before it is exhausted or closed."""
        from lqv_d4rl.torch_data import TorchBatchIterator

        return TorchBatchIterator(self._sequence_sampler(batch_size, seq_len), device=device,
                                  num_batches=count)

    def _sequence_sampler(self, batch_size, seq_len):
        sampler = self._sampler
        if sampler is None or (sampler.batch_size, sampler.seq_len) != (batch_size, seq_len):
            # The sampler draws from self.rng itself (default_rng returns a Generator unchanged).
            sampler = SequenceSampler(self, batch_size=batch_size, seq_len=seq_len, seed=self.rng)
            self._sampler = sampler
        return sampler

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path):
        """Write the replay (episodes and sampling generator state) to ``path`` (.npz)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {key: self._steps(key) for key in STEP_KEYS}
        arrays.update({key: self._column(key, dtype) for key, dtype in (
            ("episode_starts", np.int64), ("episode_lengths", np.int64),
            ("policy_steps", np.int64), ("episode_seeds", np.int64))})
        arrays["policy_ids"] = self._column("policy_ids", str)
        lengths = np.array([len(ids) for ids in self._video_ids], np.int64)
        arrays["video_id_lengths"] = lengths
        arrays["video_id_values"] = (np.concatenate(self._video_ids) if self._video_ids
                                     else np.zeros(0, np.int32))
        arrays["meta"] = np.array(json.dumps({
            "action_dim": self.action_dim, "image_shape": list(self.image_shape),
            "rng_state": self.rng.bit_generator.state}))
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        """Read a replay written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            replay = cls(meta["action_dim"], image_shape=tuple(meta["image_shape"]))
            replay.rng.bit_generator.state = meta["rng_state"]
            num_steps = len(data["image"])
            replay._buffers = replay._allocate(max(num_steps, _INITIAL_CAPACITY))
            for key in STEP_KEYS:
                replay._buffers[key][:num_steps] = data[key]
            replay._num_steps = num_steps
            for key in ("episode_starts", "episode_lengths", "policy_steps", "episode_seeds"):
                replay._episodes[key] = [int(v) for v in data[key]]
            replay._episodes["policy_ids"] = [str(v) for v in data["policy_ids"]]
            replay._episodes["returns"] = [
                float(replay._buffers["reward"][s:s + n].sum(dtype=np.float64))
                for s, n in zip(replay._episodes["episode_starts"],
                                replay._episodes["episode_lengths"])]
            offsets = np.cumsum(np.r_[0, data["video_id_lengths"]])
            values = data["video_id_values"]
            replay._video_ids = [values[a:b].astype(np.int32)
                                 for a, b in zip(offsets[:-1], offsets[1:])]
        return replay

    # -- internals -----------------------------------------------------------------------------

    def _allocate(self, capacity):
        return {"image": np.empty((capacity,) + self.image_shape, np.uint8),
                "action": np.empty((capacity, self.action_dim), np.float32),
                "reward": np.empty(capacity, np.float32),
                "discount": np.empty(capacity, np.float32),
                "is_first": np.empty(capacity, bool),
                "is_last": np.empty(capacity, bool),
                "is_terminal": np.empty(capacity, bool)}

    def _reserve(self, needed):
        capacity = len(self._buffers["image"])
        if needed <= capacity:
            return
        new = self._allocate(max(needed, 2 * capacity))
        for key in STEP_KEYS:
            new[key][:self._num_steps] = self._buffers[key][:self._num_steps]
        self._buffers = new

    def _steps(self, key):
        return self._buffers[key][:self._num_steps]

    def _column(self, key, dtype):
        values = self._episodes[key]
        return np.array(values, dtype=dtype) if values else np.zeros(0, dtype)
