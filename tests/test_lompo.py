"""LOMPO: the log-likelihood penalty on a hand-built Gaussian ensemble, the real and imagined
buffers and their mixing, the twin-Q agent learning on toy dynamics, resume equality and the CLI.

Networks are tiny and everything runs on one CPU thread.
"""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import EVALUABLE_PROVENANCE, write_tiny_dataset

from baselines import lompo
from baselines.lompo import LOMPOAgent, LOMPOConfig, TransitionBuffer, TwinQActorCritic
from lqv_d4rl.algorithms import ConfigError
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.networks import Imagination
from lqv_d4rl.runs import Run, read_metrics
from lqv_d4rl.synthetic import noise_batch

torch.set_num_threads(1)

TINY = dict(batch_size=4, seq_len=8, depth=4, deter=16, stoch=4, hidden=16, ensemble=3,
            units=32, reward_layers=1, actor_layers=1, critic_layers=1, model_lr=1e-3,
            start_training=10, data_every=2, real_batch_size=8, imagined_batch_size=8,
            log_every=1, checkpoint_every=10, eval_episodes=1, eval_max_steps=2)


def tiny_config(**changes):
    """A LOMPO config with tiny networks (changes override)."""
    return LOMPOConfig(**{**TINY, **changes})


def tiny_agent(capacity=1000, **changes):
    torch.manual_seed(0)
    return LOMPOAgent(6, tiny_config(**changes), capacity=capacity)


def transitions(count, reward, feature_dim=4, action_dim=6, offset=0):
    """``count`` transitions whose features count up from ``offset``, all with ``reward``."""
    features = torch.arange(offset, offset + count).float()[:, None].expand(count, feature_dim)
    return {"features": features, "action": torch.zeros(count, action_dim),
            "next_features": features + 1, "reward": torch.full((count,), float(reward)),
            "is_terminal": torch.zeros(count)}


# ----------------------------------------------------------------------------------------------
# The penalty
# ----------------------------------------------------------------------------------------------

HAND_MEANS = torch.tensor([[0.0, 1.0, -1.0, 0.5], [0.3, 0.8, -0.6, 0.0], [-0.4, 1.5, -1.2, 0.9]])
HAND_RAW_STDS = torch.tensor([[0.0, 0.5, -1.0, 0.2], [0.3, 0.0, 0.0, -0.5], [1.0, -0.2, 0.4, 0.0]])


def test_log_prob_penalty_equals_its_formula_on_a_hand_built_gaussian_ensemble():
    agent = tiny_agent(penalty_lambda=5.0)
    model = agent.world_model
    with torch.no_grad():
        for head, mean, raw_std in zip(model.rssm.img_heads, HAND_MEANS, HAND_RAW_STDS):
            head[-1].weight.zero_()
            head[-1].bias.copy_(torch.cat([mean, raw_std]))
    post, _ = model.observe(noise_batch(4, 8, 6))
    start = {key: value[:, -1] for key, value in post.items()}
    moved, reward, penalty = agent.imagine_transitions(start)
    # the next latents z_{t+1}: the stochastic part of the imagined next features
    z = moved["next_features"][:, -4:].double().numpy()  # (H*N, 4)
    std = np.log1p(np.exp(HAND_RAW_STDS.double().numpy())) + 0.1  # softplus + 0.1
    log_probs = np.stack([
        (-0.5 * ((z - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)).sum(-1)
        for m, s in zip(HAND_MEANS.double().numpy(), std)])  # (K, H*N)
    np.testing.assert_allclose(penalty.flatten().numpy(), log_probs.std(0), rtol=1e-4)
    np.testing.assert_allclose(moved["reward"].numpy(), (reward - 5.0 * penalty).flatten().numpy(),
                               rtol=1e-6)
    assert penalty.shape == (agent.config.horizon, 4) and bool((penalty > 0).all())


# ----------------------------------------------------------------------------------------------
# Buffers and batches
# ----------------------------------------------------------------------------------------------


def test_ring_buffer_keeps_the_newest_transitions_in_order():
    buffer = TransitionBuffer(5, 4, 6)
    buffer.add(**transitions(3, 0.0))
    buffer.add(**transitions(4, 0.0, offset=3))  # 7 added: 5 and 6 overwrite 0 and 1
    assert (buffer.size, buffer.position, buffer.added) == (5, 2, 7)
    assert buffer.data["features"][:, 0].tolist() == [5, 6, 2, 3, 4]
    buffer.add(**transitions(12, 0.0, offset=100))  # more than the capacity at once
    assert (buffer.size, buffer.position) == (5, 4)
    assert sorted(buffer.data["features"][:, 0].tolist()) == [107, 108, 109, 110, 111]
    assert buffer.data["features"][3, 0] == 111  # the newest sits just before the write position
    restored = TransitionBuffer(5, 4, 6)
    restored.load_state_dict(buffer.state_dict())
    assert all(torch.equal(buffer.data[key], restored.data[key]) for key in buffer.data)


def test_agent_batches_mix_real_and_imagined_transitions_in_the_configured_ratio():
    agent = tiny_agent(real_batch_size=5, imagined_batch_size=3)
    feature_dim = agent.world_model.rssm.feature_dim
    agent.real.add(**transitions(20, 1.0, feature_dim))
    agent.imagined.add(**transitions(20, -1.0, feature_dim))
    batch = agent.agent_batch()
    assert batch["reward"][:, 0].tolist() == [1.0] * 5 + [-1.0] * 3
    metrics = agent.train_policy_step()
    assert (float(metrics["real_reward"]), float(metrics["imagined_reward"])) == (1.0, -1.0)
    with pytest.raises(RuntimeError, match="empty"):
        TransitionBuffer(4, 2, 2).sample(np.random.default_rng(0), 1)


def test_real_buffer_holds_posterior_transitions_aligned_with_the_dataset(tmp_path):
    dataset = load_dataset(write_tiny_dataset(tmp_path / "walker_walk-medrep", length=9))
    agent = tiny_agent()
    agent.ensure_real_buffer(dataset)
    lengths = dataset.episode_lengths
    assert agent.real.size == int((lengths - 1).sum()) and agent.episodes_encoded == len(dataset)
    expected_actions = np.concatenate([dataset.episode(e)["action"][1:] for e in range(len(dataset))])
    expected_rewards = np.concatenate([dataset.episode(e)["reward"][1:] for e in range(len(dataset))])
    stored = {key: values[:agent.real.size].numpy() for key, values in agent.real.data.items()}
    np.testing.assert_array_equal(stored["action"], expected_actions)
    np.testing.assert_array_equal(stored["reward"][:, 0], expected_rewards)
    features, following = agent.real.data["features"], agent.real.data["next_features"]
    steps = int(lengths[0]) - 1
    assert torch.equal(following[:steps - 1], features[1:steps])  # chained within an episode
    assert not torch.equal(following[steps - 1], features[steps])  # not across episodes
    assert not agent.real.data["is_terminal"].any()
    agent.encode_next_episode(dataset)  # LOMPO then cycles through the episodes in order
    assert agent.episodes_encoded == len(dataset) + 1
    np.testing.assert_array_equal(agent.real.data["action"][agent.real.size - steps:agent.real.size],
                                  dataset.episode(0)["action"][1:])


def test_imagination_round_adds_batch_times_length_times_horizon_transitions():
    agent = tiny_agent()
    metrics = agent.imagination_round(noise_batch(4, 8, 6))
    count = 4 * 8 * agent.config.horizon
    assert agent.imagined.size == count == agent.config.transitions_per_round and agent.rounds == 1
    data = agent.imagined.data
    starts = 4 * 8
    # time-major: the next features of step t are the features of step t + 1 of the same start
    assert torch.equal(data["next_features"][:count - starts], data["features"][starts:count])
    assert math.isfinite(float(metrics["penalty"])) and float(metrics["penalty"]) > 0
    assert LOMPOConfig().prefill_rounds == 4  # 50,000 transitions at 64 x 50 x 5 per round


def test_config_sources_presets_and_errors(tmp_path):
    paper = lompo.ALGORITHM.config("paper")
    assert (paper.stoch, paper.deter, paper.ensemble, paper.model_lr) == (64, 256, 7, 6e-4)
    assert (paper.penalty_lambda, paper.horizon, paper.rollout_noise, paper.tau) == (5.0, 5, 0.2, 5e-3)
    assert (paper.real_batch_size, paper.imagined_batch_size) == (256, 256)
    assert (paper.start_training, paper.policy_steps) == (50_000, 150_000)
    assert (paper.critic_layers, paper.actor_layers, paper.units) == (3, 4, 256)
    with pytest.raises(ConfigError, match="tau"):
        LOMPOConfig(tau=2.0)
    with pytest.raises(ConfigError, match="start_training"):
        LOMPOConfig(start_training=0)
    dataset = load_dataset(write_tiny_dataset(tmp_path / "walker_walk-medrep", length=9))
    with pytest.raises(ConfigError, match="start_training=1000 .* 48"):
        lompo.buffer_capacity(dataset, tiny_config(start_training=1000))


# ----------------------------------------------------------------------------------------------
# The agent learns on toy dynamics
# ----------------------------------------------------------------------------------------------


class ToyDynamics:
    """z' = 0.9 z + 0.5 a; reward prefers the action (0.6, -0.4); the 'uncertainty' grows with
    the distance of z' from the origin."""

    def imagine(self, policy, start, horizon):
        states, actions = [start], []
        for _ in range(horizon):
            actions.append(policy(states[-1]))
            states.append(0.9 * states[-1] + 0.5 * actions[-1])
        return Imagination(torch.stack(states), torch.stack(actions))

    def reward(self, imagination):
        return -((imagination.actions - torch.tensor([0.6, -0.4])) ** 2).sum(-1)

    def disagreement(self, imagination):
        return 0.2 * (imagination.features[1:] ** 2).sum(-1)


def test_twin_q_agent_improves_the_imagined_return_on_toy_dynamics():
    torch.manual_seed(0)
    config = tiny_config(units=64, actor_layers=2, critic_layers=2, real_batch_size=64,
                         imagined_batch_size=128, penalty_lambda=1.0, actor_lr=3e-4,
                         critic_lr=3e-3, tau=0.05, gamma=0.9)
    agent = LOMPOAgent(2, config, capacity=5000)
    agent.world_model, agent.behavior = ToyDynamics(), TwinQActorCritic(2, 2, config)
    agent.real, agent.imagined = TransitionBuffer(5000, 2, 2), TransitionBuffer(5000, 2, 2)
    generator = torch.Generator().manual_seed(0)
    # "real" data: a uniformly random behaviour policy's transitions, unpenalized as in LOMPO
    random_policy = lambda z: torch.rand(z.shape, generator=generator) * 2 - 1
    real = agent.world_model.imagine(random_policy, torch.randn(200, 2, generator=generator), 5)
    agent.real.add(features=real.features[:-1].flatten(0, 1), action=real.actions.flatten(0, 1),
                   next_features=real.features[1:].flatten(0, 1),
                   reward=agent.world_model.reward(real).flatten(), is_terminal=torch.zeros(1000))
    start = torch.randn(64, 2, generator=generator)

    def imagined_return():
        """Penalized return of the noiseless actor over 5 imagined steps, mean over starts."""
        with torch.no_grad():
            rollout = agent.world_model.imagine(agent.behavior.actor, start, 5)
            penalty = agent.world_model.disagreement(rollout)
            return (agent.world_model.reward(rollout) - penalty).sum(0).mean().item()

    before = imagined_return()
    for _ in range(6):  # LOMPO's loop: a round of imagined data, then agent updates
        moved, _, _ = agent.imagine_transitions(torch.randn(128, 2, generator=generator))
        agent.imagined.add(**moved)
        for _ in range(40):
            agent.train_policy_step()
    after = imagined_return()
    assert after > before + 1.0, (before, after)
    assert agent.policy_updates == 240


# ----------------------------------------------------------------------------------------------
# Runs: the schedule, resume equality, the command line
# ----------------------------------------------------------------------------------------------


def train_in(folder, dataset, config, *, seed=0, stop_after=None, resume=False):
    """Train in a run folder as the platform does; returns the agent."""
    run = Run.open(folder, lompo.ALGORITHM, config, dataset, seed=seed, resume=resume,
                   stop_after=stop_after)
    try:
        return lompo.train(dataset, config, run)
    finally:
        run.close()


def test_schedule_and_an_interrupted_run_resumes_to_the_same_agent(tmp_path):
    dataset = load_dataset(write_tiny_dataset(tmp_path / "walker_walk-medrep", length=12))
    config = tiny_config(model_steps=2, start_training=200, policy_steps=5, data_every=2,
                         buffer_capacity=1000)
    assert config.prefill_rounds == 2  # 4 x 8 x 5 = 160 transitions per round
    straight = train_in(tmp_path / "straight", dataset, config, seed=4)
    # 2 rounds before the agent trains, then one more after agent updates 2 and 4 (not after 5)
    assert (straight.model_updates, straight.rounds, straight.policy_updates) == (2, 4, 5)
    assert straight.episodes_encoded == len(dataset) + 2
    part = train_in(tmp_path / "split", dataset, config, seed=4, stop_after=6)
    assert (part.rounds, part.policy_updates) == (3, 2)  # stopped after update 2's data round
    resumed = train_in(tmp_path / "split", dataset, config, seed=4, resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    for part_name in ("world_model", "behavior"):
        for key, value in a[part_name].items():
            assert torch.equal(value, b[part_name][key]), f"{part_name}.{key}"
    for buffer in ("real", "imagined"):
        for key, value in a[buffer]["data"].items():
            assert torch.equal(value, b[buffer]["data"][key]), f"{buffer}.{key}"

    def logged(run):
        return [row for row in read_metrics(tmp_path / run) if row["metric"] != "updates_per_second"]

    assert logged("split") == logged("straight")
    assert [row["phase"] for row in logged("straight")].count("imagine") > 0


def test_cli_trains_evaluates_and_analyses(tmp_path, monkeypatch):
    from lqv_d4rl.cli import main

    monkeypatch.setattr("baselines.uncertainty.STATES", 20)  # the analysis, on fewer states

    write_tiny_dataset(tmp_path / "root" / "walker_walk-medrep", provenance=EVALUABLE_PROVENANCE,
                       length=20)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "lompo", "walker_walk-medrep", "--preset", "smoke", "--root",
        str(tmp_path / "root"), "--out", str(out), "--batch-size", "4", "--seq-len", "8",
        "--model-steps", "2", "--start-training", "50", "--policy-steps", "3",
        "--eval-episodes", "1", "--eval-max-steps", "2"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["lengths"] == [2] and math.isfinite(evaluation["mean_return"])
    assert "LOMPO" in (out / "state_uncertainty_summary.md").read_text()
    assert {row["phase"] for row in read_metrics(out)} == {"model", "imagine", "policy", "eval"}


def test_updates_and_imagination_rounds_never_wait_for_the_device():
    """On the ``meta`` device (a GPU's view, see lqv_d4rl.host_syncs) nothing reads a value back."""
    from lqv_d4rl.host_syncs import count_host_syncs

    agent = LOMPOAgent(6, tiny_config(batch_size=2, seq_len=6), capacity=100, device="meta")
    batch = {key: torch.as_tensor(value).to("meta") for key, value in noise_batch(2, 6, 6).items()}
    real = {key: value.to("meta") for key, value in transitions(10, 1.0, 48).items()}
    steps = {"model update": lambda: agent.train_model_step(batch),
             "imagination round": lambda: agent.imagination_round(batch),
             "real transitions": lambda: agent.real.add(**real),
             "agent update": agent.train_policy_step}
    for name, step in steps.items():
        with count_host_syncs("meta") as syncs:
            step()
        assert syncs.total == 0, (name, syncs.where.most_common(3))
