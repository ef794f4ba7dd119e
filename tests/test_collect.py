"""Collection machinery: episode entries, vector envs (in-process, worker processes, Ray), the
online replay, and the TIA training loop's schedule and checkpoints. Real MuJoCo rendering, tiny
episodes."""

import dataclasses
import multiprocessing
import sys

import numpy as np
import pytest

import distractors
from collectors.online import (
    DEFAULT_CHECKPOINT_EVERY,
    OnlineTrainer,
    load_replay_chunks,
    save_replay_chunk,
)
from collectors.recorders import (
    EpisodeBuilder,
    MedrepRecorder,
    UniformRandomPolicy,
    play_episodes,
    select_medrep_episodes,
)
from collectors.replay import EpisodeReplay
from collectors.tia import TIAConfig
from collectors.vector_env import VectorEnvError, make_vector_env
from lqv_d4rl.format import validate_episode
from lqv_d4rl.runs import metric_series, read_metrics

TASK = "walker_walk"
ACTION_DIM = 6


@pytest.fixture(scope="module")
def pool():
    """A small procedural distractor pool, built once and shared by every env."""
    return distractors.make_video_pool(None, num_frames=40, seed=0)


def tiny_config(**changes):
    """TIA smoke networks with a schedule for 10-step episodes (20 env steps each)."""
    base = dataclasses.replace(TIAConfig.smoke(), batch_size=2, seq_len=6, prefill_steps=40,
                               pretrain_steps=1, train_every=40, train_steps=1, eval_every=40,
                               eval_episodes=1, total_steps=100)
    return dataclasses.replace(base, **changes)


def random_episode(length, seed, terminal=False):
    """A real-looking episode made with EpisodeBuilder from random numbers."""
    rng = np.random.default_rng(seed)
    builder = EpisodeBuilder(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), ACTION_DIM)
    for step in range(length - 1):
        builder.add(rng.uniform(-1, 1, ACTION_DIM), rng.integers(0, 256, (64, 64, 3), np.uint8),
                    rng.random(), terminated=terminal and step == length - 2)
    return builder.finish()


# -- entries -------------------------------------------------------------------------------------


def test_episode_builder_follows_the_entry_convention():
    steps = random_episode(5, seed=0)
    validate_episode(steps, ACTION_DIM)  # raises on any breach of the convention
    assert steps["is_first"].tolist() == [True, False, False, False, False]
    assert steps["is_last"].tolist() == [False, False, False, False, True]
    assert not steps["is_terminal"].any() and steps["discount"].tolist() == [1.0] * 5
    assert steps["reward"][0] == 0 and not steps["action"][0].any()
    terminal = random_episode(4, seed=1, terminal=True)
    validate_episode(terminal, ACTION_DIM)
    assert terminal["is_terminal"].tolist() == [False, False, False, True]
    assert terminal["discount"][-1] == 0.0


def test_played_episodes_are_valid_and_tagged_with_background_clips(pool):
    with make_vector_env(TASK, 2, env_kwargs={"distractor": pool}) as venv:
        episodes = list(play_episodes(venv, UniformRandomPolicy(ACTION_DIM), 0, 3, seed=0,
                                      stream="random", explore=True, max_episode_steps=4))
        with pytest.raises(ValueError, match=r"active needs one flag per environment, shape \(2,\)"):
            venv.step(np.zeros((2, ACTION_DIM)), active=[True])
    assert [k for k, _ in episodes] == [0, 1, 2]
    for _, episode in episodes:
        validate_episode(episode.steps, ACTION_DIM)
        assert len(episode.steps["image"]) == 5 and not episode.steps["is_terminal"].any()
        assert episode.video_ids and set(episode.video_ids) <= set(pool.video_ids.tolist())
    assert len({episode.seed for _, episode in episodes}) == 3


def test_resuming_inside_a_round_replays_it_to_the_same_episodes(pool):
    with make_vector_env(TASK, 2, env_kwargs={"distractor": pool}) as venv:
        def episodes(first):
            return {k: e for k, e in play_episodes(venv, UniformRandomPolicy(ACTION_DIM), first, 3,
                                                    seed=1, stream="medium", explore=True,
                                                    max_episode_steps=3)}
        straight, resumed = episodes(0), episodes(1)
    assert sorted(resumed) == [1, 2]
    for k in (1, 2):
        for key, value in straight[k].steps.items():
            np.testing.assert_array_equal(resumed[k].steps[key], value)


# -- vector envs ---------------------------------------------------------------------------------


def roll(venv, seeds, steps=3):
    """Observations of a reset and ``steps`` fixed-action steps."""
    obs, _ = venv.reset(seeds)
    frames = [obs]
    actions = np.linspace(-1, 1, venv.num_envs * ACTION_DIM, dtype=np.float32)
    for _ in range(steps):
        obs, rewards, terminated, truncated, infos = venv.step(
            actions.reshape(venv.num_envs, ACTION_DIM))
        frames.append(obs)
        assert infos[0]["video_id"] >= 0
    return np.stack(frames)


def test_two_worker_processes_give_the_same_observations_as_one(pool):
    seeds = [5, 6, 7]
    with make_vector_env(TASK, 3, workers=1, env_kwargs={"distractor": pool}) as single:
        expected = roll(single, seeds)
    with make_vector_env(TASK, 3, workers=2, env_kwargs={"distractor": pool}) as multi:
        assert multi.workers == 2
        got = roll(multi, seeds)
        assert got.shape == (4, 3, 64, 64, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
        # a partial step leaves the waiting env alone
        obs, rewards, *_ = multi.step(np.zeros((3, ACTION_DIM), np.float32),
                                      active=[True, False, True])
        assert not obs[1].any() and rewards[1] == 0
        # an error inside a worker comes back with the worker's traceback, and closes the env:
        # every worker process has exited (none is left behind)
        assert len(multiprocessing.active_children()) == 2
        with pytest.raises(VectorEnvError, match="InvalidActionError"):
            multi.step(np.full((3, ACTION_DIM), np.nan, np.float32))
        assert multiprocessing.active_children() == []
        with pytest.raises(VectorEnvError, match="closed"):
            multi.reset(seeds)


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    from collectors.ray_workers import RayNotInstalledError

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(RayNotInstalledError, match=r"pip install 'lqv-d4rl\[ray\]'"):
        make_vector_env(TASK, 1, backend="ray")


def test_ray_actors_give_the_same_observations_as_one_process(pool):
    ray = pytest.importorskip("ray")
    seeds = [5, 6]
    with make_vector_env(TASK, 2, workers=1, env_kwargs={"distractor": pool}) as single:
        expected = roll(single, seeds, steps=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with make_vector_env(TASK, 2, workers=2, backend="ray",
                             env_kwargs={"distractor": pool}) as venv:
            np.testing.assert_array_equal(roll(venv, seeds, steps=2), expected)
    finally:
        ray.shutdown()


# -- replay --------------------------------------------------------------------------------------


def test_replay_windows_never_cross_episodes_and_survive_a_checkpoint(tmp_path):
    replay = EpisodeReplay(ACTION_DIM, seed=3)
    for index, length in enumerate([7, 3, 12, 6]):
        replay.add_episode(random_episode(length, seed=index), policy_id=f"p{index}",
                           policy_step=index * 10, seed=index, video_ids=[index])
    assert len(replay) == 4 and replay.num_steps == 28
    batch = replay.sample(batch_size=64, seq_len=6)
    assert batch["image"].shape == (64, 6, 64, 64, 3)
    assert 1 not in batch["episode"]  # too short for a 6-entry window
    for row, (episode, start) in enumerate(zip(batch["episode"], batch["start"])):
        steps = replay.episode(int(episode))
        assert start + 6 <= len(steps["image"])
        np.testing.assert_array_equal(batch["image"][row], steps["image"][start:start + 6])
        assert batch["is_first"][row].sum() == (start == 0)

    save_replay_chunk(replay, tmp_path, 0)
    restored = load_replay_chunks(tmp_path, ACTION_DIM, 4)
    restored.rng.bit_generator.state = replay.rng.bit_generator.state
    for index in range(4):
        assert restored.episode_info(index)["policy_id"] == f"p{index}"
        for key, value in replay.episode(index).items():
            np.testing.assert_array_equal(restored.episode(index)[key], value)
    np.testing.assert_array_equal(restored.sample(8, 6)["start"], replay.sample(8, 6)["start"])


def test_medrep_selection_spreads_evenly_and_keeps_both_ends():
    assert select_medrep_episodes(range(5), 400) == [0, 1, 2, 3, 4]
    chosen = select_medrep_episodes(range(1000), 400)
    assert len(chosen) == 400 and chosen[0] == 0 and chosen[-1] == 999
    assert np.all(np.diff(chosen) >= 2)


# -- online training loop -------------------------------------------------------------------------


class StopAt:
    """on_evaluation that interrupts the run at its ``count``-th evaluation (a simulated Ctrl-C)."""

    def __init__(self, count):
        self.count = count
        self.seen = 0

    def __call__(self, evaluation, agent):
        self.seen += 1
        if self.seen == self.count:
            raise KeyboardInterrupt
        return False


def train(pool, work_dir, on_evaluation=None, max_env_steps=100, progress=False):
    recorder = MedrepRecorder()
    with make_vector_env(TASK, 1, env_kwargs={"distractor": pool}) as venv:
        trainer = OnlineTrainer(tiny_config(), venv, work_dir=work_dir, seed=0,
                                max_env_steps=max_env_steps, max_episode_steps=10,
                                checkpoint_every=0, on_episode=recorder,
                                on_evaluation=on_evaluation, progress=progress)
        state = trainer.run()
    return trainer, state, recorder


def test_training_schedule_and_resume_after_an_interruption(pool, tmp_path):
    trainer, state, recorder = train(pool, tmp_path / "straight")
    # 5 episodes of 20 env steps: 2 of prefill, then a snapshot per episode
    ids = [e["policy_id"] for e in recorder.episodes]
    assert ids == ["tia-seed0-prefill"] * 2 + [f"tia-seed0-step{s:06d}" for s in (40, 60, 80)]
    assert [e["policy_step"] for e in recorder.episodes] == [0, 0, 40, 60, 80]
    assert state.env_steps == 100 and state.stop_reason == "max_env_steps"
    # pretrain 1 update at 40; then 1 update per 40 env steps collected (at 80)
    assert state.updates == 2
    assert [e.env_steps for e in trainer.evaluations] == [40, 80, 100]

    with pytest.raises(KeyboardInterrupt):
        train(pool, tmp_path / "resumed", on_evaluation=StopAt(2))
    resumed, resumed_state, resumed_recorder = train(pool, tmp_path / "resumed")
    assert resumed_recorder.episodes == recorder.episodes  # restored ones reported again
    assert resumed_state.updates == state.updates
    for index in range(len(trainer.replay)):
        np.testing.assert_array_equal(resumed.replay.episode(index)["action"],
                                      trainer.replay.episode(index)["action"])
    assert [e.mean_return for e in resumed.evaluations] == \
        [e.mean_return for e in trainer.evaluations]


def test_every_update_metric_is_logged_to_the_metrics_file_and_the_progress_bar(pool, tmp_path,
                                                                                 capsys):
    trainer, state, _ = train(pool, tmp_path / "run", progress=True)
    rows = read_metrics(tmp_path / "run")
    returned = set(trainer.agent.update(trainer.replay.sample(2, 6)))
    train_rows = [row for row in rows if row["phase"] == "train"]
    # one training point at 40 (pretrain) and one at 80, each with every metric of agent.update
    assert sorted({row["step"] for row in train_rows}) == [40, 80]
    for step in (40, 80):
        logged = {row["metric"] for row in train_rows if row["step"] == step}
        assert returned | {"updates", "updates_per_second"} == logged
    assert [(m["env_steps"], m["updates"]) for m in trainer.metrics] == [(40, 1), (80, 2)]
    assert metric_series(rows, "eval", "return")[1].tolist() == \
        [e.mean_return for e in trainer.evaluations]
    episode_steps, episode_returns = metric_series(rows, "episode", "return")
    assert episode_steps.tolist() == [20, 40, 60, 80, 100]
    np.testing.assert_allclose(episode_returns, trainer.replay.returns)
    progress = capsys.readouterr().err
    assert "task_kl=" in progress and "actor_entropy=" in progress


def test_a_resumed_run_logs_the_same_metrics_as_an_uninterrupted_one(pool, tmp_path):
    train(pool, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(pool, tmp_path / "resumed", on_evaluation=StopAt(2))
    train(pool, tmp_path / "resumed")

    def logged(folder):  # updates_per_second is a timing, the only value that may differ
        return [row for row in read_metrics(folder) if row["metric"] != "updates_per_second"]

    assert logged(tmp_path / "resumed") == logged(tmp_path / "straight")


def test_checkpoints_are_not_written_every_round_by_default(pool, tmp_path):
    recorder = MedrepRecorder()
    with make_vector_env(TASK, 1, env_kwargs={"distractor": pool}) as venv:
        trainer = OnlineTrainer(tiny_config(), venv, work_dir=tmp_path, seed=0, max_env_steps=100,
                                max_episode_steps=10, on_episode=recorder, progress=False)
        saved = []
        save = trainer.save_checkpoint

        def save_and_count():
            saved.append(trainer.state.env_steps)
            save()

        trainer.save_checkpoint = save_and_count
        trainer.run()
    assert trainer.checkpoint_every == DEFAULT_CHECKPOINT_EVERY > 100
    assert saved == [100]  # only the end of the run
