"""Stored physics and ``rerender``: the physics-only simulator and the frame renderer reproduce the
live environment exactly; a state-recipe dataset re-rendered over a video folder equals, byte for
byte, the one generated with it; a re-rendered TIA dataset keeps actions, rewards, states and agent
pixels; an interrupted rerender loses nothing and resumes to the same bytes; bad sources and
options are refused in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import distractors
import lqv_d4rl
from lqv_d4rl.cli import main as cli_main
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.errors import DatasetExistsError
from lqv_d4rl.format import read_manifest, verify_dataset
from lqv_d4rl.physics import FrameRenderer, StateSimulator
from lqv_d4rl.rerender import RerenderError, rerender

TASK = "walker_walk"
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # the tiny recipes of test_generate


def write_videos(folder, count=2):
    """Short random-noise mp4 clips (real files, decoded by OpenCV like Kinetics clips)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        writer = cv2.VideoWriter(str(folder / f"clip{n}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                 25, (80, 60))
        rng = np.random.default_rng(n)
        for _ in range(30):
            writer.write(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        writer.release()
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("videos"))


def generate_state(root, **options):
    """The tiny sac-state recipe of test_generate (seed 1, 60 kB shards)."""
    from test_generate import run_state

    return run_state(root, **options)


def shard_hashes(root, levels=("random", "medrep", "medium"), prefix=TASK):
    return {level: [s["sha256"] for s in read_manifest(Path(root) / f"{prefix}-{level}")["shards"]]
            for level in levels}


@pytest.fixture(scope="module")
def state_datasets(tmp_path_factory, videos):
    """The tiny sac-state recipe generated over the procedural video and over ``videos``."""
    procedural = tmp_path_factory.mktemp("procedural")
    direct = tmp_path_factory.mktemp("direct")
    generate_state(procedural)
    generate_state(direct, video_dir=str(videos))
    return procedural, direct


# -- the simulator and the renderer against the live environment ---------------------------------


def test_simulator_and_renderer_reproduce_the_live_environment_exactly():
    pool = distractors.make_video_pool(None, num_frames=40, seed=0)
    env = lqv_d4rl.make_env(TASK, distractor=pool, seed=5)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=123)
    frames, physics, states, rewards, actions = [obs], [info["physics_state"]], \
        [info["state"]], [], []
    for _ in range(15):
        actions.append(rng.uniform(-1, 1, 6))
        obs, reward, _, _, info = env.step(actions[-1])
        frames.append(obs), physics.append(info["physics_state"]), states.append(info["state"])
        rewards.append(reward)
    assert states[0].dtype == np.float32 and states[0].shape == (24,)

    simulator = StateSimulator(TASK, seed=99)  # the construction seed does not matter
    state, info = simulator.reset(seed=123)
    assert np.array_equal(state, states[0]) and np.array_equal(info["physics_state"], physics[0])
    for t, action in enumerate(actions, start=1):
        state, reward, _, _, info = simulator.step(action)
        assert np.array_equal(state, states[t]) and reward == rewards[t - 1]
        assert np.array_equal(info["physics_state"], physics[t])

    renderer = FrameRenderer(TASK, video_pool=pool)
    images, video_ids = renderer.render_episode(np.array(physics), 123)
    assert np.array_equal(images, np.stack(frames))
    assert video_ids == sorted(set(video_ids), key=video_ids.index) and video_ids


def test_replaying_an_episode_gives_its_states_and_refuses_one_from_elsewhere():
    from collectors.recorders import resimulate_states
    from collectors.state_recipe import UniformPolicy, simulate_episode

    simulator = StateSimulator(TASK)
    episode = simulate_episode(simulator, UniformPolicy(6), 11, explore=True, noise_seed=2,
                               max_episode_steps=8)
    states = resimulate_states(simulator, episode.steps, seed=11)
    for key in ("state", "physics"):
        assert np.array_equal(states[key], episode.states[key])
    with pytest.raises(RuntimeError, match="entry 1 gives reward .* it was not played in this"):
        resimulate_states(simulator, episode.steps, seed=12)


def test_car_racing_reports_its_car_state():
    from lqv_d4rl.states import CAR_STATE_FIELDS, fields_size

    env = lqv_d4rl.make_env("car_racing", seed=0)
    _, info = env.reset(seed=3)
    _, _, _, _, info2 = env.step(np.array([0.0, 1.0, -1.0]))
    assert info["state"].shape == (fields_size(CAR_STATE_FIELDS),)
    assert info2["state"][8] != 0 or info2["state"][3:5].any()  # the car started moving
    env.close()


# -- byte identity for the state recipe ----------------------------------------------------------


def test_a_rerendered_state_recipe_dataset_equals_the_one_generated_with_those_videos(
        state_datasets, videos, tmp_path):
    procedural, direct = state_datasets
    for level in ("random", "medrep", "medium"):
        rerender(f"{TASK}-{level}", f"{TASK}-{level}", video_dir=str(videos), root=procedural,
                 to_root=tmp_path, progress=False, max_shard_bytes=60_000)
    assert shard_hashes(tmp_path) == shard_hashes(direct)
    assert shard_hashes(tmp_path) != shard_hashes(procedural)
    provenance = read_manifest(tmp_path / f"{TASK}-medrep")["provenance"]
    assert provenance["rerendered_from"]["dataset_id"] == f"{TASK}-medrep"
    assert "would have acted the same" in provenance["rerendered_from"]["note"]
    assert provenance["distractor"]["kind"] != "procedural"


def test_a_rerender_under_a_new_id_keeps_every_array_but_the_images(state_datasets, videos,
                                                                     tmp_path):
    procedural, direct = state_datasets
    outcome = CliRunner().invoke(cli_main, [
        "rerender", f"{TASK}-medrep", "--root", str(procedural), "--to-root", str(tmp_path),
        "--video-dir", str(videos), "--id", "walker-kinetics", "--render-workers", "2"])
    assert outcome.exit_code == 0, outcome.output
    new, source, same = (load_dataset(folder) for folder in (
        tmp_path / "walker-kinetics", procedural / f"{TASK}-medrep", direct / f"{TASK}-medrep"))
    assert verify_dataset(tmp_path / "walker-kinetics", require_complete=True) == []
    for key in ("action", "reward", "discount", "is_first", "is_last", "is_terminal", "state",
                "physics"):
        assert np.array_equal(new.steps[key], source.steps[key])
    assert np.array_equal(new.images, same.images)  # 2 render workers, the same frames
    assert not np.array_equal(new.images, source.images)
    for field in ("policy_ids", "policy_steps", "episode_seeds", "returns"):
        assert np.array_equal(getattr(new, field), getattr(source, field))
    assert new.metadata["level"] == "medrep"


# -- TIA: the recorded behaviour and agent pixels are kept ---------------------------------------


@pytest.fixture(scope="module")
def tia_root(tmp_path_factory):
    from test_generate import run_tiny

    root = tmp_path_factory.mktemp("tia")
    run_tiny(root, levels=["random", "medrep"])
    return root


def test_a_rerendered_tia_dataset_keeps_behaviour_states_and_agent_pixels(tia_root, videos,
                                                                          tmp_path):
    for level in ("random", "medrep"):
        rerender(f"{TASK}-{level}", f"{TASK}-{level}", video_dir=str(videos), root=tia_root,
                 to_root=tmp_path, progress=False, max_shard_bytes=100_000)
        source, new = load_dataset(f"{TASK}-{level}", root=tia_root), \
            load_dataset(f"{TASK}-{level}", root=tmp_path)
        for key in ("action", "reward", "state", "physics"):
            assert np.array_equal(new.steps[key], source.steps[key])
        renderer = FrameRenderer(TASK, video_pool=None)
        masks = np.stack([renderer.background_mask(p) for p in source.physics])
        assert np.array_equal(new.images[~masks], source.images[~masks])  # agent pixels
        assert not np.array_equal(new.images[masks], source.images[masks])  # new backgrounds
        note = read_manifest(tmp_path / f"{TASK}-{level}")["provenance"]["rerendered_from"]
        assert "might have acted differently" in note["note"]


def test_tia_physics_render_back_to_the_recorded_frames(tia_root, tmp_path):
    """Live frames (random level) and re-simulated physics (medrep, from the replay) both render
    back to exactly the recorded images with the generation's own background."""
    for level in ("random", "medrep"):
        rerender(f"{TASK}-{level}", "copy", video_dir=None, root=tia_root, to_root=tmp_path,
                 progress=False, max_shard_bytes=100_000, overwrite=True)
        source = load_dataset(f"{TASK}-{level}", root=tia_root)
        assert np.array_equal(load_dataset("copy", root=tmp_path).images, source.images)


# -- interruptions -------------------------------------------------------------------------------


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop_after", [0, 1, 3])
def test_a_rerender_stopped_anywhere_keeps_its_episodes_and_resumes_to_the_same_bytes(
        state_datasets, videos, tmp_path, monkeypatch, stop_after):
    from lqv_d4rl import physics

    procedural, direct = state_datasets
    options = dict(video_dir=str(videos), root=procedural, to_root=tmp_path, progress=False,
                   max_shard_bytes=60_000)
    original = physics.FrameRenderer.render_episode
    calls = []

    def render_then_stop(self, *args):
        if len(calls) == stop_after:
            raise _Stop()
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(physics.FrameRenderer, "render_episode", render_then_stop)
    with pytest.raises(_Stop):
        rerender(f"{TASK}-medrep", f"{TASK}-medrep", **options)
    partial = read_manifest(tmp_path / f"{TASK}-medrep")
    assert partial["num_episodes"] == stop_after and not partial["complete"]
    monkeypatch.setattr(physics.FrameRenderer, "render_episode", original)
    rerender(f"{TASK}-medrep", f"{TASK}-medrep", **options)
    assert shard_hashes(tmp_path, ["medrep"]) == shard_hashes(direct, ["medrep"])


@pytest.mark.slow
def test_a_killed_rerender_resumes_to_the_same_bytes(state_datasets, videos, tmp_path):
    procedural, direct = state_datasets
    target = tmp_path / f"{TASK}-medrep"
    code = (f"import sys; sys.path[:0] = [{str(REPO_ROOT)!r}]; import time\n"
            "from lqv_d4rl import physics\n"
            "original = physics.FrameRenderer.render_episode\n"
            "def slow(self, *a):\n    time.sleep(0.3)\n    return original(self, *a)\n"
            "physics.FrameRenderer.render_episode = slow\n"
            "from lqv_d4rl.rerender import rerender\n"
            f"rerender({TASK + '-medrep'!r}, {TASK + '-medrep'!r}, video_dir={str(videos)!r}, "
            f"root={str(procedural)!r}, to_root={str(tmp_path)!r}, progress=False, "
            "max_shard_bytes=60_000)")
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if (target / "shard-00000.h5").is_file():
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not read_manifest(target)["complete"]
    rerender(f"{TASK}-medrep", f"{TASK}-medrep", video_dir=str(videos), root=procedural,
             to_root=tmp_path, progress=False, max_shard_bytes=60_000)
    assert shard_hashes(tmp_path, ["medrep"]) == shard_hashes(direct, ["medrep"])


# -- refusals ------------------------------------------------------------------------------------


def test_car_racing_is_refused_with_the_reason(tmp_path):
    from test_generate import generate_car_racing

    generate_car_racing(tmp_path)
    outcome = CliRunner().invoke(cli_main, ["rerender", "car_racing-random", "--root",
                                            str(tmp_path), "--video-dir", "x", "--id", "c2"])
    assert outcome.exit_code == 1 and "Traceback" not in outcome.output
    assert "CarRacing keeps its own scene" in outcome.output
    assert "no state that could be set back" in outcome.output
    assert not (tmp_path / "c2").exists()


def test_datasets_without_physics_and_other_mistakes_are_refused(state_datasets, videos,
                                                                 tmp_path):
    from conftest import write_tiny_dataset

    procedural, _ = state_datasets
    write_tiny_dataset(tmp_path / "walker_walk-medrep")
    with pytest.raises(RerenderError, match="stores no physics states"):
        rerender("walker_walk-medrep", "x", video_dir=str(videos), root=tmp_path)
    with pytest.raises(RerenderError, match="would replace its source"):
        rerender(f"{TASK}-random", f"{TASK}-random", video_dir=str(videos), root=procedural)
    with pytest.raises(RerenderError, match="cannot use --video-dir"):
        rerender(f"{TASK}-random", "x", video_dir=str(tmp_path / "none"), root=procedural,
                 to_root=tmp_path)
    with pytest.raises(RerenderError, match="composite must be one of"):
        rerender(f"{TASK}-random", "x", video_dir=str(videos), root=procedural,
                 to_root=tmp_path, composite="magic")
    rerender(f"{TASK}-random", "x", video_dir=str(videos), root=procedural, to_root=tmp_path,
             progress=False, composite="color", rgb_background=True)
    render = read_manifest(tmp_path / "x")["provenance"]["render"]
    assert render["composite"] == "color" and render["rgb_background"] is True
    before = (tmp_path / "x" / "manifest.json").read_text()
    with pytest.raises(DatasetExistsError, match="already complete"):
        rerender(f"{TASK}-random", "x", video_dir=str(videos), root=procedural, to_root=tmp_path)
    assert (tmp_path / "x" / "manifest.json").read_text() == before
    outcome = CliRunner().invoke(cli_main, ["rerender", f"{TASK}-random", "--root",
                                            str(procedural), "--video-dir", str(videos)])
    assert outcome.exit_code == 2 and "--id" in outcome.output
    assert json.loads((procedural / f"{TASK}-random" / "manifest.json").read_text())["complete"]
