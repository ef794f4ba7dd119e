"""Environments: exact compositing, seeding, episode bookkeeping, errors, and the preview-env CLI.

Real MuJoCo, real gymnasium CarRacing, the real procedural driving video (small pools for speed).
Environments are built once per module and reused.
"""

import dataclasses
import re

import cv2
import mujoco
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import distractors
from lqv_d4rl.cli import main as cli_main
from lqv_d4rl.envs import (FAST_RENDER_SETTINGS, CarRacingEnv, EnvConfigError, EpisodeOverError,
                           InvalidActionError, make_env)
from lqv_d4rl.errors import UnknownTaskError
from lqv_d4rl.tasks import TASKS

DMC_TASKS = [name for name, spec in TASKS.items() if spec.kind == "dmc"]
POOL_FRAMES = 40


def random_actions(env, count, seed=0):
    """``count`` seeded uniform actions for ``env``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (count,) + env.action_space.shape)


def rollout(env, actions, seed=None):
    """Reset (with ``seed``) and play ``actions``; return the observations and infos."""
    observation, info = env.reset(seed=seed)
    observations, infos = [observation], [info]
    for action in actions:
        observation, _, _, _, info = env.step(action)
        observations.append(observation)
        infos.append(info)
    return np.stack(observations), infos


def reference_render(physics):
    """An independent undistracted render and background mask of the physics' current state."""
    image = physics.render(64, 64, camera_id=0)
    labels = physics.render(64, 64, camera_id=0, segmentation=True)
    object_id, object_type = labels[:, :, 0], labels[:, :, 1]
    plane_ids = np.flatnonzero(physics.model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE)
    is_plane = (object_type == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(object_id, plane_ids)
    return image, (object_id == -1) | is_plane


@pytest.fixture(scope="module", params=DMC_TASKS)
def dmc_env(request):
    env = make_env(request.param, seed=0, num_video_frames=POOL_FRAMES)
    yield env
    env.close()


@pytest.fixture(scope="module")
def car_env():
    env = make_env("car_racing", seed=0)
    yield env
    env.close()


def test_segmentation_composite_is_exact(dmc_env):
    """Agent pixels equal a full undistracted render, background pixels equal the video frame."""
    dmc_env.reset(seed=1)
    for action in random_actions(dmc_env, 4):
        observation, _, _, _, info = dmc_env.step(action)
        render, background_mask = reference_render(dmc_env.physics)
        background = dmc_env.video_pool.frame_rgb(info["background_frame"])
        assert 0 < background_mask.sum() < background_mask.size
        agent = ~background_mask
        np.testing.assert_array_equal(observation[agent], render[agent])
        np.testing.assert_array_equal(observation[background_mask], background[background_mask])
        assert np.any(observation[background_mask] != render[background_mask])


def test_observation_and_info(dmc_env):
    observation, info = dmc_env.reset(seed=2)
    assert observation.shape == (64, 64, 3) and observation.dtype == np.uint8
    assert dmc_env.observation_space.contains(observation)
    assert 0 <= info["background_frame"] < POOL_FRAMES
    assert info["video_id"] == dmc_env.video_pool.video_ids[info["background_frame"]]
    observation, reward, terminated, truncated, info = dmc_env.step(random_actions(dmc_env, 1)[0])
    assert isinstance(reward, float) and reward >= 0.0
    assert (terminated, truncated, info["discount"]) == (False, False, 1.0)
    np.testing.assert_array_equal(info["physics_state"], dmc_env.physics.get_state())


def test_background_plays_one_frame_per_agent_step(dmc_env):
    _, infos = rollout(dmc_env, random_actions(dmc_env, 3), seed=3)
    frames = [info["background_frame"] for info in infos]
    assert frames == [(frames[0] + k) % POOL_FRAMES for k in range(4)]


def test_fast_render_settings_are_applied(dmc_env):
    quality = dmc_env.physics.model.vis.quality
    assert FAST_RENDER_SETTINGS["offsamples"] == 0
    for name, value in FAST_RENDER_SETTINGS.items():
        assert getattr(quality, name) == value


@pytest.fixture(scope="module")
def hopper_pair():
    """Two hopper envs with the same seed, and one with another seed."""
    envs = [make_env("hopper_hop", seed=seed, num_video_frames=POOL_FRAMES) for seed in (7, 7, 8)]
    yield envs
    for env in envs:
        env.close()


def test_same_seed_gives_identical_observations(hopper_pair):
    first, second, _ = hopper_pair
    actions = random_actions(first, 5)
    observations_a, infos_a = rollout(first, actions)
    observations_b, infos_b = rollout(second, actions)
    np.testing.assert_array_equal(observations_a, observations_b)
    np.testing.assert_array_equal(infos_a[-1]["physics_state"], infos_b[-1]["physics_state"])
    again, _ = rollout(first, actions, seed=7)  # reset(seed=s) replays the env's first episode
    np.testing.assert_array_equal(again, observations_a)


def test_different_seeds_give_different_backgrounds(hopper_pair):
    first, _, other = hopper_pair
    assert not np.array_equal(first.video_pool.frames, other.video_pool.frames)
    actions = random_actions(first, 2)
    observations_a, infos_a = rollout(first, actions, seed=0)
    observations_b, infos_b = rollout(other, actions, seed=0)
    _, mask = reference_render(other.physics)
    assert np.any(observations_a[-1][mask] != observations_b[-1][mask])


def test_each_episode_starts_at_a_new_background_frame(hopper_pair):
    env = hopper_pair[0]
    starts = {env.reset()[1]["background_frame"] for _ in range(6)}
    assert len(starts) > 1


def test_out_of_range_actions_are_clipped(hopper_pair):
    env = hopper_pair[0]
    states = []
    for action in (np.full(4, 5.0), np.ones(4)):
        env.reset(seed=4)
        states.append(env.step(action)[4]["physics_state"])
    np.testing.assert_array_equal(states[0], states[1])


@pytest.mark.parametrize("bad_action", [np.zeros(3), np.zeros((1, 4)), [0.0, np.nan, 0.0, 0.0]])
def test_bad_actions_are_rejected(hopper_pair, bad_action):
    env = hopper_pair[0]
    env.reset()
    with pytest.raises(InvalidActionError, match="hopper_hop takes actions of shape|NaN"):
        env.step(bad_action)


def test_an_agent_step_repeats_the_action_twice_and_sums_both_rewards():
    """Against an independently loaded dm_control task with the same seed."""
    from dm_control import suite

    env = make_env("walker_walk", distractor=None, seed=5)
    reference = suite.load("walker", "walk", task_kwargs={"random": 5})
    env.reset()
    reference.reset()
    for action in random_actions(env, 3):
        _, reward, _, _, info = env.step(action)
        rewards = [reference.step(action).reward for _ in range(2)]
        assert reward == sum(rewards) and rewards[0] != rewards[1]
        np.testing.assert_array_equal(info["physics_state"], reference.physics.get_state())
    env.close()


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_bad_seeds_are_rejected_with_the_accepted_range(hopper_pair, seed):
    with pytest.raises(EnvConfigError, match=re.escape("seed must be an integer in [0, 2**32 - 1]")):
        make_env("hopper_hop", seed=seed, distractor=None)
    with pytest.raises(EnvConfigError, match=re.escape("[0, 2**32 - 1]")):
        hopper_pair[0].reset(seed=seed)


def test_dmc_episode_truncates_after_500_agent_steps():
    env = make_env("cheetah_run", distractor=None, seed=0)
    env.reset()
    action = np.zeros(6)
    for step in range(1, 501):
        _, _, terminated, truncated, info = env.step(action)
        assert not terminated
        assert truncated == (step == 500)
    assert info["discount"] == 1.0
    with pytest.raises(EpisodeOverError, match="reset"):
        env.step(action)
    env.close()


def test_without_distractor_the_observation_is_the_plain_render():
    env = make_env("walker_walk", distractor=None, seed=0)
    observation, info = env.reset()
    assert env.video_pool is None
    assert (info["background_frame"], info["video_id"]) == (-1, -1)
    np.testing.assert_array_equal(observation, env.physics.render(64, 64, camera_id=0))
    env.close()


def test_color_composite_follows_the_published_rule():
    pool = distractors.procedural_driving_video(num_frames=POOL_FRAMES, rgb=True, seed=0)
    env = make_env("walker_walk", distractor=pool, composite="color", seed=0)
    assert env.video_pool is pool
    observation, info = env.reset()
    render = env.physics.render(64, 64, camera_id=0)
    background = pool.frame_rgb(info["background_frame"])
    replaced = (render[:, :, 2] > render[:, :, 1]) & (render[:, :, 2] > render[:, :, 0])
    assert 0 < replaced.sum() < replaced.size
    np.testing.assert_array_equal(observation[replaced], background[replaced])
    np.testing.assert_array_equal(observation[~replaced], render[~replaced])
    env.close()


def test_rgb_background_has_colour():
    env = make_env("hopper_hop", rgb_background=True, seed=0, num_video_frames=POOL_FRAMES)
    assert env.video_pool.frames.shape[3] == 3
    observation, _ = env.reset()
    _, mask = reference_render(env.physics)
    background = observation[mask].astype(int)
    assert np.any(background[:, 0] != background[:, 1])
    env.close()


def test_default_render_quality_keeps_dm_control_settings():
    from dm_control import suite

    env = make_env("hopper_hop", render_quality="default", num_video_frames=POOL_FRAMES)
    quality = env.physics.model.vis.quality
    original = suite.load("hopper", "hop").physics.model.vis.quality
    assert (quality.offsamples, quality.shadowsize) == (original.offsamples, original.shadowsize)
    assert quality.offsamples > 0
    observation, _ = env.reset()
    render, background_mask = reference_render(env.physics)
    np.testing.assert_array_equal(observation[~background_mask], render[~background_mask])
    env.close()


def test_unknown_task_lists_the_tasks():
    with pytest.raises(UnknownTaskError, match="walker_walk, cheetah_run"):
        make_env("walker_run")


@pytest.mark.parametrize("option", [{"composite": "blue"}, {"render_quality": "best"},
                                    {"distractor": 3}])
def test_bad_options_are_rejected(option):
    with pytest.raises(EnvConfigError, match="must be"):
        make_env("walker_walk", **option)


def test_a_video_pool_of_the_wrong_size_is_rejected():
    pool = distractors.procedural_driving_video(num_frames=2, size=32, seed=0)
    with pytest.raises(EnvConfigError, match="size=64"):
        make_env("walker_walk", distractor=pool)


def test_bad_video_folder_raises_a_video_source_error(tmp_path):
    with pytest.raises(distractors.VideoSourceError, match=re.escape(str(tmp_path))):
        make_env("walker_walk", distractor=tmp_path)
    with pytest.raises(distractors.VideoSourceError, match="no_such_folder"):
        make_env("walker_walk", distractor=str(tmp_path / "no_such_folder"))


def test_car_racing_observations_and_info(car_env):
    observation, info = car_env.reset()
    assert observation.shape == (64, 64, 3) and observation.dtype == np.uint8
    assert car_env.video_pool is None and "physics_state" not in info
    assert car_env.action_space.shape == (3,)
    observation, reward, terminated, truncated, info = car_env.step(np.zeros(3))
    assert observation.shape == (64, 64, 3) and isinstance(reward, float)
    assert (terminated, truncated, info["discount"]) == (False, False, 1.0)
    assert (info["background_frame"], info["video_id"]) == (-1, -1)


def test_car_racing_maps_gas_and_brake_to_zero_one():
    np.testing.assert_array_equal(CarRacingEnv.to_car_action(np.array([-1.0, -1.0, 1.0])),
                                  [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(CarRacingEnv.to_car_action(np.array([0.5, 0.0, -1.0])),
                                  [0.5, 0.5, 0.0])


def test_car_racing_gas_drives_onto_new_tiles(car_env):
    """Full gas (+1 -> 1) reaches new tiles sooner than gas -1 (-> 0) with full brake."""
    returns = []
    for gas, brake in ((1.0, -1.0), (-1.0, 1.0)):
        car_env.reset(seed=0)
        returns.append(sum(car_env.step(np.array([0.0, gas, brake]))[1] for _ in range(12)))
    assert returns[0] > returns[1] + 3.0


def test_car_racing_leaving_the_playfield_terminates_with_discount_zero(car_env):
    car_env.reset(seed=0)
    car_env._gym_env.unwrapped.car.hull.position = (1e4, 1e4)  # far outside the playfield
    _, reward, terminated, truncated, info = car_env.step(np.array([0.0, 1.0, -1.0]))
    assert (terminated, truncated, info["discount"], reward) == (True, False, 0.0, -100.0)
    with pytest.raises(EpisodeOverError):
        car_env.step(np.zeros(3))


def test_car_racing_truncates_after_its_episode_steps():
    assert TASKS["car_racing"].episode_steps == 500
    short = dataclasses.replace(TASKS["car_racing"], episode_steps=3)
    env = CarRacingEnv(short, seed=0, size=64)
    env.reset()
    flags = [env.step(np.zeros(3))[3] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(EpisodeOverError):
        env.step(np.zeros(3))
    env.close()


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_preview_env_cli_writes_an_image(tmp_path, suffix):
    out = tmp_path / f"preview{suffix}"
    result = CliRunner().invoke(cli_main, ["preview-env", "hopper_hop", "--out", str(out),
                                           "--steps", "5", "--every", "2",
                                           "--video-frames", str(POOL_FRAMES)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    with Image.open(out) as image:
        assert image.format == suffix[1:].upper()
        if suffix == ".gif":
            assert image.n_frames == 3 and image.size == (128, 128)
        else:
            assert image.size == (2 * 128 + 2, 2 * 128 + 2)


def test_preview_env_cli_reports_errors_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli_main, ["preview-env", "walker_run", "--out", str(tmp_path / "a.gif")])
    assert result.exit_code == 2 and "unknown task 'walker_run'" in result.output  # usage error
    assert "Traceback" not in result.output
    result = runner.invoke(cli_main, ["preview-env", "walker_walk", "--out",
                                      str(tmp_path / "a.gif"), "--video-dir", str(tmp_path)])
    assert result.exit_code == 1 and str(tmp_path) in result.output
    result = runner.invoke(cli_main, ["preview-env", "walker_walk", "--out", str(tmp_path / "a.mp4")])
    assert result.exit_code == 2 and ".gif or .png" in result.output


def test_a_folder_of_real_videos_becomes_the_background(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "drive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                             (80, 60))
    for value in range(0, 240, 20):
        writer.write(np.full((60, 80, 3), value, np.uint8))
    writer.release()
    env = make_env("hopper_hop", distractor=str(tmp_path / "*.mp4"), num_video_frames=12)
    assert env.video_pool.description["kind"] == "video_dir" and len(env.video_pool) == 12
    observation, info = env.reset()
    _, mask = reference_render(env.physics)
    np.testing.assert_array_equal(observation[mask],
                                  env.video_pool.frame_rgb(info["background_frame"])[mask])
    env.close()


def test_every_info_key_is_documented(dmc_env, car_env):
    import pathlib

    # the environments' user documentation (moved out of the README with the rest of the usage)
    readme = (pathlib.Path(__file__).parents[1] / "docs" / "usage.md").read_text(encoding="utf-8")
    for env in (dmc_env, car_env):
        _, infos = rollout(env, random_actions(env, 1), seed=0)
        for key in set(infos[0]) | set(infos[1]):
            assert f"``{key}``" in make_env.__doc__, f"make_env's docstring lacks info[{key!r}]"
            assert f'info["{key}"]' in readme, f"docs/usage.md lacks info[{key!r}]"
    documented = re.search(r'info\["background_frame"\][^\n]*\n?[^\n]*', readme).group(0)
    assert "index" in documented and "-1" in documented  # what the number means
