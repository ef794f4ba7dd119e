"""Tests of lqv_d4rl.samplers and lqv_d4rl.torch_data.

Most tests use small in-memory datasets whose images encode where they come from (channel 0 =
episode index, channels 1-2 = entry index t), so that every sampled frame can be checked against
the (episode, start) the sampler reports. The integration tests at the end go through the real
ShardWriter -> load_dataset path, in RAM and lazy.
"""

import math
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lqv_d4rl import samplers
from lqv_d4rl.samplers import (
    ConservativeSampler,
    LiteralConservativeSampler,
    PolicyConservativeSampler,
    ReturnCurriculumSampler,
    SamplerError,
    SequenceSampler,
    TransitionSampler,
    action_entropy,
    make_sequence_sampler,
    order_policies,
)
from lqv_d4rl.torch_data import (
    DeviceMemoryError,
    DeviceSequenceSampler,
    TorchBatchIterator,
    free_device_bytes,
    make_device_sampler,
)

IMAGE_SIZE = 8  # the samplers do not care about the frame size; small frames keep tests fast


def memory_dataset(
    lengths,
    *,
    policy_ids=None,
    policy_steps=None,
    returns=None,
    action_scales=None,
    action_dim=2,
    terminal_episodes=(),
    seed=0,
):
    """A dataset-like object with the flat arrays of lqv_d4rl.Dataset, built in memory.

    Entry t of episode e has an image whose channel 0 is e and channels 1-2 are t (low, high
    byte); a reward of returns[e] / (length - 1) (0 at entry 0); actions uniform in
    [-action_scales[e], action_scales[e]] (zero at entry 0).
    """
    rng = np.random.default_rng(seed)
    num_episodes = len(lengths)
    policy_ids = policy_ids or [f"policy-{e}" for e in range(num_episodes)]
    policy_steps = policy_steps or [-1] * num_episodes
    returns = returns if returns is not None else list(rng.uniform(0, 100, num_episodes))
    action_scales = action_scales or [1.0] * num_episodes
    steps = {key: [] for key in ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal")}
    for e, length in enumerate(lengths):
        t = np.arange(length)
        image = np.zeros((length, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        image[..., 0] = e % 256  # (tests with > 256 episodes do not decode images)
        image[..., 1] = (t % 256)[:, None, None]
        image[..., 2] = (t // 256)[:, None, None]
        action = rng.uniform(-1, 1, (length, action_dim)).astype(np.float32) * action_scales[e]
        action[0] = 0
        reward = np.full(length, returns[e] / max(length - 1, 1), np.float32)
        reward[0] = 0
        is_terminal = np.zeros(length, bool)
        is_terminal[-1] = e in terminal_episodes
        discount = (~is_terminal).astype(np.float32)
        for key, value in zip(
            steps,
            (image, action, reward, discount, t == 0, t == length - 1, is_terminal),
        ):
            steps[key].append(value)
    flat = {key: np.concatenate(values) for key, values in steps.items()}
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return SimpleNamespace(
        images=flat["image"],
        actions=flat["action"],
        rewards=flat["reward"],
        discounts=flat["discount"],
        is_first=flat["is_first"],
        is_last=flat["is_last"],
        is_terminal=flat["is_terminal"],
        episode_starts=starts,
        episode_lengths=np.asarray(lengths, np.int64),
        returns=np.array([flat["reward"][s : s + n].sum() for s, n in zip(starts, lengths)], np.float64),
        policy_ids=np.asarray(policy_ids, dtype=str),
        policy_steps=np.asarray(policy_steps, np.int64),
    )


def decode_images(images):
    """(..., H, W, 3) images of memory_dataset -> (episode, t) arrays (...)."""
    pixel = images[..., 0, 0, :].astype(np.int64)
    return pixel[..., 0], pixel[..., 1] + 256 * pixel[..., 2]


def assert_windows_consistent(dataset, batch, seq_len):
    """Every window lies inside the episode the batch names, at the offset it names."""
    episodes, t = decode_images(batch["image"])
    assert np.all(episodes == batch["episode"][:, None])
    assert np.all(t == batch["start"][:, None] + np.arange(seq_len))
    assert np.all(batch["start"] + seq_len <= dataset.episode_lengths[batch["episode"]])
    # is_first can only appear at position 0, and exactly when the window starts the episode
    assert not batch["is_first"][:, 1:].any()
    assert np.array_equal(batch["is_first"][:, 0], batch["start"] == 0)
    assert not batch["is_last"][:, :-1].any()
    rows = dataset.episode_starts[batch["episode"]][:, None] + batch["start"][:, None] + np.arange(seq_len)
    assert np.array_equal(batch["action"], dataset.actions[rows])
    assert np.array_equal(batch["reward"], dataset.rewards[rows])


def mixed_policy_dataset():
    """Six policies, four episodes each, with action spreads from narrow to wide."""
    policies = [f"ckpt-{p}" for p in range(6)]
    return memory_dataset(
        [60] * 24,
        policy_ids=[policies[e // 4] for e in range(24)],
        policy_steps=[1000 * (e // 4) for e in range(24)],
        returns=[10.0 * (e // 4) + e % 4 for e in range(24)],
        action_scales=[0.05 + 0.19 * (e // 4) for e in range(24)],
    )


# ----------------------------------------------------------------------------------------------
# random sequences
# ----------------------------------------------------------------------------------------------


def test_random_batches_have_the_documented_keys_shapes_and_dtypes():
    dataset = memory_dataset([120, 80, 60], action_dim=3)
    batch = make_sequence_sampler(dataset, batch_size=5, seq_len=50).sample()
    expected = {
        "image": ((5, 50, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
        "action": ((5, 50, 3), np.float32),
        "reward": ((5, 50), np.float32),
        "discount": ((5, 50), np.float32),
        "is_first": ((5, 50), np.bool_),
        "is_last": ((5, 50), np.bool_),
        "is_terminal": ((5, 50), np.bool_),
        "episode": ((5,), np.int64),
        "start": ((5,), np.int64),
    }
    assert set(batch) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape, key
        assert batch[key].dtype == dtype, key


def test_random_windows_never_cross_episodes_and_cover_starts_and_ends():
    dataset = memory_dataset([12, 7, 30, 9, 10])
    sampler = make_sequence_sampler(dataset, batch_size=64, seq_len=7, seed=3)
    seen_starts = set()
    for _ in range(30):
        batch = sampler.sample()
        assert_windows_consistent(dataset, batch, 7)
        seen_starts.update(zip(batch["episode"].tolist(), batch["start"].tolist()))
    assert (1, 0) in seen_starts  # the episode of exactly seq_len entries has its one window
    assert (2, 23) in seen_starts  # the last window of the long episode
    assert sampler.step == 30


def test_random_skips_short_episodes_and_errors_when_none_is_long_enough():
    dataset = memory_dataset([10, 60, 5, 49])
    batch = make_sequence_sampler(dataset, batch_size=32, seq_len=50).sample()
    assert set(batch["episode"].tolist()) == {1}
    with pytest.raises(SamplerError, match="no episode has at least seq_len=61.*longest has 60"):
        make_sequence_sampler(dataset, seq_len=61)


def test_random_is_uniform_over_windows():
    # 11 windows in episode 0, 101 in episode 1: uniform over windows, not over episodes
    dataset = memory_dataset([60, 150])
    batch = make_sequence_sampler(dataset, batch_size=20_000, seq_len=50, seed=0).sample()
    share = np.mean(batch["episode"] == 0)
    assert share == pytest.approx(11 / 112, abs=0.01)
    starts_of_long = batch["start"][batch["episode"] == 1]
    assert starts_of_long.min() == 0 and starts_of_long.max() == 100


def test_same_seed_gives_the_same_batches_and_another_seed_does_not():
    dataset = memory_dataset([70, 90, 55])
    first = [make_sequence_sampler(dataset, batch_size=8, seq_len=20, seed=7).sample() for _ in range(2)]
    assert all(np.array_equal(first[0][k], first[1][k]) for k in first[0])
    other = make_sequence_sampler(dataset, batch_size=8, seq_len=20, seed=8).sample()
    assert not np.array_equal(first[0]["start"], other["start"])


def test_sample_into_a_reused_batch_gives_the_same_values():
    dataset = memory_dataset([70, 90, 55])
    fresh = make_sequence_sampler(dataset, batch_size=6, seq_len=20, seed=2)
    reused = make_sequence_sampler(dataset, batch_size=6, seq_len=20, seed=2)
    buffer = reused.empty_batch()
    for _ in range(3):
        want = fresh.sample()
        got = reused.sample(out=buffer)
        assert got is buffer
        for key in want:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key


def test_recycled_batches_never_overwrite_what_is_still_referenced():
    dataset = memory_dataset([70, 90, 55])
    sampler = make_sequence_sampler(dataset, batch_size=4, seq_len=10, seed=0)
    kept = sampler.sample()
    kept_copy = {key: value.copy() for key, value in kept.items()}
    view = sampler.sample()["image"][1:3]  # only a view of this batch survives
    view_copy = view.copy()
    tensor = torch.from_numpy(sampler.sample()["action"])
    tensor_copy = tensor.clone()
    for _ in range(5):
        sampler.sample()
    assert all(np.array_equal(kept[key], kept_copy[key]) for key in kept)
    assert np.array_equal(view, view_copy) and torch.equal(tensor, tensor_copy)
    # batches nobody keeps are filled again in place (where reference counts can be trusted)
    if sampler.recycler.enabled:
        addresses = {sampler.sample()["image"].ctypes.data for _ in range(6)}
        assert len(addresses) == 1


def test_a_kept_array_of_a_batch_is_never_overwritten():
    dataset = memory_dataset([70, 90, 55])
    sampler = make_sequence_sampler(dataset, batch_size=4, seq_len=10, seed=0)
    actions = sampler.sample()["action"]  # the dict is dropped; only this one array is kept
    kept = actions.copy()
    for _ in range(5):
        batch = sampler.sample()
        assert not any(np.shares_memory(actions, value) for value in batch.values())
    assert np.array_equal(actions, kept)


def test_recycling_is_on_where_reference_counts_work():
    if samplers._free_threaded():
        assert samplers._single_owner_count() is None
    else:
        assert samplers._single_owner_count() == samplers._SINGLE_OWNER_COUNT is not None
        sampler = make_sequence_sampler(memory_dataset([30]), batch_size=2, seq_len=10)
        image = weakref.ref(sampler.sample()["image"])
        assert image() is not None  # kept for reuse


def test_recycling_turns_itself_off_where_reference_counts_cannot_be_trusted(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(samplers, "_free_threaded", lambda: True)
        assert samplers._single_owner_count() is None
    with monkeypatch.context() as patch:  # a calibration whose counts do not react to references
        patch.setattr(samplers, "_reference_counts", lambda arrays: [2 for _ in arrays])
        assert samplers._single_owner_count() is None
    monkeypatch.setattr(samplers, "_SINGLE_OWNER_COUNT", None)
    dataset = memory_dataset([70, 90, 55])
    sampler = make_sequence_sampler(dataset, batch_size=4, seq_len=10, seed=3)
    fresh = make_sequence_sampler(dataset, batch_size=4, seq_len=10, seed=3, recycle=False)
    assert not sampler.recycler.enabled
    for _ in range(3):
        got, want = sampler.sample(), fresh.sample()
        assert all(np.array_equal(got[key], want[key]) for key in want)
        image = weakref.ref(got["image"])
        del got
        assert image() is None  # nothing is kept back for reuse


def test_recycling_does_not_change_the_batches():
    dataset = memory_dataset([70, 90, 55])
    recycling = make_sequence_sampler(dataset, batch_size=4, seq_len=10, seed=3)
    fresh = make_sequence_sampler(dataset, batch_size=4, seq_len=10, seed=3, recycle=False)
    for _ in range(5):
        want, got = fresh.sample(), recycling.sample()
        assert all(np.array_equal(got[key], want[key]) for key in want)


def test_sampler_is_an_endless_iterable():
    dataset = memory_dataset([30])
    sampler = make_sequence_sampler(dataset, batch_size=2, seq_len=10)
    batches = [batch for _, batch in zip(range(4), sampler)]
    assert len(batches) == 4 and sampler.step == 4


def test_bad_modes_options_and_sizes_are_clear_errors():
    dataset = memory_dataset([30])
    with pytest.raises(SamplerError, match="unknown sampling mode 'uniform'"):
        make_sequence_sampler(dataset, mode="uniform")
    with pytest.raises(SamplerError, match="does not take option.*epoch_length"):
        make_sequence_sampler(dataset, mode="random", epoch_length=5)
    with pytest.raises(SamplerError, match="batch_size must be a positive integer"):
        make_sequence_sampler(dataset, batch_size=0, seq_len=10)
    with pytest.raises(SamplerError, match="SimpleNamespace lacks actions, .*episode_starts"):
        make_sequence_sampler(SimpleNamespace(images=dataset.images))
    with pytest.raises(SamplerError, match="policy_order must be one of"):
        make_sequence_sampler(dataset, mode="conservative", seq_len=10, policy_order="best")


# ----------------------------------------------------------------------------------------------
# conservative
# ----------------------------------------------------------------------------------------------


def test_policies_are_ordered_by_step_then_return_then_appearance():
    dataset = memory_dataset(
        [20] * 4,
        policy_ids=["b", "a", "c", "a"],
        policy_steps=[300, 200, 100, 200],
        returns=[5.0, 50.0, 20.0, 30.0],
    )
    episodes = np.arange(4)
    assert order_policies(dataset, episodes) == ["c", "a", "b"]  # by policy_step
    assert order_policies(dataset, episodes, "return") == ["b", "c", "a"]  # means 5, 20, 40
    assert order_policies(dataset, episodes, "appearance") == ["b", "a", "c"]
    dataset.policy_steps[:] = -1  # no checkpoint steps: auto falls back to mean return
    assert order_policies(dataset, episodes) == ["b", "c", "a"]


def test_policy_conservative_batches_come_from_one_allowed_policy_until_the_data_opens_up():
    dataset = mixed_policy_dataset()
    sampler = make_sequence_sampler(
        dataset, mode="conservative_policy", batch_size=16, seq_len=50, seed=0, epoch_length=20
    )
    assert sampler.num_policies == 6
    assert sampler.policy_order == [f"ckpt-{p}" for p in range(6)]
    used_by_epoch = {}
    for _ in range(6 * 20):
        epoch = sampler.epoch
        allowed = sampler.allowed_policies()
        assert allowed == sampler.policy_order[:epoch]
        batch = sampler.sample()
        assert_windows_consistent(dataset, batch, 50)
        policies = set(dataset.policy_ids[batch["episode"]])
        assert len(policies) == 1 and policies <= set(allowed)
        used_by_epoch.setdefault(epoch, set()).update(policies)
    assert used_by_epoch[1] == {"ckpt-0"}
    assert len(used_by_epoch[6]) >= 4  # 20 batches drawn among 6 policies
    assert sampler.epoch == 7 and sampler.is_open
    mixed = [len(set(dataset.policy_ids[sampler.sample()["episode"]])) for _ in range(5)]
    assert max(mixed) > 1


def test_policy_conservative_set_epoch_and_default_epoch_length():
    dataset = mixed_policy_dataset()
    sampler = PolicyConservativeSampler(dataset, seq_len=50)
    assert sampler.epoch_length == 25_000 // 6
    sampler.set_epoch(3)
    assert sampler.step == 2 * sampler.epoch_length and sampler.epoch == 3
    assert sampler.allowed_policies() == ["ckpt-0", "ckpt-1", "ckpt-2"]
    sampler.set_epoch(7)
    assert sampler.is_open
    with pytest.raises(SamplerError, match="epoch must be an integer >= 1"):
        sampler.set_epoch(0)


def test_policy_conservative_sampling_lowers_action_entropy():
    dataset = mixed_policy_dataset()
    conservative = make_sequence_sampler(
        dataset, mode="conservative_policy", batch_size=32, seq_len=50, seed=1, epoch_length=10
    )
    random = make_sequence_sampler(dataset, batch_size=32, seq_len=50, seed=1)
    conservative_entropy = np.mean([action_entropy(conservative.sample()) for _ in range(60)])
    random_entropy = np.mean([action_entropy(random.sample()) for _ in range(60)])
    assert conservative_entropy < random_entropy - 0.2


def test_conservative_trajectories_are_ordered_by_policy_then_recording_time():
    # recorded interleaved: b, a, b, a, c; policy steps a=100 < b=200 < c=300
    dataset = memory_dataset([20] * 5, policy_ids=["b", "a", "b", "a", "c"],
                             policy_steps=[200, 100, 200, 100, 300])
    for sampler in (ConservativeSampler(dataset, seq_len=10, order="policy"),
                    LiteralConservativeSampler(dataset, seq_len=10)):
        assert sampler.trajectories.tolist() == [1, 3, 0, 2, 4]


def test_conservative_orders_trajectories_by_return_by_default():
    dataset = memory_dataset([20] * 5, returns=[30.0, 10.0, 50.0, 10.0, 0.0])
    assert ConservativeSampler(dataset, seq_len=10).trajectories.tolist() == [4, 1, 3, 0, 2]


def test_conservative_prefix_grows_evenly_over_the_whole_curriculum():
    sampler = ConservativeSampler(memory_dataset([12] * 400), seq_len=10, curriculum_steps=25_000)
    counts = [sampler.allowed_count(step) for step in range(0, 25_000, 100)]
    assert counts[0] == 10 and counts[-1] == 400  # the released code's 10 first, all n last
    assert all(b - a in (1, 2) for a, b in zip(counts, counts[1:]))  # 390 over 249 blocks
    assert sampler.allowed_count(22_500) < sampler.allowed_count(22_600) < 400  # still growing
    assert sampler.allowed_count(24_899) < 400 == sampler.allowed_count(24_900)
    assert sampler.allowed_count(10**6) == 400  # after the curriculum: the whole dataset


@pytest.mark.parametrize("episodes, curriculum_steps, counts", [
    (8, 50, {0: 8}),                    # one block: the whole dataset
    (5, 1000, {0: 5, 999: 5}),          # fewer episodes than the initial 10
    (30, 300, {0: 10, 100: 20, 199: 20, 200: 30}),
])
def test_conservative_prefix_on_short_curricula_and_small_datasets(episodes, curriculum_steps,
                                                                     counts):
    sampler = ConservativeSampler(memory_dataset([12] * episodes), seq_len=10,
                                  curriculum_steps=curriculum_steps)
    assert {step: sampler.allowed_count(step) for step in counts} == counts


def test_conservative_batches_come_from_the_lowest_return_prefix():
    returns = list(np.random.default_rng(1).permutation(40).astype(float))
    dataset = memory_dataset([30] * 40, returns=returns)
    sampler = make_sequence_sampler(dataset, mode="conservative", batch_size=64, seq_len=10,
                                    seed=0, curriculum_steps=400, initial_trajectories=10)
    lowest = {e for e in range(40) if returns[e] < 10}
    first = sampler.sample()
    assert set(first["episode"].tolist()) == lowest
    assert_windows_consistent(dataset, first, 10)
    sampler.set_step(399)
    assert len(set(sampler.sample()["episode"].tolist())) > 20


@pytest.mark.parametrize("pace, steps, counts", [
    (1.0, [0, 1, 4, 5, 100], [1, 2, 5, 6, 8]),       # the paper: one trajectory per update
    (0.5, [0, 1, 2, 3, 15, 100], [1, 1, 1, 2, 8, 8]),  # floor(m * pace), at least 1
    (3.0, [0, 1, 2], [3, 6, 8]),
])
def test_literal_conservative_counts_follow_min_m_pace_n(pace, steps, counts):
    sampler = LiteralConservativeSampler(memory_dataset([20] * 8), seq_len=10, pace=pace)
    assert [sampler.allowed_count(step) for step in steps] == counts
    assert sampler.num_trajectories == 8


def test_literal_conservative_batches_stay_inside_the_allowed_trajectories_then_open_up():
    dataset = mixed_policy_dataset()  # 24 trajectories, 4 per policy
    sampler = make_sequence_sampler(dataset, mode="conservative_literal", batch_size=32, seq_len=50,
                                    seed=0, pace=0.25)
    seen_before_open = set()
    for step in range(96):
        allowed = set(sampler.allowed_trajectories().tolist())
        assert len(allowed) == max(1, (step + 1) // 4)
        batch = sampler.sample()
        assert_windows_consistent(dataset, batch, 50)
        assert set(batch["episode"].tolist()) <= allowed
        seen_before_open.update(batch["episode"].tolist())
    assert sampler.is_open and len(seen_before_open) == 24
    assert len(set(sampler.sample()["episode"].tolist())) > 4


def smooth_medium_dataset(episodes=20, length=60, seed=0):
    """A one-policy ("medium") dataset whose actions change smoothly within an episode, as a
    trained policy's gait does, from a different starting point in every episode."""
    dataset = memory_dataset([length] * episodes, policy_ids=["medium"] * episodes, seed=seed)
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        start = int(dataset.episode_starts[e])
        walk = np.cumsum(rng.normal(0, 0.05, (length, 2)), 0) + rng.uniform(-0.7, 0.7, 2)
        dataset.actions[start:start + length] = np.clip(walk, -1, 1).astype(np.float32)
    return dataset


def test_a_one_policy_dataset_is_not_sampled_uniformly_and_has_lower_action_entropy():
    # the paper's Fig. 6 effect on a medium dataset: early conservative batches come from its first
    # trajectories only, so their actions are less varied than those of uniform batches
    dataset = smooth_medium_dataset()
    conservative = make_sequence_sampler(dataset, mode="conservative_literal", batch_size=32,
                                         seq_len=20, seed=3)
    uniform = make_sequence_sampler(dataset, batch_size=32, seq_len=20, seed=3)
    early = [conservative.sample() for _ in range(3)]  # from 1, 2 and 3 trajectories
    assert set(early[0]["episode"].tolist()) == {0}
    assert set(np.concatenate([batch["episode"] for batch in early]).tolist()) == {0, 1, 2}
    narrow = np.mean([action_entropy(batch) for batch in early])
    spread = np.mean([action_entropy(uniform.sample()) for _ in range(3)])
    assert narrow < spread - 0.3, (narrow, spread)


def test_unknown_policies_keep_the_recording_order():
    dataset = memory_dataset([20] * 5, policy_ids=["unknown"] * 5)
    sampler = LiteralConservativeSampler(dataset, seq_len=10)
    assert sampler.trajectories.tolist() == [0, 1, 2, 3, 4]
    assert set(sampler.sample()["episode"].tolist()) == {0}


# ----------------------------------------------------------------------------------------------
# return curriculum
# ----------------------------------------------------------------------------------------------


def curriculum_dataset():
    """30 episodes whose returns are a shuffled 0..29, so sorting them matters."""
    returns = np.random.default_rng(5).permutation(30).astype(float) * 10
    return memory_dataset([40] * 30, returns=list(returns))


def test_return_curriculum_prefix_grows_from_ten_to_all_episodes():
    dataset = curriculum_dataset()
    # increment = max(int(30 / (1000 / 100)), 1) = 3 episodes every 100 batches
    sampler = ReturnCurriculumSampler(dataset, seq_len=20, curriculum_steps=1000, update_every=100)
    sizes = [sampler.prefix_size(step) for step in (0, 99, 100, 500, 600, 700, 5000)]
    assert sizes == [10, 10, 13, 25, 28, 30, 30]
    faithful = ReturnCurriculumSampler(
        dataset, seq_len=20, curriculum_steps=1000, update_every=100, replicate_off_by_one=True
    )
    assert faithful.prefix_size(0) == 10 and faithful.prefix_size(5000) == 29


@pytest.mark.parametrize("episodes, increment, at_end", [
    (400, 1, 260),     # int(400 / 250.01) = 1: only 260 of 400 episodes after 25,100 updates
    (1000, 3, 760),    # int(1000 / 250.01) = 3 (not 4: the released code's 250.01)
    (200, 1, 199),     # max(int(0.8), 1) = 1; capped at E - 1 by the off-by-one
])
def test_return_curriculum_reproduces_the_released_schedule(episodes, increment, at_end):
    dataset = memory_dataset([3] * episodes, returns=list(range(episodes)))
    sampler = ReturnCurriculumSampler(dataset, seq_len=2, curriculum_steps=25_001,
                                      update_every=100, replicate_off_by_one=True)
    assert sampler.increment == increment
    assert [sampler.prefix_size(step) for step in (0, 99, 100, 199, 200)] == [
        10, 10, 10 + increment, 10 + increment, 10 + 2 * increment]
    assert sampler.prefix_size(25_099) == at_end  # the last model update's batch
    frozen = ReturnCurriculumSampler(dataset, seq_len=2, curriculum_steps=25_001,
                                     replicate_off_by_one=True, frozen_step=25_100)
    frozen.set_step(123_456)  # the policy phase draws from where the model phase ended
    assert frozen.prefix_size() == min(10 + 251 * increment, episodes - 1)


def test_return_curriculum_can_drop_duplicate_returns_as_the_released_dict_does():
    # returns 0, 5, 0, 7, 5, 0: a dict keyed by return keeps the LAST episode of each value
    dataset = memory_dataset([3] * 6, returns=[0.0, 5.0, 0.0, 7.0, 5.0, 0.0])
    dataset.returns[:] = [0.0, 5.0, 0.0, 7.0, 5.0, 0.0]
    sampler = ReturnCurriculumSampler(dataset, seq_len=2, unique_returns=True)
    assert sampler.sorted_episodes.tolist() == [5, 4, 3]
    kept = ReturnCurriculumSampler(dataset, seq_len=2)
    assert kept.sorted_episodes.tolist() == [0, 2, 5, 1, 4, 3]


def test_return_curriculum_samples_only_the_lowest_return_prefix():
    dataset = curriculum_dataset()
    sampler = make_sequence_sampler(
        dataset,
        mode="return_curriculum",
        batch_size=64,
        seq_len=20,
        seed=0,
        curriculum_steps=400,
        update_every=50,
    )
    rank = np.empty(30, int)
    rank[np.argsort(dataset.returns)] = np.arange(30)
    for step in range(0, 450, 50):
        sampler.set_step(step)
        allowed = sampler.prefix_size()
        batch = sampler.sample()
        assert_windows_consistent(dataset, batch, 20)
        assert rank[batch["episode"]].max() < allowed
        assert rank[batch["episode"]].max() >= allowed - 3  # the newest episodes are drawn too
    assert allowed == 30


@pytest.mark.parametrize("replicate_off_by_one", [False, True])
def test_best_episode_is_sampled_at_the_end_unless_replicating_the_off_by_one(replicate_off_by_one):
    dataset = curriculum_dataset()
    best = int(np.argmax(dataset.returns))
    sampler = make_sequence_sampler(
        dataset,
        mode="return_curriculum",
        batch_size=256,
        seq_len=20,
        seed=0,
        curriculum_steps=100,
        replicate_off_by_one=replicate_off_by_one,
    )
    sampler.set_step(100)
    episodes = np.concatenate([sampler.sample()["episode"] for _ in range(4)])
    assert (best in episodes) != replicate_off_by_one
    assert len(set(episodes.tolist())) == (29 if replicate_off_by_one else 30)


# ----------------------------------------------------------------------------------------------
# transitions
# ----------------------------------------------------------------------------------------------


def stacked_ts(stacked):
    """(B, 3k, H, W) channel-first stacks of memory_dataset frames -> (episode, t) arrays (B, k)."""
    size, channels = stacked.shape[:2]
    frames = stacked.reshape(size, channels // 3, 3, *stacked.shape[2:]).transpose(0, 1, 3, 4, 2)
    return decode_images(frames)


def test_transitions_stack_frames_repeating_the_first_at_episode_starts():
    dataset = memory_dataset([3, 2, 6], action_dim=2, terminal_episodes=(1,))
    sampler = TransitionSampler(dataset, batch_size=256, frame_stack=3, seed=0)
    batch = sampler.sample()
    assert batch["obs"].shape == (256, 9, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["obs"].dtype == np.uint8 and batch["next_obs"].shape == batch["obs"].shape
    t = batch["index"]
    obs_episode, obs_t = stacked_ts(batch["obs"])
    next_episode, next_t = stacked_ts(batch["next_obs"])
    expected_obs_t = np.maximum(t[:, None] + np.arange(-2, 1), 0)
    assert np.all(obs_episode == batch["episode"][:, None])
    assert np.all(next_episode == batch["episode"][:, None])
    assert np.array_equal(obs_t, expected_obs_t)
    assert np.array_equal(next_t, np.maximum(t[:, None] + np.arange(-1, 2), 0))
    assert np.all(t + 1 < dataset.episode_lengths[batch["episode"]])
    at_start = t == 0
    assert at_start.any()
    assert np.all(obs_t[at_start] == 0) and np.all(next_t[at_start] == [0, 0, 1])
    next_rows = dataset.episode_starts[batch["episode"]] + t + 1
    assert np.array_equal(batch["action"], dataset.actions[next_rows])
    assert not np.any(np.all(batch["action"] == 0, axis=1))  # never the entry-0 placeholder
    assert np.array_equal(batch["reward"], dataset.rewards[next_rows])
    assert np.array_equal(batch["is_terminal"], dataset.is_terminal[next_rows])
    assert batch["is_terminal"][batch["episode"] == 1].all()
    assert np.all(batch["discount"][batch["is_terminal"]] == 0)
    with pytest.warns(DeprecationWarning, match="is_terminal"):  # the old name, for a while
        assert batch["terminal"] is batch["is_terminal"]
    assert "terminal" not in batch and "terminal" not in list(batch)


def test_transitions_are_seeded():
    dataset = memory_dataset([50, 40])
    a = TransitionSampler(dataset, batch_size=16, seed=4).sample()
    b = TransitionSampler(dataset, batch_size=16, seed=4).sample()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = TransitionSampler(dataset, batch_size=16, seed=5).sample()
    assert not np.array_equal(a["index"], c["index"])


# ----------------------------------------------------------------------------------------------
# action entropy
# ----------------------------------------------------------------------------------------------


def test_action_entropy_ranges_from_zero_to_log_bins():
    rng = np.random.default_rng(0)
    assert action_entropy(np.full((1000, 3), 0.3)) == 0.0
    uniform = rng.uniform(-1, 1, (100_000, 2))
    assert action_entropy(uniform, bins=20) == pytest.approx(math.log(20), abs=0.01)
    narrow = rng.normal(0, 0.05, (100_000, 2))
    assert action_entropy(narrow) < action_entropy(uniform) - 1.0
    assert action_entropy(np.array([-5.0, 5.0])[:, None], bins=2) == pytest.approx(math.log(2))


def test_action_entropy_leaves_out_first_entries():
    batch = {
        "action": np.array([[[0.0], [0.93], [0.95]], [[0.0], [0.94], [0.96]]]),
        "is_first": np.array([[True, False, False], [True, False, False]]),
    }
    assert action_entropy(batch) == 0.0  # the zero placeholders would add a second bin
    assert action_entropy(batch["action"]) > 0.5
    with pytest.raises(SamplerError, match="no actions"):
        action_entropy(batch["action"][:, :1], batch["is_first"][:, :1])


# ----------------------------------------------------------------------------------------------
# torch adapters (CPU here; the CUDA test runs only where a GPU is present)
# ----------------------------------------------------------------------------------------------


def test_torch_iterator_yields_the_serial_batches_in_order():
    dataset = mixed_policy_dataset()
    serial = make_sequence_sampler(dataset, mode="conservative_literal", batch_size=4, seq_len=10,
                                   pace=0.5)
    expected = [serial.sample() for _ in range(7)]
    sampler = make_sequence_sampler(dataset, mode="conservative_literal", batch_size=4, seq_len=10,
                                    pace=0.5)
    with TorchBatchIterator(sampler, prefetch=3, num_batches=7) as iterator:
        batches = list(iterator)
    assert len(batches) == 7
    for got, want in zip(batches, expected):
        assert set(got) == set(want)
        for key in want:
            assert isinstance(got[key], torch.Tensor)
            assert np.array_equal(got[key].numpy(), want[key]), key
    assert batches[0]["is_first"].dtype == torch.bool


def test_torch_iterator_propagates_errors_and_closes_early():
    class Broken:
        def sample(self):
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        next(TorchBatchIterator(Broken()))
    dataset = memory_dataset([30])
    iterator = TorchBatchIterator(TransitionSampler(dataset, batch_size=4), prefetch=1)
    assert next(iterator)["obs"].shape == (4, 9, IMAGE_SIZE, IMAGE_SIZE)
    iterator.close()
    with pytest.raises(StopIteration):
        next(iterator)


def test_device_sampler_on_cpu_matches_the_host_sampler():
    dataset = curriculum_dataset()
    host = make_sequence_sampler(dataset, mode="return_curriculum", batch_size=8, seq_len=15, seed=2)
    device = make_device_sampler(
        dataset, mode="return_curriculum", device="cpu", batch_size=8, seq_len=15, seed=2
    )
    for _ in range(3):
        want, got = host.sample(), device.sample()
        for key in want:
            assert np.array_equal(got[key].numpy(), want[key]), key
    assert device.step == 3


def test_device_sampler_refuses_a_dataset_that_does_not_fit():
    dataset = memory_dataset([30, 30])
    sampler = SequenceSampler(dataset, batch_size=2, seq_len=10)
    with pytest.raises(DeviceMemoryError, match="needs .* GiB on cpu but only"):
        DeviceSequenceSampler(sampler, device="cpu", memory_budget=1000)


def test_free_cuda_memory_counts_what_the_caching_allocator_holds_unused(monkeypatch):
    # the driver's figures are simulated (no GPU here); PyTorch reuses its cached blocks
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 10 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * 2**30)
    assert free_device_bytes("cuda") == 9 * 2**30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_paths_match_the_host_sampler():
    dataset = mixed_policy_dataset()
    host = make_sequence_sampler(dataset, batch_size=8, seq_len=20, seed=1)
    on_device = make_device_sampler(dataset, device="cuda", batch_size=8, seq_len=20, seed=1)
    pinned = TorchBatchIterator(
        make_sequence_sampler(dataset, batch_size=8, seq_len=20, seed=1), device="cuda", num_batches=2
    )
    for got_pinned, _ in zip(pinned, range(2)):
        want, got = host.sample(), on_device.sample()
        for key in want:
            assert got[key].is_cuda and got_pinned[key].is_cuda
            assert np.array_equal(got[key].cpu().numpy(), want[key]), key
            assert np.array_equal(got_pinned[key].cpu().numpy(), want[key]), key


# ----------------------------------------------------------------------------------------------
# integration: ShardWriter -> load_dataset (in RAM and lazy) -> samplers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True])
def test_samplers_read_the_written_episodes(tiny_dataset_path, lazy):
    from lqv_d4rl.dataset import load_dataset

    dataset = load_dataset(tiny_dataset_path, lazy=lazy)
    assert len(dataset) == 6
    sampler = make_sequence_sampler(dataset, mode="conservative_literal", batch_size=6, seq_len=8)
    assert sampler.trajectories.tolist() == [0, 1, 2, 3, 4, 5]  # policies 00, 01, 02 in blocks
    for step in range(4):
        batch = sampler.sample()
        for i, (episode, start) in enumerate(zip(batch["episode"], batch["start"])):
            expected = dataset.episode(int(episode))
            for key in ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
                assert np.array_equal(batch[key][i], expected[key][start : start + 8]), key
        assert batch["episode"].max() <= step
    host = make_sequence_sampler(dataset, batch_size=6, seq_len=8, seed=1).sample()
    on_device = make_device_sampler(dataset, device="cpu", batch_size=6, seq_len=8, seed=1).sample()
    assert all(np.array_equal(on_device[key].numpy(), host[key]) for key in host)
    transitions = TransitionSampler(dataset, batch_size=16, seed=0).sample()
    for i, (episode, t) in enumerate(zip(transitions["episode"], transitions["index"])):
        frames = dataset.episode(int(episode))["image"][[max(t - 1, 0), t, t + 1]]
        assert np.array_equal(transitions["next_obs"][i], frames.transpose(0, 3, 1, 2).reshape(9, 64, 64))


def test_samplers_on_a_view_use_its_episode_table(tiny_dataset_path):
    from lqv_d4rl.dataset import load_dataset

    view = load_dataset(tiny_dataset_path).select([4, 1])
    batch = make_sequence_sampler(view, batch_size=16, seq_len=21, seed=0).sample()
    assert set(batch["episode"].tolist()) == {0, 1}
    for i, episode in enumerate(batch["episode"]):
        assert np.array_equal(batch["image"][i], view.episode(int(episode))["image"])
    on_device = make_device_sampler(view, device="cpu", batch_size=16, seq_len=21, seed=0).sample()
    assert np.array_equal(on_device["image"].numpy(), batch["image"])
