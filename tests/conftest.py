"""Shared test helpers: synthetic episodes and tiny datasets written through the real ShardWriter.

Import the helpers directly (``from conftest import make_episode, write_tiny_dataset``) or use the
fixtures ``episode_factory``, ``tiny_dataset_factory`` and ``tiny_dataset_path``.
"""

import os
import tempfile

import numpy as np
import pytest

# Tests never talk to the real Hugging Face Hub nor touch the user's cache: huggingface_hub reads
# these once, at import, so they are set before any test module imports it.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="lqv-test-hf-home-")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_TOKEN", "lqv-test-token")

from lqv_d4rl.format import ShardWriter


def make_episode(length: int = 501, action_dim: int = 6, seed: int = 0, *, terminal: bool = False,
                 reward_scale: float = 1.0) -> dict:
    """A step dict of ``length`` entries following the entry convention, with random content.

    Images are real 64x64x3 uint8 noise, actions in [-1, 1], rewards in [0, reward_scale); entry 0
    has zero action, zero reward and discount 1. ``terminal=True`` ends the episode with
    is_terminal and discount 0. The same seed gives the same episode.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(length, 64, 64, 3), dtype=np.uint8)
    action = rng.uniform(-1, 1, size=(length, action_dim)).astype(np.float32)
    reward = (rng.random(length) * reward_scale).astype(np.float32)
    discount = np.ones(length, np.float32)
    action[0], reward[0] = 0.0, 0.0
    is_first = np.zeros(length, bool)
    is_first[0] = True
    is_last = np.zeros(length, bool)
    is_last[-1] = True
    is_terminal = np.zeros(length, bool)
    if terminal:
        is_terminal[-1] = True
        discount[-1] = 0.0
    return {"image": image, "action": action, "reward": reward, "discount": discount,
            "is_first": is_first, "is_last": is_last, "is_terminal": is_terminal}


EVALUABLE_PROVENANCE = {"seed": 0, "distractor": {"kind": "procedural", "seed": 0,
                                                  "num_frames": 200, "rgb": False},
                        "env": {"composite": "segmentation", "render_quality": "fast"}}
"""``write_tiny_dataset(..., provenance=EVALUABLE_PROVENANCE)``: a dataset whose evaluation
environment the toolkit can rebuild (procedural background), for end-to-end train + evaluate tests."""


def load_benchmark_script(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package; as when run,
    their folder is on ``sys.path`` for the helpers they share, e.g. ``run_info``)."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_policy_id(policy_index: int) -> str:
    """Policy id used by :func:`write_tiny_dataset` for its ``policy_index``-th policy."""
    return f"policy-{policy_index:02d}"


def write_tiny_dataset(folder, *, num_policies: int = 3, episodes_per_policy: int = 2,
                       length: int = 21, task: str = "walker_walk", level: str = "medrep",
                       dataset_id: str | None = None, action_dim: int | None = None,
                       max_shard_bytes: int | None = None, seed: int = 0, **writer_options):
    """Write a small dataset with ShardWriter and return its folder.

    Episode ``k`` (0-based, policies in blocks) is ``make_episode(length, action_dim, seed=seed+k)``
    with policy id ``tiny_policy_id(k // episodes_per_policy)``, policy_step ``1000 * policy``,
    seed ``seed + k`` and video ids ``[k, k + 1]``. ``max_shard_bytes`` defaults to about two
    episodes, so that a few shards are written.
    """
    from lqv_d4rl.tasks import TASKS

    action_dim = action_dim or (TASKS[task].action_dim if task in TASKS else 6)
    dataset_id = dataset_id or f"{task}-{level}"
    episode_bytes = length * (64 * 64 * 3 + 4 * action_dim + 4 + 4 + 3)
    options = dict(dataset_id=dataset_id, task=task, level=level, action_dim=action_dim,
                   max_shard_bytes=max_shard_bytes or 2 * episode_bytes,
                   provenance={"seed": seed, "distractor": {"kind": "test-noise"}})
    options.update(writer_options)
    with ShardWriter(folder, **options) as writer:
        for k in range(num_policies * episodes_per_policy):
            policy = k // episodes_per_policy
            writer.add_episode(make_episode(length, action_dim, seed=seed + k),
                               policy_id=tiny_policy_id(policy), policy_step=1000 * policy,
                               seed=seed + k, video_ids=[k, k + 1])
    return folder


def record_walker_episode(env, policy_std, *, seed, steps):
    """One episode of ``steps`` agent steps of a seeded Gaussian random policy in the real ``env``,
    as a step dict."""
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    action_dim = env.action_space.shape[0]
    entries = {"image": [observation], "action": [np.zeros(action_dim, np.float32)],
               "reward": [0.0], "discount": [1.0]}
    for _ in range(steps):
        action = np.clip(rng.normal(0.0, policy_std, action_dim), -1, 1).astype(np.float32)
        observation, reward, terminated, _, info = env.step(action)
        for key, value in (("image", observation), ("action", action), ("reward", reward),
                           ("discount", info["discount"])):
            entries[key].append(value)
        assert not terminated  # walker never terminates early
    flags = np.zeros(steps + 1, bool)
    return {
        "image": np.stack(entries["image"]), "action": np.stack(entries["action"]),
        "reward": np.array(entries["reward"], np.float32),
        "discount": np.array(entries["discount"], np.float32),
        "is_first": np.r_[True, flags[1:]], "is_last": np.r_[flags[1:], True],
        "is_terminal": flags.copy(),
    }


WALKER_POLICIES = {"narrow": 0.15, "wide": 1.0}
"""Behaviour policies of :func:`record_walker_dataset`: id -> std of its Gaussian actions."""


def record_walker_dataset(folder, *, episodes_per_policy=2, steps=24):
    """A walker_walk dataset recorded from the real environment over the procedural video (64
    frames) with the seeded random policies of ``WALKER_POLICIES``, the narrow one first, written
    through ShardWriter with the provenance that evaluation rebuilds the environment from."""
    from lqv_d4rl.envs import make_env

    env = make_env("walker_walk", seed=0, num_video_frames=64)
    provenance = {"seed": 0, "distractor": env.video_pool.description,
                  "env": {"composite": "segmentation", "render_quality": "fast"}}
    try:
        with ShardWriter(folder, dataset_id="walker_walk-medrep", task="walker_walk",
                         level="medrep", action_dim=6, provenance=provenance) as writer:
            for policy_index, (policy_id, std) in enumerate(WALKER_POLICIES.items()):
                for episode in range(episodes_per_policy):
                    seed = 100 * policy_index + episode
                    writer.add_episode(record_walker_episode(env, std, seed=seed, steps=steps),
                                       policy_id=policy_id, policy_step=1000 * policy_index,
                                       seed=seed)
    finally:
        env.close()
    return folder


def shard_byte_offsets(path) -> dict:
    """Byte offsets inside a shard file where a flipped byte hits a given part of it: the HDF5
    superblock, the middle of the first gzip image chunk, the episode table's ``return`` and
    ``seed`` columns, and the last byte of the file."""
    import h5py

    with h5py.File(path, "r") as handle:
        chunk = handle["steps/image"].id.get_chunk_info(0)
        returns = handle["episodes/return"].id.get_offset()
        seeds = handle["episodes/seed"].id.get_offset()
    return {"superblock": 9, "image chunk": chunk.byte_offset + chunk.size // 2,
            "episode returns": returns + 3, "episode seeds": seeds + 1,
            "last byte": os.path.getsize(path) - 1}


def flip_byte(path, offset: int) -> None:
    """Invert every bit of the byte at ``offset`` of the file ``path``."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))


@pytest.fixture
def episode_factory():
    """The :func:`make_episode` function, as a fixture."""
    return make_episode


@pytest.fixture
def tiny_dataset_factory():
    """The :func:`write_tiny_dataset` function, as a fixture."""
    return write_tiny_dataset


@pytest.fixture
def tiny_dataset_path(tmp_path):
    """A finished 'walker_walk-medrep' dataset under ``tmp_path/root``: 3 policies x 2 episodes of
    21 entries in 3 shards. Load it with ``load_dataset(tiny_dataset_path)`` or with
    ``load_dataset("walker_walk-medrep", root=tiny_dataset_path.parent)``."""
    return write_tiny_dataset(tmp_path / "root" / "walker_walk-medrep")
