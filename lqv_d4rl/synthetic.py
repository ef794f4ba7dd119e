"""Synthetic sequence batches in the samplers' layout, for tests, benchmarks and learning checks.

Both functions return numpy arrays shaped like ``SequenceSampler.sample()``: ``image``
``(B, T, 64, 64, 3)`` uint8, ``action`` ``(B, T, A)`` float32 in [-1, 1], ``reward`` / ``discount``
``(B, T)`` float32, ``is_first`` / ``is_last`` / ``is_terminal`` ``(B, T)`` bool; entry 0 of every
sequence is an episode start with zero action. The same seed gives the same batch.
"""

import numpy as np


def _flags(batch, length):
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    is_last = np.zeros((batch, length), bool)
    return {"discount": np.ones((batch, length), np.float32), "is_first": is_first,
            "is_last": is_last, "is_terminal": is_last.copy()}


def noise_batch(batch, length, action_dim, seed=0):
    """Uniform noise images, uniform actions and rewards: shapes and dtypes, no structure (for
    timing and shape checks)."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (batch, length, action_dim)).astype(np.float32)
    actions[:, 0] = 0.0
    return {"image": rng.integers(0, 256, (batch, length, 64, 64, 3), dtype=np.uint8),
            "action": actions, "reward": rng.random((batch, length)).astype(np.float32),
            **_flags(batch, length)}


def moving_block_batch(batch, length, action_dim, seed=0, *, distractor=True):
    """A scene with something to learn: an orange block (the agent) that the first action component
    moves sideways, over moving gray stripes (the distractor video; plain black with
    ``distractor=False``). The reward is the block's horizontal position / 64, visible in the agent
    and not in the stripes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, length, 64, 64, 3), np.uint8)
    actions = rng.uniform(-1, 1, (batch, length, action_dim)).astype(np.float32)
    actions[:, 0] = 0.0
    rewards = np.zeros((batch, length), np.float32)
    columns = np.arange(64)
    for b in range(batch):
        x, phase = rng.uniform(12, 52), rng.uniform(0, 2 * np.pi)
        for t in range(length):
            x = float(np.clip(x + 4 * actions[b, t, 0], 6, 58))
            if distractor:
                stripes = (110 + 80 * np.sin(columns / 4.0 + phase + 0.8 * t)).astype(np.uint8)
                images[b, t] = stripes[None, :, None]
            images[b, t, 40:52, int(x) - 5:int(x) + 5] = (230, 120, 40)
            rewards[b, t] = x / 64.0
    return {"image": images, "action": actions, "reward": rewards, **_flags(batch, length)}


def to_torch(batch, device="cpu"):
    """The batch as torch tensors on ``device``."""
    import torch

    return {key: torch.as_tensor(value, device=device) for key, value in batch.items()}
