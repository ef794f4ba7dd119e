"""The model-free baselines (BC, DrQ+BC, DrQ+CQL, InfoGating): the shared core, the batches, the
losses pinned to hand-computed values, gradient routing, resume, and learning on an easy dataset.

Datasets are written through the real ShardWriter: noise episodes (``conftest.write_tiny_dataset``)
for the mechanics, a small real walker_walk recording (``conftest.record_walker_dataset``) for runs
that are evaluated, and a "point" dataset recorded by a fixed noisy policy (a dot that the policy
moves; its mean action is a fixed function of the dot's position, and the reward favours that
action) for the learning checks (``-m slow``).
"""

import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from baselines import bc, drq_bc, drq_cql, infogating
from baselines.core import (
    NATIVE_IMAGE_SIZE, PixelEncoder, ScaledInputConv, TwinCritic, draw_shifts, linear_schedule,
    random_shift, resize_frames, sample_clipped, shift_frames, soft_update,
)
from baselines.drq import td_target, twin_critic_loss
from baselines.drq_bc import td3_bc_actor_loss
from baselines.drq_cql import cql_penalty
from baselines.infogating import (
    GatedEncoder, GatingUNet, InverseEnergyModel, contrastive_inverse_loss, mask_penalty,
    unmasked_rows,
)
from baselines.model_free import FrameStackPolicy
from baselines.replay import FrameStackBatches, nstep_return
from lqv_d4rl import algorithms
from lqv_d4rl.algorithms import ConfigError
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.format import ShardWriter
from lqv_d4rl.runs import Run, read_metrics
from lqv_d4rl.samplers import TransitionSampler

torch.set_num_threads(1)

MODULES = {"bc": bc, "drq_bc": drq_bc, "drq_cql": drq_cql, "infogating": infogating}
TINY = {"batch_size": 6, "encoder_channels": 4, "feature_dim": 8, "units": 16, "actor_layers": 1,
        "updates": 4, "std_decay_updates": 10, "log_every": 1, "checkpoint_every": 2,
        "eval_episodes": 1, "eval_max_steps": 2}
TINY_EXTRA = {
    "bc": {},
    "drq_bc": {"critic_layers": 1},
    "drq_cql": {"critic_layers": 1, "cql_random_actions": 3},
    "infogating": {"mask_filters": 8, "mask_bottleneck": 8, "inverse_units": 8, "negatives": 5,
                   "warmup_updates": 2, "mask_noise_updates": 1, "mask_blocks": 3},
}


def tiny_config(name, **changes):
    """The ``name`` config with tiny networks (``changes`` override)."""
    return algorithms.get(name).config("smoke", **{**TINY, **TINY_EXTRA[name], **changes})


def train_run(name, dataset, folder, config, seed=0, **options):
    """Train ``name`` in the run folder ``folder``; returns the agent."""
    algorithm = algorithms.get(name)
    run = Run.open(folder, algorithm, config, dataset, seed=seed, **options)
    try:
        return algorithm.train(dataset, config, run, "cpu")
    finally:
        run.close()


@pytest.fixture(scope="module")
def noise_dataset(tmp_path_factory):
    """6 episodes of 21 entries of noise images (walker_walk-medrep, action dim 6)."""
    from conftest import write_tiny_dataset

    folder = tmp_path_factory.mktemp("mf-noise") / "walker_walk-medrep"
    return load_dataset(write_tiny_dataset(folder, length=21))


@pytest.fixture(scope="module")
def walker(tmp_path_factory):
    """A small dataset recorded from the real walker_walk environment (see conftest)."""
    from conftest import record_walker_dataset

    return record_walker_dataset(tmp_path_factory.mktemp("mf-walker") / "walker_walk-medrep",
                                 episodes_per_policy=1, steps=12)


# ---------------------------------------------------------------------------------- core


def test_encoder_output_sizes_are_computed_from_the_image_size():
    assert PixelEncoder(9, 64).repr_dim == 32 * 25 * 25 == 20_000
    assert PixelEncoder(9, 84).repr_dim == 32 * 35 * 35 == 39_200  # V-D4RL's hard-coded value
    assert GatedEncoder(9, 64, channels=8).repr_dim == 16 * 3 * 3
    assert GatedEncoder(9, 84, channels=8).repr_dim == 16 * 5 * 5
    encoder = PixelEncoder(9, 64, channels=4)
    features = encoder(torch.zeros(2, 9, 64, 64, dtype=torch.uint8))
    assert features.shape == (2, encoder.repr_dim)


def test_first_convolution_scales_its_input_like_vd4rl():
    torch.manual_seed(0)
    conv = ScaledInputConv(9, 4, 3, stride=2)
    frames = torch.randint(0, 256, (2, 9, 16, 16), dtype=torch.uint8)
    expected = F.conv2d(frames.float() / 255.0 - 0.5, conv.weight, conv.bias, stride=2)
    assert torch.allclose(conv(frames.float()), expected, atol=1e-5)
    with pytest.raises(ValueError, match="padding"):
        ScaledInputConv(9, 4, 3, padding=1)


def vd4rl_random_shift(frames, shifts, pad):
    """V-D4RL's RandomShiftsAug (replicate pad, then grid_sample) on (B, C, H, W) floats, with the
    given integer shifts instead of random ones."""
    count, _, size, _ = frames.shape
    padded = F.pad(frames, (pad,) * 4, mode="replicate")
    eps = 1.0 / (size + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, size + 2 * pad)[:size]
    arange = arange.unsqueeze(0).repeat(size, 1).unsqueeze(2)
    base = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(count, 1, 1, 1)
    grid = base + shifts.float().view(count, 1, 1, 2) * 2.0 / (size + 2 * pad)
    return F.grid_sample(padded, grid, padding_mode="zeros", align_corners=False)


def test_random_shift_is_vd4rl_grid_sample_crop():
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (5, 6, 16, 16), dtype=torch.uint8, generator=generator)
    shifts = torch.tensor([[0, 0], [8, 8], [0, 8], [3, 5], [4, 4]])
    ours = shift_frames(frames, shifts, pad=4).float()
    reference = vd4rl_random_shift(frames.float(), shifts, pad=4)
    assert torch.allclose(ours, reference, atol=1e-3)
    assert torch.equal(shift_frames(frames, torch.full((5, 2), 4), pad=4), frames)  # no shift


def test_augmentation_is_the_same_for_the_same_seed_and_differs_otherwise():
    frames = torch.randint(0, 256, (8, 9, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    def augmented(seed):
        return random_shift(frames, 4, torch.Generator().manual_seed(seed))

    assert torch.equal(augmented(3), augmented(3))
    assert not torch.equal(augmented(3), augmented(4))
    assert random_shift(frames, 0, torch.Generator()) is frames  # pad 0: no augmentation
    shifts = draw_shifts(1000, 4, torch.Generator().manual_seed(0), "cpu")
    assert shifts.min() == 0 and shifts.max() == 8


def test_sampled_actions_are_clipped_clamped_and_pass_gradients_straight_through():
    mean = torch.tensor([[0.0, 0.99, -0.99, 0.5]], requires_grad=True)
    samples = sample_clipped(mean.expand(2000, 4), 1.0, 0.3, torch.Generator().manual_seed(0))
    noise = samples.detach() - mean.detach()
    assert noise[:, 0].abs().max() <= 0.3 + 1e-6 and noise[:, 0].abs().max() > 0.29
    assert samples.max() <= 1 - 1e-6 and samples.min() >= -1 + 1e-6
    samples.sum().backward()
    assert torch.equal(mean.grad, torch.full((1, 4), 2000.0))  # clamping does not stop gradients


def test_noise_schedule_is_vd4rl_linear_schedule_in_updates():
    assert linear_schedule(1.0, 0.1, 125_000, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 125_000, 62_500) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 125_000, 125_000) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 125_000, 550_000) == pytest.approx(0.1)


def test_soft_update_moves_the_target_by_tau():
    online, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.fill_(1.0), target.weight.fill_(3.0)
        online.bias.fill_(0.0), target.bias.fill_(-1.0)
    soft_update(target, online, 0.01)
    assert torch.allclose(target.weight, torch.full((1, 2), 0.99 * 3.0 + 0.01 * 1.0))
    assert torch.allclose(target.bias, torch.tensor([-0.99]))


def test_critic_trunk_is_shared_by_all_actions_of_a_state():
    torch.manual_seed(0)
    critic = TwinCritic(20, 3, feature_dim=5, units=8)
    features, actions = torch.randn(4, 20), torch.rand(4, 7, 3) * 2 - 1
    q1, q2 = critic.q_values(critic.trunk_features(features), actions)
    # V-D4RL's way: repeat the encoder features and run the whole critic on every copy
    repeated = features[:, None].expand(4, 7, 20).reshape(28, 20)
    r1, r2 = critic(repeated, actions.reshape(28, 3))
    assert q1.shape == (4, 7)
    assert torch.allclose(q1.reshape(-1), r1, atol=1e-6)
    assert torch.allclose(q2.reshape(-1), r2, atol=1e-6)


def test_resize_frames_is_opencv_bicubic():
    import cv2

    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    resized = resize_frames(frames, 84)
    assert resized.shape == (3, 84, 84, 3) and resized.dtype == np.uint8
    assert np.array_equal(resized[1], cv2.resize(frames[1], (84, 84),
                                                 interpolation=cv2.INTER_CUBIC))
    assert resize_frames(frames, 64) is frames
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(frames.astype(np.float32), 84)


# ---------------------------------------------------------------------------------- batches


def test_one_step_batches_are_transition_sampler_transitions(noise_dataset):
    reference = TransitionSampler(noise_dataset, batch_size=32, frame_stack=3, seed=5).sample()
    batches = FrameStackBatches(noise_dataset, batch_size=32, frame_stack=3, nstep=1, seed=0)
    ours = batches.gather(reference["episode"], reference["index"])
    for key in ("obs", "next_obs", "action", "reward"):
        assert torch.equal(ours[key], torch.from_numpy(reference[key])), key
    # V-D4RL's discount of a transition carries gamma^n; TransitionSampler's is the entry's own
    assert torch.allclose(ours["discount"], 0.99 * torch.from_numpy(reference["discount"]))


def test_nstep_return_by_hand():
    reward, discount = nstep_return([[1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0]], 0.5)
    assert reward[0] == pytest.approx(1 + 0.5 * 2 + 0.25 * 3) and discount[0] == 0.125
    # a terminal entry (discount 0) ends the return: nothing after it counts
    reward, discount = nstep_return([[1.0, 2.0, 3.0]], [[1.0, 0.0, 1.0]], 0.5)
    assert reward[0] == pytest.approx(1 + 0.5 * 2) and discount[0] == 0.0
    assert td_target(torch.tensor([2.75]), torch.tensor([0.125]), torch.tensor([4.0]),
                     torch.tensor([8.0])).item() == pytest.approx(2.75 + 0.125 * 4.0)
    assert twin_critic_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0]),
                            torch.tensor([2.0, 2.0])).item() == pytest.approx(1.0 + 2.0)


def test_nstep_batches_sum_rewards_inside_the_episode(noise_dataset):
    data = noise_dataset
    batches = FrameStackBatches(data, batch_size=64, frame_stack=3, nstep=3, gamma=0.9, seed=1)
    batch = batches.batch(0)
    lengths = np.asarray(data.episode_lengths)[batch["episode"].numpy()]
    assert (batch["index"].numpy() + 3 <= lengths - 1).all()
    for i in range(8):
        row = int(data.episode_starts[batch["episode"][i]]) + int(batch["index"][i])
        expected = sum(0.9 ** j * data.rewards[row + 1 + j] for j in range(3))
        assert batch["reward"][i].item() == pytest.approx(expected, rel=1e-5)
        assert batch["discount"][i].item() == pytest.approx(0.9 ** 3)
        last = np.concatenate([data.images[row + 3 + k].transpose(2, 0, 1) for k in (-2, -1, 0)])
        assert np.array_equal(batch["next_obs"][i].numpy(), last)


def test_gap_pairs_stay_in_the_episode_and_cover_every_gap(noise_dataset):
    data = noise_dataset
    batches = FrameStackBatches(data, batch_size=256, frame_stack=3, nstep=0, max_gap=14, seed=2)
    batch = batches.batch(0)
    assert "next_obs" not in batch and "reward" not in batch
    t, gaps = batch["index"].numpy(), batch["gap"].numpy()
    lengths = np.asarray(data.episode_lengths)[batch["episode"].numpy()]
    assert gaps.min() == 1 and gaps.max() == 14
    assert (t + gaps <= lengths - 1).all()
    row = int(data.episode_starts[batch["episode"][0]]) + t[0] + gaps[0]
    assert np.array_equal(batch["future_obs"][0][-3:].numpy(), data.images[row].transpose(2, 0, 1))


def test_batches_depend_only_on_seed_and_index(noise_dataset):
    batches = FrameStackBatches(noise_dataset, batch_size=8, nstep=3, seed=4)
    again = FrameStackBatches(noise_dataset, batch_size=8, nstep=3, seed=4)
    assert torch.equal(batches.batch(7)["obs"], again.batch(7)["obs"])
    assert not torch.equal(batches.batch(7)["obs"], batches.batch(8)["obs"])
    with batches.stream(start=7) as stream:
        first, second = next(stream), next(stream)
    assert torch.equal(first["obs"], batches.batch(7)["obs"])
    assert torch.equal(second["index"], batches.batch(8)["index"])


def test_frames_kept_on_the_device_give_the_same_batches(noise_dataset):
    options = {"batch_size": 16, "nstep": 3, "max_gap": 5, "image_size": 84, "seed": 9}
    host = FrameStackBatches(noise_dataset, **options, frames_on_device=False)
    device = FrameStackBatches(noise_dataset, **options, frames_on_device=True)
    with host.stream(start=3) as host_stream, device.stream(start=3) as device_stream:
        for _ in range(2):
            expected, batch = next(host_stream), next(device_stream)
            assert expected.keys() == batch.keys()
            for key in expected:
                assert torch.equal(expected[key], batch[key]), key


class Recorder(torch.nn.Module):
    """An acting network that records the stacks it is given and returns zero actions."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, stack):
        self.seen.append(stack.clone())
        return torch.zeros(len(stack), 6)


@pytest.mark.parametrize("image_size", [64, 84])
def test_evaluation_sees_the_frames_training_sees(noise_dataset, image_size):
    data = noise_dataset
    recorder = Recorder()
    policy = FrameStackPolicy(recorder, frame_stack=3, image_size=image_size)
    for t in range(4):
        policy(data.images[t])
    batches = FrameStackBatches(data, batch_size=4, frame_stack=3, image_size=image_size, seed=0)
    trained = batches.gather([0, 0, 0, 0], [0, 1, 2, 3])["obs"]
    assert trained.shape[1:] == (9, image_size, image_size)
    assert torch.equal(torch.cat(recorder.seen), trained)
    policy.reset()
    policy(data.images[5])  # a new episode starts with its first frame repeated
    first = torch.from_numpy(resize_frames(data.images[5:6], image_size)).permute(0, 3, 1, 2)
    assert torch.equal(recorder.seen[-1], first.repeat(1, 3, 1, 1))


# ---------------------------------------------------------------------------------- losses


def test_td3_bc_actor_loss_by_hand():
    q = torch.tensor([1.0, -3.0])
    action, data_action = torch.tensor([[0.5], [0.0]]), torch.tensor([[0.0], [0.0]])
    loss, weight = td3_bc_actor_loss(q, action, data_action, alpha=2.5)
    # lambda = 2.5 / mean(|1|, |-3|) = 1.25; -lambda * mean(Q) = 1.25; MSE = (0.25 + 0) / 2
    assert weight.item() == pytest.approx(1.25)
    assert loss.item() == pytest.approx(1.25 + 0.125)


def test_cql_penalty_by_hand():
    q_data = torch.tensor([1.0, 0.0])
    candidates = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    expected_lse = [math.log(math.exp(0) + math.exp(2) + math.exp(1)), math.log(3)]
    expected = 10 * 1.0 * np.mean(expected_lse) - 10 * 0.5
    assert cql_penalty(q_data, candidates, 10.0, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # temperature T: w T mean logsumexp(q / T) - w mean q
    lse_t2 = [2 * math.log(math.exp(0) + math.exp(1) + math.exp(0.5)), 2 * math.log(3)]
    assert cql_penalty(q_data, candidates, 1.0, 2.0).item() == pytest.approx(
        np.mean(lse_t2) - 0.5, rel=1e-6)


def test_cql_takes_the_log_sum_exp_over_31_candidates():
    config = tiny_config("drq_cql", cql_random_actions=10)
    agent = drq_cql.DrQCQLAgent(6, config, "cpu")
    for q_net in (agent.critic.q1, agent.critic.q2):  # Q = 0 for every state and action
        torch.nn.init.zeros_(q_net[-1].weight), torch.nn.init.zeros_(q_net[-1].bias)
    features = torch.randn(4, agent.encoder.repr_dim)
    trunk = agent.critic.trunk_features(features)
    q1, q2 = agent.critic.q_values(trunk, torch.zeros(4, 6))
    penalty = agent.critic_penalty(features, features, trunk, q1, q2, 0.5,
                                   torch.Generator().manual_seed(0))
    # logsumexp of 31 zeros is log 31, for each of the two Q functions
    assert penalty.item() == pytest.approx(2 * 10.0 * math.log(31), rel=1e-6)


def test_mask_penalty_and_contrastive_inverse_loss_by_hand():
    masks = torch.tensor([[0.0, 0.5], [1.0, 0.5]])
    assert mask_penalty(masks, 0.1, 1e-3).item() == pytest.approx(0.1 * 0.5 + 1e-3 * 0.375)
    energies = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    expected = np.mean([-math.log(1 / (1 + math.exp(-1) + math.exp(-2))),
                        -math.log(math.exp(-1) / (math.exp(-1) + 2))])
    assert contrastive_inverse_loss(energies).item() == pytest.approx(expected, rel=1e-6)
    rows = unmasked_rows(10, 0.5, torch.Generator().manual_seed(0), "cpu")
    assert rows.sum() == 5


def test_energy_model_equals_one_linear_layer_on_the_concatenation():
    torch.manual_seed(0)
    model = InverseEnergyModel(4, 3, units=5)
    z_t, z_future, actions = torch.randn(2, 4), torch.randn(2, 4), torch.rand(2, 6, 3)
    energies = model(z_t, z_future, actions)
    weight = torch.cat([model.state.weight, model.action.weight], dim=1)  # one Linear(2F + A)
    inputs = torch.cat([z_t[:, None].expand(2, 6, 4), z_future[:, None].expand(2, 6, 4), actions],
                       dim=-1).reshape(12, 11)
    hidden = F.relu(model.norm(inputs @ weight.T))
    assert torch.allclose(energies, model.energy(hidden).reshape(2, 6), atol=1e-5)


def test_energy_model_is_initialized_like_the_authors_weight_init():
    # ig_utils.InfoNCE: apply(weight_init) = orthogonal Linear weights (gain 1), zero biases
    torch.manual_seed(0)
    model = InverseEnergyModel(4, 3, units=5)
    weight = torch.cat([model.state.weight, model.action.weight], dim=1)  # (5, 11): rows orthonormal
    assert torch.allclose(weight @ weight.T, torch.eye(5), atol=1e-5)
    assert torch.allclose(model.energy.weight @ model.energy.weight.T, torch.eye(1), atol=1e-5)
    assert not model.energy.bias.any()
    assert model.state.bias is None and model.action.bias is None
    wide = InverseEnergyModel(2, 1, units=8)  # 8 units > 5 inputs: the columns are orthonormal
    weight = torch.cat([wide.state.weight, wide.action.weight], dim=1)
    assert torch.allclose(weight.T @ weight, torch.eye(5), atol=1e-5)


def test_gating_unet_keeps_the_image_size():
    unet = GatingUNet(9, 3, image_size=64, filters=8, blocks=5, bottleneck=8)
    assert unet.coarse_shape == (16, 4, 4)
    assert unet(torch.zeros(2, 9, 64, 64)).shape == (2, 3, 64, 64)
    assert GatingUNet(9, 3, image_size=84, filters=8, blocks=5)(torch.zeros(1, 9, 84, 84)).shape \
        == (1, 3, 84, 84)


# ---------------------------------------------------------------------------------- gradient routing


def gap_batch(dataset, config, index=0):
    return FrameStackBatches(dataset, batch_size=config.batch_size, nstep=0, max_gap=config.max_gap,
                             seed=0).batch(index)


def gradients(module):
    return [param.grad for param in module.parameters()]


def moved(module):
    return any(grad is not None and grad.abs().sum() > 0 for grad in gradients(module))


@pytest.mark.parametrize("warm", [True, False])
def test_infogating_routes_each_loss_to_its_own_networks(noise_dataset, warm):
    config = tiny_config("infogating", warmup_updates=1 if warm else 0, mask_noise_updates=0)
    agent = infogating.InfoGatingAgent(6, config, "cpu")
    batch = gap_batch(noise_dataset, config)
    parts = (agent.gating, agent.encoder, agent.inverse, agent.actor)
    expected = {"bc": (False, False, False, True),          # the BC head reads detached features
                "mask": (True, False, False, False),        # the penalty acts on the U-Net only
                "inverse": (not warm, True, True, False)}   # through the gate after the warm-up
    for name, flags in expected.items():
        agent.zero_grad(set_to_none=True)
        generator = torch.Generator().manual_seed(0)
        losses, gated, _ = agent.losses(batch, generator)
        if name == "bc":
            losses["bc"] = agent.bc_loss(gated, batch, generator)
        losses[name].backward()
        assert tuple(moved(part) for part in parts) == flags, name


@pytest.mark.parametrize("reencode", [True, False])
def test_infogating_bc_reads_the_encoder_after_its_step(noise_dataset, reencode):
    # the author's update: encoder_opt.step(), then policy(encoder(mask_obs).detach())
    import copy

    config = tiny_config("infogating", warmup_updates=0, mask_noise_updates=0,
                         bc_reencode=reencode)
    agent = infogating.InfoGatingAgent(6, config, "cpu")
    before = copy.deepcopy(agent)
    batch = gap_batch(noise_dataset, config)
    metrics = agent.update(batch, torch.Generator().manual_seed(3))
    # the same update by hand: the same draws, the head before its step on the gated o_t
    generator = torch.Generator().manual_seed(3)
    _, gated, _ = before.losses(batch, generator)
    encoders = {"after": agent.encoder, "before": before.encoder}
    expected = {}
    for when, encoder in encoders.items():
        with torch.no_grad():
            mean = before.actor(encoder(gated["inputs"]))
        noise = copy.deepcopy(generator)  # the BC noise is the update's last draw
        action = sample_clipped(mean, before.noise_std(), config.std_clip, noise)
        expected[when] = F.mse_loss(action, batch["action"]).item()
    assert not torch.equal(agent.encoder.trunk[0].weight, before.encoder.trunk[0].weight)
    assert abs(expected["after"] - expected["before"]) > 1e-5  # the test can tell them apart
    used = "after" if reencode else "before"
    assert metrics["bc_loss"].item() == pytest.approx(expected[used], rel=1e-5, abs=1e-7)


def test_drq_actor_update_moves_only_the_actor(noise_dataset):
    config = tiny_config("drq_bc")
    agent = drq_bc.DrQBCAgent(6, config, "cpu")
    batch = FrameStackBatches(noise_dataset, batch_size=6, nstep=3, seed=0).batch(0)
    before = {key: value.clone() for key, value in agent.state_dict()["networks"].items()}
    features = agent.encoder(batch["obs"]).detach()
    agent.update_actor(features, batch, 0.5, torch.Generator().manual_seed(0))
    after = agent.state_dict()["networks"]
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"actor"}
    assert all(param.requires_grad for param in agent.critic.parameters())


def test_infogating_policy_acts_on_unmasked_observations(noise_dataset):
    config = tiny_config("infogating")
    agent = infogating.InfoGatingAgent(6, config, "cpu")
    policy = agent.policy()
    assert not any(module is agent.gating for module in policy.modules())
    frame = noise_dataset.images[0]
    stack = torch.from_numpy(np.concatenate([frame.transpose(2, 0, 1)] * 3))[None]
    with torch.no_grad():
        expected = agent.actor(agent.encoder(stack))[0].numpy()
    assert np.allclose(policy(frame), expected, atol=1e-6)


# ---------------------------------------------------------------------------------- configs


def test_presets_are_registered_with_the_paper_settings():
    paper = {name: algorithms.get(name).config("paper") for name in MODULES}
    for name, config in paper.items():
        assert algorithms.get(name).config_class is MODULES[name].ALGORITHM.config_class
        assert (config.updates, config.eval_episodes, config.batch_size) == (550_000, 10, 256)
        assert (config.frame_stack, config.augment_pad, config.image_size) == (3, 4, 64)
        assert config.actor_lr == 3e-4 and config.units == 1024
    assert (paper["drq_bc"].nstep, paper["drq_bc"].alpha, paper["drq_bc"].tau) == (3, 2.5, 0.01)
    cql = paper["drq_cql"]
    assert (cql.nstep, cql.cql_weight, cql.cql_random_actions, cql.cql_temperature) == (1, 10, 10, 1)
    gating = paper["infogating"]
    assert (gating.negatives, gating.max_gap, gating.warmup_updates, gating.blocks) == (
        256, 14, 2500, 5)
    assert (gating.mask_penalty, gating.mask_square_penalty, gating.feature_dim) == (0.1, 1e-3, 256)
    assert paper["bc"].feature_dim == 50 and paper["drq_cql"].critic_lr == 3e-4


@pytest.mark.parametrize("name, field, value", [
    ("bc", "image_size", 32), ("bc", "precision", "float64"), ("drq_bc", "nstep", 0),
    ("drq_bc", "tau", 1.5), ("drq_cql", "cql_temperature", 0.0),
    ("infogating", "unmasked_fraction", 2.0), ("infogating", "mask_blocks", 9),
    ("bc", "updates", 0),
])
def test_bad_config_values_name_the_field(name, field, value):
    with pytest.raises(ConfigError, match=field):
        algorithms.get(name).config("smoke", **{field: value})


# ---------------------------------------------------------------------------------- runs


@pytest.mark.parametrize("name", list(MODULES))
def test_a_stopped_run_resumes_to_the_same_result(noise_dataset, tmp_path, name):
    config = tiny_config(name)
    straight = train_run(name, noise_dataset, tmp_path / "straight", config, seed=3)
    part = train_run(name, noise_dataset, tmp_path / "split", config, seed=3, stop_after=2)
    assert part.updates == 2
    resumed = train_run(name, noise_dataset, tmp_path / "split", config, seed=3, resume=True)
    assert resumed.updates == straight.updates == 4
    for key, value in straight.state_dict()["networks"].items():
        assert torch.equal(value, resumed.state_dict()["networks"][key]), key
    def logged(folder):
        return [row for row in read_metrics(tmp_path / folder)
                if row["metric"] != "updates_per_second"]

    assert logged("split") == logged("straight")
    # a finished run returns at once
    again = train_run(name, noise_dataset, tmp_path / "split", config, seed=3, resume=True)
    assert again.updates == 4


def test_policy_pickles_and_acts_in_range(noise_dataset, tmp_path):
    config = tiny_config("drq_cql", updates=2, image_size=84)
    train_run("drq_cql", noise_dataset, tmp_path / "run", config)
    policy = drq_cql.load(tmp_path / "run")
    copy = pickle.loads(pickle.dumps(policy))
    actions = [policy(frame) for frame in noise_dataset.images[:3]]
    copied = [copy(frame) for frame in noise_dataset.images[:3]]
    assert np.array_equal(np.stack(actions), np.stack(copied))
    assert actions[0].dtype == np.float32 and np.abs(np.stack(actions)).max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        policy(np.zeros((84, 84, 3), np.uint8))


def test_cli_trains_and_evaluates_bc(walker, tmp_path):
    from lqv_d4rl.cli import main

    out = tmp_path / "bc-run"
    result = CliRunner().invoke(main, [
        "train", "bc", str(walker), "--preset", "smoke", "--out", str(out), "--updates", "3",
        "--batch-size", "4", "--units", "16", "--encoder-channels", "4", "--eval-episodes", "1",
        "--eval-max-steps", "2", "--set", "feature_dim=8"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["lengths"] == [2] and len(evaluation["returns"]) == 1
    assert "normalized_score" in evaluation


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODULES))
def test_smoke_preset_trains_and_evaluates_from_the_cli(walker, tmp_path, name):
    from lqv_d4rl.cli import main

    out = tmp_path / name
    result = CliRunner().invoke(main, ["train", name, str(walker), "--preset", "smoke",
                                       "--out", str(out), "--eval-episodes", "1"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["lengths"] == [500]
    assert math.isfinite(evaluation["normalized_score"])
    phases = {row["phase"] for row in read_metrics(out)}
    assert phases == {"train", "eval"}


# ---------------------------------------------------------------------------------- learning


POINT_EPISODES, POINT_STEPS = 24, 30
POINT_POLICY = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-0.7, 0.7], [0.9, -0.4], [-0.3, -0.9]])
"""The fixed policy's mean action is clip(POINT_POLICY @ position, -1, 1)."""
POINT_NOISE = 0.15
"""Std of the Gaussian noise the fixed policy adds to its mean action."""


def point_frame(position):
    """A 64 x 64 frame showing a white disc at ``position`` in [-1, 1]^2 on a dark background."""
    ys, xs = np.mgrid[:NATIVE_IMAGE_SIZE, :NATIVE_IMAGE_SIZE]
    centre = (np.asarray(position) + 1) / 2 * (NATIVE_IMAGE_SIZE - 1)
    disc = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= 16
    frame = np.full((NATIVE_IMAGE_SIZE, NATIVE_IMAGE_SIZE, 3), 30, np.uint8)
    frame[disc] = 255
    return frame


def point_episode(seed):
    """One episode of the noisy fixed policy. The dot moves along ``rot90(action[:2])``, reflecting
    at the border; the reward ``1 - mean((action - mean action)^2) / noise^2`` makes the policy's
    mean action the best one, so imitation and reward maximization agree, and it varies enough
    with the action that a critic has to locate the dot to predict it."""
    rng = np.random.default_rng(seed)
    position = rng.uniform(-0.9, 0.9, 2)
    frames, actions, rewards = [point_frame(position)], [np.zeros(6)], [0.0]
    for _ in range(POINT_STEPS):
        best = np.clip(POINT_POLICY @ position, -1, 1)
        action = np.clip(best + rng.normal(0, POINT_NOISE, 6), -1, 1)
        position = position + 0.3 * np.array([-action[1], action[0]])
        position = np.where(np.abs(position) > 1, np.sign(position) * 2 - position, position)
        frames.append(point_frame(position))
        actions.append(action)
        rewards.append(1 - np.mean((action - best) ** 2) / POINT_NOISE ** 2)
    length = POINT_STEPS + 1
    flags = np.zeros(length, bool)
    return {"image": np.stack(frames), "action": np.array(actions, np.float32),
            "reward": np.array(rewards, np.float32), "discount": np.ones(length, np.float32),
            "is_first": np.r_[True, flags[1:]], "is_last": np.r_[flags[1:], True],
            "is_terminal": flags}


@pytest.fixture(scope="module")
def point_data(tmp_path_factory):
    """(training dataset, held-out dataset) recorded by the fixed point policy."""
    root = tmp_path_factory.mktemp("point")
    loaded = []
    for name, seeds in (("train", range(POINT_EPISODES)), ("held-out", range(100, 106))):
        folder = root / name / "walker_walk-medium"
        with ShardWriter(folder, dataset_id="walker_walk-medium", task="walker_walk",
                         level="medium", action_dim=6,
                         provenance={"seed": 0, "distractor": {"kind": "test-point"}}) as writer:
            for seed in seeds:
                writer.add_episode(point_episode(seed), policy_id="fixed", seed=seed)
        loaded.append(load_dataset(folder))
    return loaded


LEARN = {"batch_size": 32, "encoder_channels": 8, "feature_dim": 16, "units": 64, "updates": 300,
         "std_start": 0.2, "std_decay_updates": 100, "actor_lr": 1e-3, "log_every": 50,
         "checkpoint_every": 300}


def held_out(dataset):
    """Every transition of ``dataset`` as one batch (observations and dataset actions)."""
    episodes = np.repeat(np.arange(len(dataset)), np.asarray(dataset.episode_lengths) - 1)
    index = np.concatenate([np.arange(length - 1) for length in dataset.episode_lengths])
    return FrameStackBatches(dataset, batch_size=1, nstep=0, seed=0).gather(episodes, index)


def imitation_ratio(agent, dataset):
    """MSE of the policy's actions on held-out data, relative to the MSE of the mean action."""
    batch = held_out(dataset)
    with torch.no_grad():
        predicted = agent.acting_network()(batch["obs"])
    actions = batch["action"]
    error = F.mse_loss(predicted, actions).item()
    baseline = F.mse_loss(actions.mean(0).expand_as(actions), actions).item()
    return error / baseline


@pytest.mark.slow
@pytest.mark.parametrize("name, changes, ratio", [
    ("bc", {}, 0.25),
    # DrQ+BC's actor reads the detached features of the encoder that only the critic trains, so
    # it imitates more slowly than BC (held-out ratio 0.26-0.38 over seeds 0-2 with these settings)
    ("drq_bc", {"critic_lr": 1e-3, "batch_size": 64, "updates": 400}, 0.5),
])
def test_imitators_reproduce_held_out_actions_of_a_fixed_policy(point_data, tmp_path, name,
                                                                 changes, ratio):
    train_data, test_data = point_data
    config = algorithms.get(name).config("smoke", **{**LEARN, **changes})
    agent = train_run(name, train_data, tmp_path / name, config, seed=0)
    assert imitation_ratio(agent, test_data) < ratio


@pytest.mark.slow
def test_infogating_learns_the_inverse_model_and_imitates_through_it(point_data, tmp_path):
    train_data, test_data = point_data
    config = algorithms.get("infogating").config("smoke", **{
        **LEARN, "batch_size": 16, "updates": 400, "encoder_lr": 1e-3, "actor_lr": 3e-3,
        "feature_dim": 32,
        "mask_filters": 8, "mask_blocks": 3, "mask_bottleneck": 16, "inverse_units": 32,
        "negatives": 32, "max_gap": 3, "warmup_updates": 100, "mask_noise_updates": 20})
    agent = train_run("infogating", train_data, tmp_path / "run", config, seed=0)
    rows = read_metrics(tmp_path / "run")
    def series(metric):
        return [row["value"] for row in rows if row["metric"] == metric]

    assert series("inverse_accuracy")[-1] > 0.5  # chance: 1 / 33
    mask = series("mask_mean")
    assert mask[-1] < 0.5 * max(mask)  # the mask opens in the warm-up, then the penalty closes it
    # the BC head reads features that only the inverse model shaped (of partly gated inputs)
    assert imitation_ratio(agent, test_data) < 0.5


@pytest.mark.slow
def test_cql_values_dataset_actions_above_random_actions(point_data, tmp_path):
    train_data, test_data = point_data
    config = algorithms.get("drq_cql").config("smoke", **{**LEARN, "critic_lr": 1e-3})
    agent = train_run("drq_cql", train_data, tmp_path / "cql", config, seed=0)
    batch = held_out(test_data)
    with torch.no_grad():
        features = agent.encoder(batch["obs"])
        q_data = torch.min(*agent.critic(features, batch["action"]))
        random_actions = torch.rand(len(features), 10, 6, generator=torch.Generator()
                                    .manual_seed(0)) * 2 - 1
        q_random = torch.min(*agent.critic.q_values(agent.critic.trunk_features(features),
                                                    random_actions))
    assert q_data.mean() > q_random.mean() + 0.5
    assert (q_data > q_random.mean(1)).float().mean() > 0.9
