"""benchmarks/penalty_contrast.py: the four action sources on a tiny Offline DV2 and SeMOPO agent."""

import numpy as np
import pytest
import torch

import semopo
from conftest import load_benchmark_script
from baselines.offline_dv2 import OfflineDV2Agent, OfflineDV2Config
from lqv_d4rl.synthetic import noise_batch

torch.set_num_threads(1)

TINY = dict(batch_size=4, seq_len=8, depth=4, deter=16, stoch=4, classes=4, hidden=16,
            ensemble=3, units=32, reward_layers=1, actor_layers=1, critic_layers=1)


def load_script():
    """The script as a module."""
    return load_benchmark_script("penalty_contrast")


def agents():
    """A tiny Offline DV2 and a tiny SeMOPO agent (image models, untrained)."""
    torch.manual_seed(0)
    return [OfflineDV2Agent(6, OfflineDV2Config(**TINY)),
            semopo.SeMOPOAgent(6, semopo.SeMOPOConfig(**TINY, exo_ensemble=3, exo_only_scale=0.0))]


def saturated_batch():
    """A noise batch whose recorded actions are all +-1 and whose reward at entry t is t."""
    batch = noise_batch(4, 8, 6)
    batch["action"] = np.where(batch["action"] >= 0, 1.0, -1.0).astype(np.float32)
    batch["reward"] = np.tile(np.arange(8, dtype=np.float32), (4, 1))
    return batch


@pytest.mark.parametrize("agent", agents(), ids=["offline_dv2", "semopo"])
def test_each_source_is_scored_from_the_same_starts_with_its_own_actions(agent):
    rows = load_script().contrast(agent, saturated_batch(), horizon=3)
    # starts at entries 0..4; the data's next actions and rewards are entries t+1..t+3:
    # the mean of (t + 1 + k) over t = 0..4, k = 0..2 is 4
    assert rows["dataset"]["recorded_reward"] == pytest.approx(4.0)
    assert rows["dataset"]["saturated_share"] == 1.0
    assert rows["saturated"]["saturated_share"] == 1.0
    assert 0.0 < rows["uniform"]["saturated_share"] < 0.15  # 5 % of uniform components
    lam = agent.config.penalty_lambda
    for row in rows.values():
        assert row["penalized_reward"] == pytest.approx(row["model_reward"] - lam * row["penalty"],
                                                        rel=1e-5, abs=1e-6)
        assert row["penalty"] > 0.0
    assert rows == load_script().contrast(agent, saturated_batch(), horizon=3)  # seeded


def test_the_dataset_source_replays_the_recorded_actions_in_order():
    script = load_script()
    recorded = torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(3, 2, 6)  # (H, N, A)
    policy = script.action_source("dataset", None, recorded, torch.Generator())
    features = torch.zeros(2, 5)
    for step in range(3):
        assert torch.equal(policy(features), recorded[step])


def test_a_run_without_a_penalized_ensemble_is_refused_by_name(tmp_path):
    import json

    from lqv_d4rl.runs import CONFIG_NAME, RUN_FORMAT

    (tmp_path / CONFIG_NAME).write_text(json.dumps({"format": RUN_FORMAT, "algorithm": "lompo"}))
    with pytest.raises(SystemExit, match="a lompo run; this script reads offline_dv2 or semopo"):
        load_script().load_agent(tmp_path)


def test_replaying_the_recorded_actions_from_stored_physics_gives_the_recorded_rewards():
    """RealReplay resets the real walker to each start's stored physics state and plays the
    actions open loop: with the actions an episode took it earns that episode's rewards."""
    from types import SimpleNamespace

    from lqv_d4rl.physics import StateSimulator

    simulator, rng = StateSimulator("walker_walk"), np.random.default_rng(0)
    _, info = simulator.reset(seed=3)
    physics, actions, rewards = [info["physics_state"]], [np.zeros(6)], [0.0]
    for _ in range(12):  # entry t holds the state, the action taken before it and its reward
        actions.append(rng.uniform(-1, 1, 6))
        _, reward, _, _, info = simulator.step(actions[-1])
        physics.append(info["physics_state"])
        rewards.append(reward)
    data = SimpleNamespace(task="walker_walk", episode_starts=np.array([0]),
                           physics=np.stack(physics))
    horizon, starts = 3, 8
    replay = load_script().RealReplay(data, count=starts)
    replay.bind({"episode": np.array([0]), "start": np.array([2])}, starts)
    # starts at entries 2..9; the actions after entry t are entries t+1..t+3
    window = lambda values: np.stack([np.asarray(values)[3 + k:3 + k + starts]
                                      for k in range(horizon)])
    assert replay(window(actions)) == pytest.approx(window(rewards).mean(), rel=1e-6)
    assert replay(np.zeros((horizon, starts, 6))) != pytest.approx(window(rewards).mean(),
                                                                    rel=1e-3)


def test_each_source_hands_its_own_imagined_actions_to_the_real_replay():
    agent = agents()[0]
    mean_magnitude = lambda actions: float(np.abs(actions).mean())  # (H, N, A) -> a number
    rows = load_script().contrast(agent, saturated_batch(), horizon=3, replay=mean_magnitude)
    assert rows["dataset"]["real_reward"] == 1.0  # the recorded +-1 actions
    assert rows["saturated"]["real_reward"] == 1.0
    assert rows["uniform"]["real_reward"] == pytest.approx(0.5, abs=0.1)
