"""The learning check of the shared world-model core (collectors.state_dreamer): its environment,
replay and loop, and (slow) that it really learns."""

import dataclasses
import math

import numpy as np
import pytest

from collectors.state_dreamer import (
    StateDreamer,
    StateDreamerConfig,
    StateEnv,
    StateReplay,
    run_episode,
    train_state_dreamer,
)

TINY = StateDreamerConfig(
    deter=16, stoch=4, classes=4, hidden=16, units=16, state_layers=1, reward_layers=1,
    actor_layers=1, critic_layers=1, horizon=3, batch_size=2, seq_len=5, imagine_starts=4,
    prefill_steps=20, pretrain_steps=2, train_every=5, total_steps=60, eval_every=20,
    eval_episodes=1, max_episode_steps=20)


def test_state_env_flattens_observations_and_sums_repeated_rewards():
    single = StateEnv("walker_walk", seed=3, action_repeat=1)
    double = StateEnv("walker_walk", seed=3, action_repeat=2)
    assert (double.state_dim, double.action_dim) == (24, 6)  # 14 orientations, height, 9 velocities
    first_single, first_double = single.reset(), double.reset()
    np.testing.assert_array_equal(first_single, first_double)
    action = np.full(6, 0.3)
    _, reward_a, _ = single.step(action)
    state_b, reward_b, _ = single.step(action)
    state, reward, done = double.step(action)
    assert state.dtype == np.float32 and state.shape == (24,) and not done
    np.testing.assert_array_equal(state, state_b)
    assert math.isclose(reward, reward_a + reward_b)


def test_episodes_follow_the_entry_convention():
    env = StateEnv("cartpole_swingup", seed=0, action_repeat=4)
    episode, episode_return = run_episode(env, lambda observation, is_first: np.ones(1), 7)
    assert len(episode["reward"]) == 8 and episode["state"].shape == (8, env.state_dim)
    assert episode["is_first"].tolist() == [True] + [False] * 7
    assert episode["action"][0].tolist() == [0.0] and episode["reward"][0] == 0.0
    assert math.isclose(episode_return, float(episode["reward"].sum()))


def test_replay_windows_never_cross_an_episode():
    replay = StateReplay(seed=0)
    for index, length in enumerate((9, 4, 12)):  # the 4-step episode has no window of 5
        replay.add({"state": np.full((length, 1), index, np.float32),
                    "action": np.zeros((length, 1), np.float32),
                    "reward": np.arange(length, dtype=np.float32),
                    "is_first": np.arange(length) == 0})
    batch = replay.sample(64, 5)
    assert batch["state"].shape == (64, 5, 1)
    assert set(np.unique(batch["state"])) == {0.0, 2.0}
    assert np.all(batch["state"] == batch["state"][:, :1])        # one episode per window
    assert np.all(np.diff(batch["reward"], axis=1) == 1)          # consecutive entries
    assert not batch["is_first"][:, 1:].any()
    with pytest.raises(ValueError, match="no stored episode"):
        replay.sample(2, 13)


def test_update_returns_every_metric_and_actions_stay_in_bounds():
    env = StateEnv("walker_walk", seed=0)
    agent = StateDreamer(TINY, env.state_dim, env.action_dim)
    replay = StateReplay()
    replay.add(run_episode(env, lambda observation, is_first: np.zeros(6), 10)[0])
    metrics = agent.update(replay.sample(TINY.batch_size, TINY.seq_len))
    expected = {"model_loss", "kl", "state_log_prob", "reward_log_prob", "actor_loss",
                "critic_loss", "actor_entropy", "imagined_return"}
    assert expected <= set(metrics) and all(math.isfinite(v) for v in metrics.values())
    action, _ = agent.act(env.reset(), agent.initial_state(), True, explore=True)
    assert action.shape == (6,) and np.all(np.abs(action) <= 1)


def test_same_seed_same_run_and_the_run_stops_at_its_target():
    first = train_state_dreamer(TINY, seed=1, progress=False, log=lambda line: None)
    second = train_state_dreamer(TINY, seed=1, progress=False, log=lambda line: None)
    assert [e["agent_steps"] for e in first.evaluations] == [20, 40, 60]
    assert [e["returns"] for e in first.evaluations] == [e["returns"] for e in second.evaluations]
    assert first.train_returns == second.train_returns and first.metrics == second.metrics
    stopped = train_state_dreamer(dataclasses.replace(TINY, target_return=-1.0), seed=1,
                                  progress=False, log=lambda line: None)
    assert [e["agent_steps"] for e in stopped.evaluations] == [20]


@pytest.mark.slow
def test_the_shared_core_learns_walker_walk_from_states():
    """The benchmark's check at a smaller budget (``python benchmarks/learning.py state`` is the
    full one): the return must rise clearly above the random policy's."""
    config = dataclasses.replace(
        StateDreamerConfig(), stoch=16, classes=16, model_lr=6e-4, actor_lr=2e-4, critic_lr=2e-4,
        train_every=10, eval_every=2500, eval_episodes=5, cpu_budget_s=1500.0, target_return=120.0)
    curve = train_state_dreamer(config, seed=0, progress=False, log=lambda line: None)
    assert curve.random_return < 60
    assert curve.best_return >= 120, curve.evaluations


def load_learning_script():
    """``benchmarks/learning.py`` as a module."""
    from conftest import load_benchmark_script

    return load_benchmark_script("learning")


def test_tia_check_cartpole_renders_with_and_without_the_video():
    learning = load_learning_script()
    frames = {}
    for background in ("procedural", "none"):
        with learning.make_check_venv("cartpole_swingup", 0, background) as venv:
            obs, _ = venv.reset([5])
            frames[background] = obs[0]
            assert obs.shape == (1, 64, 64, 3) and venv.action_repeat == 8
    # the same cartpole state, so the frames differ only where the video replaces the scene
    assert np.abs(frames["procedural"].astype(int) - frames["none"]).mean() > 10


def test_tia_check_writes_curve_and_decomposition_and_fails_loudly_below_its_threshold(tmp_path, capsys):
    """``benchmarks/learning.py tia`` end to end at smoke size on its own cartpole task: it stops once
    the CPU budget is spent, writes the curve, its data and the decomposition figure, and exits with
    status 1 and a FAILED line when the threshold is not reached."""
    import json
    from pathlib import Path

    learning = load_learning_script()
    smoke = {"cnn_depth": 4, "distractor_cnn_depth": 4, "deter": 16, "stoch": 4, "distractor_deter": 16,
             "distractor_stoch": 4, "hidden": 16, "units": 16, "actor_layers": 2, "critic_layers": 2,
             "distractor_reward_steps": 2, "horizon": 3, "batch_size": 2, "seq_len": 8,
             "prefill_steps": 1000, "pretrain_steps": 2, "train_every": 1000, "train_steps": 2,
             "eval_every": 2000, "eval_episodes": 1}
    status = learning.main(["tia", "--task", "cartpole_swingup", "--cpu-budget", "0.01", "--threshold", "1e9",
                            "--set", json.dumps(smoke), "--out", str(tmp_path), "--quiet"])
    assert status == 1
    assert "FAILED: the best evaluation return" in capsys.readouterr().err
    stem = tmp_path / "tia-cartpole_swingup-seed0"
    summary = json.loads(Path(f"{stem}.json").read_text())
    assert len(summary["evaluations"]) == 1  # the budget is spent at the first evaluation
    assert summary["best_return"] == summary["evaluations"][0]["mean_return"] < 1e9
    assert "reward_explained_variance" in summary["metrics"]
    for figure in (f"{stem}.png", f"{stem}-decomposition.png"):
        assert Path(figure).stat().st_size > 10_000


@pytest.mark.slow
def test_the_offline_learning_check_trains_in_chunks_and_reports_its_curve(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "lqv_d4rl", "generate", "walker_walk", "--behaviour",
                    "sac-state", "--preset", "smoke", "--root", str(root)], check=True, cwd=repo,
                   capture_output=True)  # all three levels: the table normalizes with them
    command = [sys.executable, "benchmarks/offline_learning.py", "bc", "walker_walk-medium",
               "--root", str(root), "--preset", "smoke", "--eval-every", "25",
               "--eval-episodes", "1", "--cpu-budget", "1000", "--work-dir",
               str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    summary = json.loads((tmp_path / "out" / "offline-bc-walker_walk-medium-seed0.json")
                         .read_text())
    # smoke: 60 updates; metrics rows (smoke: every 10 updates) are made to fall on the chunks
    assert [e["updates"] for e in summary["evaluations"]] == [25, 50, 60]
    assert summary["threshold"] == pytest.approx(0.5 * summary["dataset_mean_return"])
    assert summary["random_return"] is not None and summary["commit"]
    assert summary["best_return"] == max(e["mean_return"] for e in summary["evaluations"])
    assert done.returncode == (0 if summary["best_return"] >= summary["threshold"] else 1)
    assert (tmp_path / "out" / "offline-bc-walker_walk-medium-seed0.png").is_file()
    again = subprocess.run(command, cwd=repo, capture_output=True, text=True)  # resumes: done
    assert again.returncode == done.returncode
    assert json.loads((tmp_path / "out" / "offline-bc-walker_walk-medium-seed0.json")
                      .read_text())["evaluations"] == summary["evaluations"]
    table = subprocess.run([sys.executable, "benchmarks/offline_learning_table.py",
                            str(tmp_path / "out"), "--root", str(root)], cwd=repo, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    from lqv_d4rl.scores import get_normalized_score

    cells = [cell.strip() for cell in table[2].split("|")[1:-1]]
    assert cells[:6] == ["bc", "walker_walk-medium", "image", "0", "60",
                         f"{summary['evaluations'][-1]['cpu_s']:.0f}"]
    best = summary["best_return"]
    assert cells[8] == f"{get_normalized_score('walker_walk', best, 'dataset', root=root):.2f}"
    assert cells[9] == f"{get_normalized_score('walker_walk', best, 'paper_table1'):.2f}"
    assert cells[10] == "0.69"  # the paper's BC on walker_walk-medium
