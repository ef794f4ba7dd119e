"""car_racing without pixels and its frames afterwards (lqv_d4rl.car_racing): an episode simulated
without rendering, then rendered by replaying its actions, equals the live environment's episode
byte for byte; a replay that does not reproduce the stored rewards is refused, naming the episode;
render workers do not change the bytes."""

import numpy as np
import pytest

import lqv_d4rl
from lqv_d4rl.car_racing import (FEATURE_DIM, FEATURE_FIELDS, CarEpisodeRenderer,
                                 CarRacingSimulator, CarReplayError, render_car_episode)

SEED = 21
STEPS = 30


@pytest.fixture(scope="module")
def simulated():
    """A 30-step episode of uniform actions played by CarRacingSimulator, stored as
    collectors.state_recipe stores a training episode (entry convention)."""
    from collectors.state_recipe import UniformPolicy, simulate_episode

    simulator = CarRacingSimulator(seed=99)  # the construction seed does not matter
    episode = simulate_episode(simulator, UniformPolicy(3), SEED, explore=True, noise_seed=4,
                               max_episode_steps=STEPS)
    simulator.close()
    return episode


@pytest.fixture(scope="module")
def live(simulated):
    """The same seed and actions played in the live environment."""
    env = lqv_d4rl.make_env("car_racing", seed=3)
    frame, info = env.reset(seed=SEED)
    frames, rewards, states, flags = [frame], [0.0], [info["state"]], []
    for action in simulated.steps["action"][1:]:
        frame, reward, terminated, truncated, info = env.step(action)
        frames.append(frame), rewards.append(reward), states.append(info["state"])
        flags.append((terminated, truncated, info["discount"]))
    env.close()
    return np.stack(frames), np.array(rewards), np.stack(states), flags


def test_simulated_then_rendered_equals_the_live_environment_byte_for_byte(simulated, live):
    frames, rewards, states, _ = live
    steps = simulated.steps
    assert len(steps["reward"]) == STEPS + 1 and "physics" not in simulated.states
    assert np.array_equal(steps["reward"], rewards.astype(steps["reward"].dtype))
    assert np.array_equal(simulated.states["state"], states)
    assert (rewards[1:] > 0).any()  # the car drove onto new tiles: the check is not trivial

    images = render_car_episode(steps["action"], SEED, steps["reward"],
                                expected_states=simulated.states["state"])
    assert images.dtype == np.uint8 and images.shape == (STEPS + 1, 64, 64, 3)
    assert np.array_equal(images, frames)


def test_simulator_steps_like_the_live_env_and_returns_features(simulated, live):
    _, rewards, states, flags = live
    simulator = CarRacingSimulator()
    features, info = simulator.reset(seed=SEED)
    assert features.shape == (FEATURE_DIM,) == (len(FEATURE_FIELDS),)
    assert features.dtype == np.float32 and np.array_equal(info["features"], features)
    assert np.array_equal(info["state"], states[0]) and "physics_state" not in info
    # at rest on the centre line, pointing along the track
    named = dict(zip((name for name, _ in FEATURE_FIELDS), features))
    assert abs(named["centre_offset"]) < 0.1 and named["heading_error_cos"] > 0.99
    assert named["ahead5_forward"] > 0.9 and named["wheels_on_grass"] == 0
    for t, action in enumerate(simulated.steps["action"][1:], start=1):
        features, reward, terminated, truncated, info = simulator.step(action)
        assert reward == rewards[t] and np.array_equal(info["state"], states[t])
        assert (terminated, truncated, info["discount"]) == flags[t - 1]
        assert np.all(np.isfinite(features)) and np.abs(features).max() < 10
    simulator.close()


def test_a_replay_that_differs_is_refused_naming_the_episode(simulated):
    steps = simulated.steps
    wrong = steps["reward"].copy()
    wrong[5] += 1e-3
    with CarEpisodeRenderer() as renderer:
        items = [(steps["action"][:8], SEED, steps["reward"][:8]),
                 (steps["action"][:8], SEED, wrong[:8])]
        outputs = renderer.render(items)
        images, video_ids = next(outputs)
        assert images.shape == (8, 64, 64, 3) and video_ids == []
        with pytest.raises(CarReplayError, match=r"episode 1 of this rendering \(seed 21\).* entry 5"):
            next(outputs)
    with pytest.raises(CarReplayError, match="entry 1"):  # another seed: another track
        render_car_episode(steps["action"][:4], SEED + 1, steps["reward"][:4])


def test_render_workers_give_the_same_bytes(simulated):
    steps = simulated.steps
    items = [(steps["action"][:6], SEED, steps["reward"][:6]),
             (steps["action"][:10], SEED, steps["reward"][:10])]
    with CarEpisodeRenderer(workers=2) as renderer:
        in_workers = [images for images, _ in renderer.render(items)]
    for images, (actions, seed, rewards) in zip(in_workers, items):
        assert np.array_equal(images, render_car_episode(actions, seed, rewards))


def test_the_speed_limit_cuts_the_gas_and_brakes_above_the_limit_only():
    from lqv_d4rl.car_racing import (BRAKE, FORWARD_SPEED, GAS, SpeedLimitedPolicy,
                                     speed_limited_action)

    assert FEATURE_FIELDS[FORWARD_SPEED][0] == "forward_speed"
    features = np.zeros(FEATURE_DIM, np.float32)
    action = np.array([0.3, 0.8, -1.0], np.float32)
    features[FORWARD_SPEED] = 0.4
    assert speed_limited_action(action, features, 0.5) is action  # below: unchanged
    features[FORWARD_SPEED] = 0.6
    limited = speed_limited_action(action, features, 0.5)
    assert limited.dtype == np.float32 and action[GAS] == np.float32(0.8)  # not modified in place
    assert limited[0] == action[0] and limited[GAS] == -1.0  # steering kept, no gas
    assert limited[BRAKE] == pytest.approx(2 * 0.2 - 1, abs=1e-6)  # brake 2 x 0.1 over
    features[FORWARD_SPEED] = 5.0
    assert speed_limited_action(action, features, 0.5)[BRAKE] == pytest.approx(0.6)  # brake 0.8
    braking = np.array([0.0, 1.0, 0.9], np.float32)  # the policy's own harder brake stays
    assert speed_limited_action(braking, features, 0.5)[BRAKE] == np.float32(0.9)

    class Fixed:
        def act(self, state, *, deterministic=False, generator=None):
            return action

    assert np.array_equal(SpeedLimitedPolicy(Fixed(), 0.5).act(features),
                          speed_limited_action(action, features, 0.5))
