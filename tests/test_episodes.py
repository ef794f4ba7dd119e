"""Episodes as users of Minari, D4RL and PyTorch expect them: iterate and sample episodes, feed a
DataLoader with worker processes, run ``python -m lqv_d4rl``; and the device error on CPU."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset
from torch.utils.data import DataLoader

from lqv_d4rl import __version__
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.torch_data import (
    DeviceUnavailableError,
    EpisodeDataset,
    SequenceDataset,
    make_device_sampler,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two datasets: 6 episodes of 21 entries, and two episodes of 5 and 13 entries."""
    from conftest import make_episode

    from lqv_d4rl.format import ShardWriter

    first = write_tiny_dataset(tmp_path_factory.mktemp("d") / "walker_walk-medrep")
    second = tmp_path_factory.mktemp("e") / "walker_walk-medium"
    with ShardWriter(second, dataset_id="walker_walk-medium", task="walker_walk", level="medium",
                     action_dim=6) as writer:
        for length, seed in ((5, 50), (13, 51)):
            writer.add_episode(make_episode(length, 6, seed=seed), policy_id="m")
    return [first, second]


@pytest.fixture(scope="module")
def data(folders):
    """The two datasets loaded together: 8 episodes of lengths 21 x 6, 5 and 13."""
    return load_dataset(folders)


def assert_same_steps(got: dict, want: dict):
    assert set(got) >= set(want)
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)


def test_iterate_and_sample_episodes(data):
    assert len(data) == 8
    episodes = list(data.iterate_episodes())
    assert len(episodes) == 8
    for index, episode in enumerate(episodes):
        assert_same_steps(episode, data.episode(index))
        assert len(episode["reward"]) == data.episode_lengths[index]
        assert episode["is_first"][0] and episode["is_last"][-1]

    sampled = data.sample_episodes(3, seed=4)
    chosen = np.random.default_rng(4).choice(8, size=3, replace=False)
    assert len(sampled) == 3
    for episode, index in zip(sampled, chosen):
        assert_same_steps(episode, data.episode(int(index)))
    lengths = [len(e["reward"]) for e in data.sample_episodes(3, seed=4)]
    assert lengths == [len(e["reward"]) for e in sampled]  # same seed, same episodes
    assert len(data.sample_episodes(8, seed=0)) == 8
    with pytest.raises(ValueError, match="between 0 and the 8 episodes"):
        data.sample_episodes(9, seed=0)


def expected_windows(data, seq_len, stride):
    return [(e, s) for e in range(len(data))
            for s in range(0, int(data.episode_lengths[e]) - seq_len + 1, stride)]


@pytest.mark.parametrize("seq_len, stride", [(5, 1), (8, 3), (21, 1)])
def test_sequence_dataset_holds_every_window_inside_an_episode(data, seq_len, stride):
    windows = SequenceDataset(data, seq_len, stride=stride)
    wanted = expected_windows(data, seq_len, stride)
    assert len(windows) == len(wanted)
    for index, (episode, start) in enumerate(wanted):
        item = windows[index]
        assert (int(item["episode"]), int(item["start"])) == (episode, start)
        steps = data.episode(episode)
        assert_same_steps(item, {key: value[start:start + seq_len] for key, value in steps.items()})
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (seq_len, 64, 64, 3)
    with pytest.raises(ValueError, match="seq_len"):
        SequenceDataset(data, 0)


def _batches(loader):
    return [{key: value.clone() for key, value in batch.items()} for batch in loader]


@pytest.mark.parametrize("lazy", [False, True])
def test_dataloader_with_worker_processes_gives_the_same_seeded_batches(folders, data, lazy):
    windows = SequenceDataset(load_dataset(folders, lazy=lazy), seq_len=6, stride=2)

    def batches(workers):
        loader = DataLoader(windows, batch_size=4, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(3))
        return list(loader)

    single, parallel = batches(0), batches(2)
    assert len(single) == len(parallel) == -(-len(windows) // 4)
    for a, b in zip(single, parallel):
        assert_same_steps(b, a)
    seen = [(int(episode), int(start)) for batch in parallel
            for episode, start in zip(batch["episode"], batch["start"])]
    assert sorted(seen) == expected_windows(data, 6, 2)  # every window once per epoch
    assert seen != expected_windows(data, 6, 2)  # shuffled
    batch = parallel[0]
    assert batch["image"].shape == (4, 6, 64, 64, 3) and batch["action"].shape == (4, 6, 6)
    for row, (episode, start) in enumerate(seen[:4]):
        steps = data.episode(episode)
        assert_same_steps({key: value[row] for key, value in batch.items()},
                          {key: value[start:start + 6] for key, value in steps.items()})


def test_episode_dataset_gives_whole_episodes_to_a_dataloader(data):
    episodes = EpisodeDataset(data)
    loaded = list(DataLoader(episodes, batch_size=None, num_workers=2))
    assert [int(item["episode"]) for item in loaded] == list(range(8))
    for item in loaded:
        assert_same_steps(item, data.episode(int(item["episode"])))


def test_python_dash_m_runs_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lqv_d4rl", "--version"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
    result = subprocess.run([sys.executable, "-m", "lqv_d4rl", "list", "--json", "--root",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and '"walker_walk-medrep"' in result.stdout


def test_device_sampler_without_that_device_raises_the_documented_error(data):
    missing = ["cuda:99", "no-such-device"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in missing:
        with pytest.raises(DeviceUnavailableError, match="device='cpu'"):
            make_device_sampler(data, device=device, batch_size=2, seq_len=4)
    assert "DeviceUnavailableError" in make_device_sampler.__doc__
