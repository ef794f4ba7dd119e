"""The environments as gymnasium and Minari users reach for them: ``gymnasium.make`` ids, specs,
metadata, seeding through ``reset(seed=)``, and ``recover_environment()`` on a Minari export."""

import gymnasium
import numpy as np
import pytest
from conftest import write_tiny_dataset
from gymnasium.utils.env_checker import check_env

import lqv_d4rl  # noqa: F401  (registers the ids)
from lqv_d4rl.envs import EnvConfigError, make_env
from lqv_d4rl.gym_registration import ENTRY_POINT, gym_id
from lqv_d4rl.tasks import TASKS

POOL_FRAMES = 32

# agent steps per simulated second: 1 / (control timestep x action repeat 2); dm_control's control
# timesteps are 0.025 s (walker, humanoid), 0.01 s (cheetah), 0.02 s (hopper); CarRacing runs at 50
RENDER_FPS = {"walker_walk": 20, "cheetah_run": 50, "hopper_hop": 25, "humanoid_walk": 20,
              "car_racing": 25}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_has_a_gymnasium_id_with_spec_and_render_fps(task):
    env = gymnasium.make(f"lqv_d4rl/{task}-v0", distractor=None, seed=4)
    try:
        assert env.spec.id == gym_id(task) == f"lqv_d4rl/{task}-v0"
        assert env.spec.entry_point == ENTRY_POINT
        assert env.spec.max_episode_steps == TASKS[task].episode_steps == 500
        assert env.spec.kwargs == {"task": task, "distractor": None, "seed": 4}
        assert env.metadata["render_fps"] == pytest.approx(RENDER_FPS[task])
        assert env.metadata["render_modes"] == ["rgb_array"]
        observation, _ = env.reset(seed=0)
        assert env.observation_space.contains(observation)
        assert np.array_equal(env.render(), observation)
    finally:
        env.close()


def test_gymnasium_checker_passes_and_kwargs_reach_the_environment():
    env = gymnasium.make("lqv_d4rl/hopper_hop-v0", num_video_frames=POOL_FRAMES,
                         composite="color", rgb_background=True)
    check_env(env.unwrapped)
    assert env.unwrapped.video_pool.rgb and len(env.unwrapped.video_pool) == POOL_FRAMES
    assert env.unwrapped._composite == "color"
    env.close()
    with pytest.raises(EnvConfigError, match="composite"):
        gymnasium.make("lqv_d4rl/hopper_hop-v0", composite="blue")
    with pytest.raises(EnvConfigError, match="render_mode"):
        gymnasium.make("lqv_d4rl/hopper_hop-v0", render_mode="human")


def _rollout(env, seed, steps=4):
    observation, info = env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps,) + env.action_space.shape)
    observations, frames = [observation], [info["background_frame"]]
    for action in actions:
        observation, _, _, _, info = env.step(action.astype(np.float32))
        observations.append(observation)
        frames.append(info["background_frame"])
    return np.stack(observations), frames


def test_reset_seed_alone_decides_the_episode_and_its_background():
    first = gymnasium.make("lqv_d4rl/walker_walk-v0", seed=1, num_video_frames=POOL_FRAMES)
    second = gymnasium.make("lqv_d4rl/walker_walk-v0", seed=2, num_video_frames=POOL_FRAMES)
    _rollout(second, seed=11)  # another history before the seeded reset
    observations, frames = _rollout(first, seed=7)
    again, again_frames = _rollout(second, seed=7)
    assert frames == again_frames
    np.testing.assert_array_equal(observations, again)
    assert not np.array_equal(observations, _rollout(first, seed=8)[0])
    first.close()
    second.close()


def test_make_env_keeps_its_seeded_pool_and_takes_video_seed():
    envs = [make_env("hopper_hop", seed=seed, video_seed=video_seed, num_video_frames=POOL_FRAMES)
            for seed, video_seed in ((1, None), (2, None), (2, 1))]
    pools = [env.video_pool.frames for env in envs]
    assert not np.array_equal(pools[0], pools[1])  # the seed seeds the pool, as documented
    np.testing.assert_array_equal(pools[0], pools[2])
    for env in envs:
        env.close()


def test_minari_recovers_the_environment_of_an_export(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from lqv_d4rl.minari_export import export_to_minari

    provenance = {"seed": 5, "distractor": {"kind": "procedural", "seed": 5, "num_frames": 24,
                                            "rgb": False},
                  "env": {"composite": "color", "render_quality": "fast"}}
    folder = write_tiny_dataset(tmp_path / "root" / "walker_walk-medium", level="medium",
                                num_policies=1, provenance=provenance)
    export_to_minari(folder, "lqv-test/walker_walk-medium-v0", minari_root=tmp_path / "minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))

    env = minari.load_dataset("lqv-test/walker_walk-medium-v0").recover_environment()
    assert env.spec.id == "lqv_d4rl/walker_walk-v0" and env.spec.max_episode_steps == 500
    pool = env.unwrapped.video_pool
    assert pool.description["seed"] == 5 and len(pool) == 24
    assert env.unwrapped._composite == "color"
    observation, _ = env.reset(seed=0)
    assert observation.shape == (64, 64, 3)
    env.close()
