"""``generate``: three valid datasets with the policy structure of the recipe; refusing finished
datasets; an interrupted run (a real process, killed) resumes to the same bytes; the bytes do not
depend on the caller's torch threads; finished datasets, checkpoints and options from other
settings are refused before anything is written.

The runs use a recipe smaller than the smoke preset (10-step episodes, a handful of episodes and
updates) so that the real pipeline (MuJoCo rendering, TIA training, HDF5 shards) stays fast.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from collectors.generate import GenerateError
from collectors.online import CheckpointError
from lqv_d4rl.cli import main as cli_main
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.errors import DatasetExistsError
from lqv_d4rl.fidelity import Verdict
from lqv_d4rl.format import read_manifest, verify_dataset
from lqv_d4rl.stats import return_statistics
from lqv_d4rl.tasks import LEVELS

TASK = "walker_walk"
REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe():
    """The smoke recipe cut down further: 10-step episodes, 2x2 random, ~7 training episodes."""
    from collectors.generate import collection_recipe

    smoke = collection_recipe(TASK, "smoke")
    tia = dataclasses.replace(smoke.tia, batch_size=2, seq_len=6, prefill_steps=40,
                              pretrain_steps=1, train_every=40, train_steps=1, eval_every=40,
                              total_steps=140)
    return dataclasses.replace(smoke, tia=tia, random_policies=2, random_episodes_per_policy=2,
                               medium_episodes=2, max_env_steps=140, max_episode_steps=10,
                               num_video_frames=40)


def run_tiny(root, seed=3, **options):
    """generate() with the tiny recipe (also run in a child process by the resume test)."""
    from collectors.generate import generate

    return generate(TASK, root=root, seed=seed, recipe=tiny_recipe(), progress=False,
                    max_shard_bytes=100_000, **options)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The reference run, made on 1 torch thread (the other runs use 2 or the default)."""
    import torch

    root = tmp_path_factory.mktemp("datasets")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return root, run_tiny(root)
    finally:
        torch.set_num_threads(previous)


def test_generate_writes_three_valid_datasets_with_the_recipes_policy_structure(generated):
    root, result = generated
    assert set(result.folders) == {"random", "medrep", "medium"}
    data = {}
    for level, folder in result.folders.items():
        assert folder == root / f"{TASK}-{level}"
        assert verify_dataset(folder, require_complete=True) == []
        data[level] = load_dataset(f"{TASK}-{level}", root=root)
        assert data[level].images.shape[1:] == (64, 64, 3)
        assert set(data[level].episode_lengths.tolist()) == {11}

    random = data["random"]
    assert len(random) == 4
    assert random.policies() == ["tia-init00-seed3", "tia-init01-seed3"]
    assert (random.policy_steps == -1).all()

    medrep = data["medrep"]
    assert len(medrep) == 7  # 2 prefill episodes + one per snapshot at 40, 60, ..., 120
    assert medrep.policies()[0] == "tia-seed3-prefill"
    assert medrep.policies()[1:] == [f"tia-seed3-step{s:06d}" for s in (40, 60, 80, 100, 120)]
    assert medrep.policy_steps.tolist() == [0, 0, 40, 60, 80, 100, 120]

    for level_data in data.values():  # format version 2: every step has its state and physics
        assert level_data.states.shape == (level_data.num_steps, 24)
        assert level_data.physics.shape == (level_data.num_steps, 18)

    medium = data["medium"]
    assert len(medium) == 2 and len(medium.policies()) == 1
    # smoke has no return band: the run's last evaluated snapshot (after its 140-step budget)
    assert medium.policies() == ["tia-seed3-step000140"]
    assert (medium.policy_steps == 140).all()
    assert len(set(medium.episode_seeds.tolist())) == 2

    provenance = read_manifest(result.folders["medium"])["provenance"]
    assert provenance["seed"] == 3 and provenance["preset"] == "smoke"
    assert provenance["distractor"]["kind"] == "procedural"
    assert "procedural" in provenance["distractor_source"]
    assert provenance["recipe"]["tia"]["batch_size"] == 2
    assert provenance["training_run"]["medium_policy"]["policy_id"] == medium.policies()[0]
    assert result.statistics["random"]["episodes"] == 4
    assert "walker_walk-medrep (paper)" in result.table


def test_rerun_on_finished_datasets_refuses_and_changes_nothing(generated):
    root, result = generated
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    with pytest.raises(DatasetExistsError, match="already complete"):
        run_tiny(root)
    with pytest.raises(DatasetExistsError, match="walker_walk-medium"):
        run_tiny(root, levels=["medium"])
    outcome = CliRunner().invoke(cli_main, ["generate", TASK, "--levels", "medium",
                                            "--root", str(root), "--seed", "3"])
    assert outcome.exit_code != 0
    assert "already complete" in outcome.output and "--overwrite" in outcome.output
    assert "Traceback" not in outcome.output
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def shard_hashes(root):
    """dataset id -> the sha256 of each shard, from the manifests."""
    return {folder.name: [shard["sha256"] for shard in read_manifest(folder)["shards"]]
            for folder in sorted(root.iterdir()) if (folder / "manifest.json").is_file()}


def kill_when_written(code, path, cwd):
    """Run python ``code`` in a child process and SIGKILL it as soon as ``path`` exists."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(REPO_ROOT)!r}, "
                               f"{str(Path(__file__).parent)!r}]\n{code}"],
        cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not path.is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child.poll() is None, child.stderr.read().decode()
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_killed_generate_resumes_to_the_same_bytes(generated, tmp_path):
    reference_root, _ = generated
    root = tmp_path / "interrupted"
    # killed mid-training: random done, medrep and medium not
    kill_when_written(f"from test_generate import run_tiny; run_tiny({str(root)!r})",
                      root / ".work" / f"{TASK}-seed3" / "state.json", tmp_path)
    assert read_manifest(root / f"{TASK}-random")["complete"]
    assert not (root / f"{TASK}-medium").exists()

    run_tiny(root)
    assert shard_hashes(root) == shard_hashes(reference_root)


def test_the_bytes_do_not_depend_on_the_callers_torch_threads(generated, tmp_path):
    """Training arithmetic on 2 threads rounds differently than on 1: generate pins the count."""
    import torch

    reference_root, _ = generated
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_tiny(tmp_path, levels=["medrep"])
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(previous)
    assert shard_hashes(tmp_path)[f"{TASK}-medrep"] == \
        shard_hashes(reference_root)[f"{TASK}-medrep"]


def test_the_bytes_do_not_depend_on_the_environment_workers(tmp_path):
    run_tiny(tmp_path / "one", num_envs=2)  # two episodes at once, stepped in this process
    run_tiny(tmp_path / "two", num_envs=2, workers=2)  # ... and by 2 worker processes
    hashes = shard_hashes(tmp_path / "one")
    assert {name for name in hashes} == {f"{TASK}-{level}" for level in LEVELS}
    assert hashes == shard_hashes(tmp_path / "two")


def test_a_finished_level_from_other_settings_is_not_silently_skipped(generated, tmp_path):
    reference_root, _ = generated
    shutil.copytree(reference_root / f"{TASK}-random", tmp_path / f"{TASK}-random")
    with pytest.raises(GenerateError, match=r"'walker_walk-random' is already complete .*seed: 3 "
                                            r"there, 4 now.*--overwrite"):
        run_tiny(tmp_path, seed=4, levels=["random", "medrep"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TASK}-random"]


def test_the_training_run_is_not_resumed_with_another_background(generated, tmp_path):
    """A checkpoint trained on the procedural video must not feed a medrep made with real videos."""
    import cv2

    reference_root, _ = generated
    shutil.copytree(reference_root / ".work", tmp_path / ".work")  # the run, not its datasets
    videos = tmp_path / "videos"
    videos.mkdir()
    writer = cv2.VideoWriter(str(videos / "drive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                             (80, 60))
    for value in range(0, 250, 5):
        writer.write(np.full((60, 80, 3), value, np.uint8))
    writer.release()
    with pytest.raises(CheckpointError, match="other settings"):
        run_tiny(tmp_path, levels=["medrep"], video_dir=str(videos))
    assert not (tmp_path / f"{TASK}-medrep").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_bad_device_or_seed_is_refused_before_anything_is_written(tmp_path):
    outcome = CliRunner().invoke(cli_main, ["generate", TASK, "--root", str(tmp_path),
                                            "--device", "cuda"])
    assert outcome.exit_code == 2 and "sees no CUDA GPU" in outcome.output  # a usage error
    assert "Traceback" not in outcome.output
    with pytest.raises(GenerateError, match="is no torch device; use cpu, cuda or cuda:N"):
        run_tiny(tmp_path, device="gpu0")
    with pytest.raises(GenerateError, match="seed must be a non-negative integer"):
        run_tiny(tmp_path, seed=-1)
    assert list(tmp_path.iterdir()) == []


def test_car_racing_records_no_distractor_and_refuses_a_video_dir(tmp_path):
    with pytest.raises(GenerateError, match="car_racing keeps its own scene"):
        generate_car_racing(tmp_path, video_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    generate_car_racing(tmp_path)
    provenance = read_manifest(tmp_path / "car_racing-random")["provenance"]
    assert provenance["distractor"] is None and "no distractor" in provenance["distractor_source"]
    assert len(load_dataset("car_racing-random", root=tmp_path)) == 2


def generate_car_racing(root, **options):
    """The random level of car_racing: 1 policy x 2 episodes of 5 steps."""
    from collectors.generate import generate

    recipe = dataclasses.replace(tiny_recipe(), random_policies=1, max_episode_steps=5)
    return generate("car_racing", levels=["random"], root=root, recipe=recipe, progress=False,
                    **options)


def test_paper_recipe_follows_the_paper_and_smoke_is_small():
    from collectors.generate import collection_recipe, episode_counts
    from collectors.tia import TIAConfig

    paper = collection_recipe("cheetah_run", "paper")
    assert episode_counts(paper) == {"random": 200, "medrep": 400, "medium": 200}
    assert paper.random_policies == 10 and paper.medium_band == (300.5, 403.2)
    assert paper.tia == TIAConfig.paper("cheetah_run") and paper.max_episode_steps is None
    assert (paper.tia.prefill_steps, paper.tia.train_every, paper.tia.train_steps) == \
        (5000, 1000, 100)
    assert (paper.tia.batch_size, paper.tia.seq_len, paper.tia.expl_noise) == (50, 50, 0.3)
    assert paper.num_video_frames == 1000 and paper.max_env_steps == paper.tia.total_steps
    smoke = collection_recipe("cheetah_run", "smoke")
    assert smoke.medium_band is None and smoke.random_policies > 1
    assert smoke.max_env_steps // (2 * smoke.max_episode_steps) >= 8  # many medrep snapshots
    with pytest.raises(ValueError, match="preset"):
        collection_recipe("cheetah_run", "huge")


# -- the sac-state behaviour ---------------------------------------------------------------------


def tiny_state_recipe():
    """The sac-state smoke recipe cut down: 10-step episodes, 2x2 random, 6 training episodes."""
    from collectors.state_recipe import state_recipe

    smoke = state_recipe(TASK, "smoke")
    sac = dataclasses.replace(smoke.sac, random_steps=40, learning_starts=20, eval_every=40,
                              total_steps=120)
    return dataclasses.replace(smoke, sac=sac, random_policies=2, random_episodes_per_policy=2,
                               medium_episodes=3, max_episode_steps=10, num_video_frames=40,
                               medrep_until="medium")


def candidate_returns(root, task, seed=1):
    """The random level's candidates' returns that a state-recipe run played (its cache)."""
    cache = root / ".work" / f"{task}-sac-state-seed{seed}" / "random_candidates.json"
    returns = json.loads(cache.read_text())["returns"]
    assert returns and all(returns.values())
    return returns


def run_state(root, seed=1, **options):
    """generate(behaviour sac-state) with the tiny recipe (also run in a child process)."""
    from collectors.generate import generate

    return generate(TASK, root=root, seed=seed, recipe=tiny_state_recipe(), progress=False,
                    max_shard_bytes=60_000, **options)


@pytest.fixture(scope="module")
def state_generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    return root, run_state(root)


def test_medrep_ends_at_the_first_evaluation_whose_mean_reaches_the_band():
    from collectors.state_recipe import first_band_evaluation

    evaluations = [{"env_steps": 0, "mean_return": 450.0},  # the untrained actor does not count
                   {"env_steps": 40, "mean_return": 350.0}, {"env_steps": 80, "mean_return": 420.0},
                   {"env_steps": 120, "mean_return": 380.0}, {"env_steps": 160, "mean_return": 700.0}]
    assert first_band_evaluation(evaluations, (401.5, 598.0)) == 80  # not 160, where the run stopped
    assert first_band_evaluation(evaluations, (800.0, 900.0)) is None
    assert first_band_evaluation(evaluations, None) is None


def test_medrep_ends_where_table_3_says_the_papers_replay_ended():
    from collectors.state_recipe import medrep_end, state_recipe

    assert medrep_end("cheetah_run") == "medium"  # its medrep max 396.5 is inside 300.5..403.2
    for task in ("walker_walk", "hopper_hop", "car_racing"):
        assert medrep_end(task) == "band"  # their medrep max lies just below the band's min
    assert medrep_end("humanoid_walk") == 359.0  # 32 % below its band's min, 526.5
    assert state_recipe("walker_walk").medrep_until == "band"
    assert state_recipe("humanoid_walk").medrep_until == 359.0
    for wrong in ("end", True, [359.0], float("nan"), float("inf")):
        with pytest.raises(ValueError, match="medrep_until must be 'medium', 'band' or a return"):
            dataclasses.replace(state_recipe("walker_walk"), medrep_until=wrong)


def test_a_state_recipe_medrep_keeps_only_the_episodes_before_the_band(tmp_path):
    from collectors.generate import generate

    recipe = dataclasses.replace(tiny_state_recipe(), medium_band=(-1.0, 1e9), medium_mean=1.0,
                                 medium_mean_tolerance=1e9, medrep_until="band")
    result = generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False,
                      levels=["medrep"], max_shard_bytes=60_000)
    provenance = read_manifest(result.folders["medrep"])["provenance"]
    assert provenance["medrep_selection"]["until_env_steps"] == 40  # the first evaluation
    medrep = load_dataset(result.folders["medrep"])
    assert medrep.policies() == ["sac-seed1-prefill"] and len(medrep) == 2


def test_medrep_ends_at_the_medium_snapshot_the_band_or_a_return():
    from collectors.state_recipe import medrep_end_step, state_recipe

    evaluations = [{"env_steps": 0, "mean_return": 450.0}, {"env_steps": 40, "mean_return": 380.0},
                   {"env_steps": 80, "mean_return": 420.0}]
    walker = state_recipe("walker_walk")  # band 401.5..598
    assert medrep_end_step(walker, evaluations, None) == (
        80, "the first evaluation whose mean return reached the band's min")
    at_return = dataclasses.replace(walker, medrep_until=359)
    episodes = [(0.5, 0), (120.0, 20), (359.0, 40), (362.5, 60), (10.0, 80)]  # (return, step)
    assert medrep_end_step(at_return, evaluations, None, episodes) == (
        60, "the first training episode whose return exceeded 359")  # not 40: 359 is no more
    with pytest.raises(ValueError, match="needs the training episodes"):
        medrep_end_step(at_return, evaluations, None)
    assert medrep_end_step(at_return, evaluations, None, episodes[:3])[0] is None
    read = zip(np.array([1.0, 400.0]), np.array([0, 20]))  # as training_episode_returns gives
    assert type(medrep_end_step(at_return, evaluations, None, read)[0]) is int  # for JSON
    at_medium = dataclasses.replace(walker, medrep_until="medium")
    assert medrep_end_step(at_medium, evaluations, 120) == (120, "the medium snapshot")
    assert medrep_end_step(at_medium, evaluations, None) == (None, "the medium snapshot")


def test_a_state_recipe_medrep_can_end_before_the_first_episode_above_a_return(tmp_path):
    from collectors.generate import generate
    from collectors.state_recipe import training_episode_returns

    def medrep(root, until):
        recipe = dataclasses.replace(tiny_state_recipe(), medrep_until=until)
        return generate(TASK, root=root, seed=5, recipe=recipe, progress=False,
                        levels=["medrep"], max_shard_bytes=60_000).folders["medrep"]

    medrep(tmp_path / "all", 1e9)  # no episode above: all six
    returns, steps = training_episode_returns(
        tmp_path / "all" / ".work" / f"{TASK}-sac-state-seed5" / "episodes", 6)
    # The first learner episode that returns more than every one before it (seed 5: the third).
    first = next(k for k in range(1, 6) if steps[k] > 0 and returns[k] > returns[:k].max())
    ceiling = float(returns[:first].max())
    folder = medrep(tmp_path / "cut", ceiling)
    selection = read_manifest(folder)["provenance"]["medrep_selection"]
    assert selection["until_env_steps"] == steps[first] and selection["until"] == ceiling
    assert selection["rule"].startswith("the episodes played before the first training episode "
                                        f"whose return exceeded {ceiling:g}")
    data = load_dataset(folder)
    assert data.returns.tolist() == returns[:first].tolist()  # none above the ceiling
    with pytest.raises(GenerateError, match="medrep would hold no episode: the first training "
                                            "episode whose return exceeded 0.5 came at 0 "):
        medrep(tmp_path / "none", 0.5)
    # With a band its first evaluation (40) reaches, medrep is recorded early; the episode that
    # ends it starts right there.
    early = dataclasses.replace(tiny_state_recipe(), medrep_until=ceiling, medium_band=(-1.0, 1e9),
                                medium_mean=7e8)
    assert steps[first] == 40
    folder = generate(TASK, root=tmp_path / "early", seed=5, recipe=early, progress=False,
                      levels=["medrep"], max_shard_bytes=60_000).folders["medrep"]
    provenance = read_manifest(folder)["provenance"]
    assert provenance["medrep_selection"]["until_env_steps"] == 40
    assert provenance["training_run"]["env_steps"] == 40 and "medium_policy" not in \
        provenance["training_run"]
    assert shard_hashes(tmp_path / "early") == shard_hashes(tmp_path / "cut")


def test_the_state_recipe_writes_three_datasets_with_its_policy_structure(state_generated):
    root, result = state_generated
    data = {level: load_dataset(folder) for level, folder in result.folders.items()}
    for level, level_data in data.items():
        assert verify_dataset(result.folders[level], require_complete=True) == []
        assert set(level_data.episode_lengths.tolist()) == {11}
        assert level_data.states.shape == (level_data.num_steps, 24)
        assert level_data.physics.shape == (level_data.num_steps, 18)
        manifest = read_manifest(result.folders[level])
        assert manifest["spaces"]["state"]["fields"] == [["orientations", 14], ["height", 1],
                                                         ["velocity", 9]]
        assert manifest["spaces"]["physics"]["fields"] == [["qpos", 9], ["qvel", 9], ["act", 0]]
        assert manifest["provenance"]["behaviour"] == "sac-state"
    random_manifest = read_manifest(result.folders["random"])["provenance"]
    chosen = random_manifest["random_selection"]["snapshots"]
    assert len({s["policy_id"] for s in chosen}) == 2  # a distinct snapshot per quantile
    assert data["random"].policies() == [s["policy_id"] for s in chosen]
    assert data["random"].policy_steps.tolist() == [s["env_steps"] for s in chosen for _ in "ab"]
    recorded = data["random"].returns  # the episodes each snapshot was chosen by
    assert [float(np.mean(recorded[2 * p:2 * p + 2])) for p in range(2)] == pytest.approx(
        [s["mean_return"] for s in chosen])
    medrep = data["medrep"]
    assert len(medrep) == 6  # 120 env steps of 20: two prefill episodes, then four snapshots
    assert medrep.policies() == ["sac-seed1-prefill"] + [
        f"sac-seed1-step{s:06d}" for s in (40, 60, 80, 100)]
    assert medrep.policy_steps.tolist() == [0, 0, 40, 60, 80, 100]
    medium = data["medium"]
    run = read_manifest(result.folders["medium"])["provenance"]["training_run"]
    selection = read_manifest(result.folders["medrep"])["provenance"]["medrep_selection"]
    assert selection["until"] == "medium"  # tiny_state_recipe: up to the medium snapshot
    assert selection["until_env_steps"] == run["medium_policy"]["policy_step"]
    assert medrep.policy_steps.max() < selection["until_env_steps"]
    assert medium.policies() == [run["medium_policy"]["policy_id"]] == \
        [run["evaluations"][-1]["policy_id"]]  # smoke: the last evaluated snapshot
    work_dir = root / ".work" / f"{TASK}-sac-state-seed1"
    for evaluation in run["evaluations"]:  # every evaluated snapshot is kept, with its return
        assert (work_dir / evaluation["snapshot"]).is_file()
        assert evaluation["mean_return"] == pytest.approx(np.mean(evaluation["returns"]))
    assert [e["env_steps"] for e in run["evaluations"]] == [0, 40, 80, 120]  # 0: untrained
    for level in ("random", "medrep"):  # distinct episodes
        assert len(set(data[level].returns.tolist())) == len(data[level])


def test_shaped_rewards_add_the_discounted_potential_difference():
    from collectors.state_recipe import shaped_rewards

    rewards = np.array([0.0, 1.0, 0.5, 0.0], np.float32)
    potentials = np.array([-0.9, -0.5, -0.4, -0.9])
    shaped = shaped_rewards(rewards, potentials, weight=2.0, gamma=0.5)
    # entry t: r_t + 0.5 * 2 * phi_t - 2 * phi_(t-1)
    assert shaped.tolist() == pytest.approx([0.0, 1.0 - 0.5 + 1.8, 0.5 - 0.4 + 1.0,
                                             0.0 - 0.9 + 0.8])
    assert shaped_rewards(rewards, potentials, weight=0.0, gamma=0.99).tolist() == \
        pytest.approx(rewards.tolist())


def test_a_shaped_learner_trains_on_shaped_rewards_and_its_episodes_keep_the_task_rewards(
        tmp_path):
    from collectors.sac import SACConfig
    from collectors.state_recipe import SACRun, hopper_torso_height, shaped_rewards

    config = dataclasses.replace(SACConfig.smoke(), random_steps=40, learning_starts=20,
                                 eval_every=1000, total_steps=40)
    run = SACRun(config, "hopper_hop", work_dir=tmp_path, max_episode_steps=10, progress=False,
                 shaping=3.0)
    run.run()
    episode = run.episodes[0][0]
    steps = episode.learner_steps
    expected = shaped_rewards(steps["reward"], hopper_torso_height(steps["state"]), 3.0,
                              config.gamma)
    assert not np.allclose(expected, steps["reward"])  # the hopper moved: shaping did something
    stored = run.replay._data["reward"][:episode.num_agent_steps].numpy()
    assert stored == pytest.approx(expected[1:].astype(np.float32))
    assert episode.episode_return == pytest.approx(float(np.sum(steps["reward"])))  # untouched
    saved = json.loads((tmp_path / "state.json").read_text())["run"]["settings"]
    assert saved["training_shaping"] == 3.0  # a resume with another weight is refused
    with pytest.raises(ValueError, match=r"walker_walk has none \(the tasks that have one: "
                                         r"hopper_hop, humanoid_walk\)"):
        SACRun(config, "walker_walk", work_dir=tmp_path / "w", shaping=1.0)


def test_humanoid_walks_shaping_potential_is_the_heads_height():
    from collectors.state_recipe import shaping_potential
    from lqv_d4rl.physics import StateSimulator

    simulator = StateSimulator("humanoid_walk")
    try:
        states = [simulator.reset(seed=3)[0]]  # dropped in upright ...
        for _ in range(40):
            states.append(simulator.step(np.zeros(21))[0])  # ... and fallen
        height = simulator.physics.head_height()
    finally:
        simulator.close()
    potentials = shaping_potential("humanoid_walk")(np.stack(states))
    assert potentials.shape == (41,) and potentials[-1] == pytest.approx(height, abs=1e-6)
    assert potentials[0] > 1.4 and potentials[-1] < 0.5


def test_training_shaping_is_in_the_provenance_only_when_used(tmp_path):
    from collectors.generate import generate
    from collectors.state_recipe import state_recipe

    for task in ("walker_walk", "cheetah_run", "car_racing"):
        recipe = state_recipe(task)  # earlier datasets' provenance unchanged
        assert recipe.training_shaping == 0.0 and "training_shaping" not in recipe.describe()
    for task in ("hopper_hop", "humanoid_walk"):
        assert state_recipe(task).describe()["training_shaping"] == 5.0  # the cpu preset's
    assert "training_shaping" not in state_recipe("humanoid_walk", "smoke").describe()
    with pytest.raises(GenerateError, match="training_shaping needs a shaping potential"):
        generate(TASK, root=tmp_path, recipe=dataclasses.replace(tiny_state_recipe(),
                                                                 training_shaping=1.0),
                 progress=False)


def test_the_sac_run_trains_with_the_recipes_thread_count(tmp_path, monkeypatch):
    """training_threads sets torch's threads for the training run only, is recorded in its
    settings and the provenance, and a resume with another count is refused, losing nothing."""
    import torch
    from collectors.generate import generate
    from collectors.state_recipe import SACRun, state_recipe

    assert state_recipe("humanoid_walk").describe()["training_threads"] == 2  # the cpu preset's
    for task in ("walker_walk", "cheetah_run", "hopper_hop", "car_racing"):
        recipe = state_recipe(task)  # earlier datasets' provenance unchanged
        assert recipe.training_threads == 1 and "training_threads" not in recipe.describe()
    with pytest.raises(ValueError, match="training_threads must be a whole number"):
        dataclasses.replace(tiny_state_recipe(), training_threads=0)

    seen = []  # torch's thread count at each training step
    train = SACRun._train

    def train_and_note_threads(run):
        seen.append(torch.get_num_threads())
        return train(run)

    monkeypatch.setattr(SACRun, "_train", train_and_note_threads)
    before = torch.get_num_threads()
    recipe = dataclasses.replace(tiny_state_recipe(), training_threads=2)
    result = generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False,
                      levels=["medrep"], max_shard_bytes=60_000)
    assert set(seen) == {2} and torch.get_num_threads() == before
    work_dir = tmp_path / ".work" / f"{TASK}-sac-state-seed1"
    assert json.loads((work_dir / "state.json").read_text())["run"]["settings"] == {
        "torch_threads": 2}
    assert read_manifest(result.folders["medrep"])["provenance"]["recipe"]["training_threads"] == 2
    finished = shard_hashes(tmp_path)
    with pytest.raises(CheckpointError, match="belongs to a run with other settings"):
        generate(TASK, root=tmp_path, seed=1, recipe=tiny_state_recipe(), progress=False,
                 levels=["medium"], max_shard_bytes=60_000)
    assert shard_hashes(tmp_path) == finished


def budget_run(work_dir, total_steps, **options):
    """A SACRun of 20-environment-step episodes, evaluated every 40 steps, with this budget
    (``options``: more SACRun arguments)."""
    from collectors.sac import SACConfig
    from collectors.state_recipe import SACRun

    config = dataclasses.replace(SACConfig.smoke(), random_steps=40, learning_starts=20,
                                 eval_every=40, total_steps=total_steps)
    return SACRun(config, TASK, work_dir=work_dir, seed=2, max_episode_steps=10, progress=False,
                  **options)


def test_a_training_run_given_a_larger_budget_goes_on_as_if_it_had_it_from_the_start(tmp_path):
    import torch

    short = budget_run(tmp_path / "extended", 80)
    assert short.run().stop_reason == "max_env_steps" and short.state.env_steps == 80
    extended = budget_run(tmp_path / "extended", 160)
    state = extended.run()
    fresh = budget_run(tmp_path / "fresh", 160)
    assert state.env_steps == 160 and state.stop_reason == "max_env_steps"
    assert state.evaluations == fresh.run().evaluations
    assert [e["env_steps"] for e in state.evaluations] == [0, 40, 80, 120, 160]
    assert extended.agent.updates == fresh.agent.updates > 0
    for mine, theirs in zip(extended.agent.actor.parameters(), fresh.agent.actor.parameters()):
        assert torch.equal(mine, theirs)
    for (mine, _, _), (theirs, _, _) in zip(extended.episodes, fresh.episodes, strict=True):
        assert np.array_equal(mine.learner_steps["action"], theirs.learner_steps["action"])


def test_a_paused_training_run_goes_on_as_if_it_had_not_paused(tmp_path):
    import torch

    paused = budget_run(tmp_path / "paused", 160)
    state = paused.run(until=lambda state: state.env_steps >= 60)
    assert state.env_steps == 60 and not state.finished
    saved = json.loads((tmp_path / "paused" / "state.json").read_text())["state"]
    assert saved["env_steps"] == 60  # kept, in case what the pause is for is interrupted
    assert paused.run().env_steps == 160
    restored = budget_run(tmp_path / "restored", 160)  # from the checkpoint the pause saved
    restored.run(until=lambda state: state.env_steps >= 60)
    restored = budget_run(tmp_path / "restored", 160)
    restored.run()
    whole = budget_run(tmp_path / "whole", 160)
    assert paused.state.evaluations == restored.state.evaluations == whole.run().evaluations
    for run in (paused, restored):
        for mine, theirs in zip(run.agent.actor.parameters(), whole.agent.actor.parameters()):
            assert torch.equal(mine, theirs)


def test_early_levels_are_known_at_the_band_or_at_medreps_end_whichever_is_later():
    from collectors.state_recipe import state_recipe, early_levels_known_at

    evaluations = [{"env_steps": 0, "mean_return": 450.0}, {"env_steps": 40, "mean_return": 380.0},
                   {"env_steps": 80, "mean_return": 420.0}]
    walker = state_recipe("walker_walk")  # band 401.5..598, medrep until the band
    assert early_levels_known_at(walker, evaluations) == 80
    assert early_levels_known_at(walker, evaluations[:2]) is None
    at_return = dataclasses.replace(walker, medrep_until=359)
    assert early_levels_known_at(at_return, evaluations, [(360.0, 20)]) == 80
    assert early_levels_known_at(at_return, evaluations, [(360.0, 100)]) == 100
    assert early_levels_known_at(at_return, evaluations, [(359.0, 20)]) is None  # not yet
    assert early_levels_known_at(dataclasses.replace(walker, medrep_until="medium"),
                                   evaluations) is None  # it waits for the medium snapshot
    assert early_levels_known_at(state_recipe(TASK, "smoke"), evaluations) is None  # no band


def early_recipe(**changes):
    """The tiny recipe with a band its first evaluation reaches and a medium mean (7e8) no
    snapshot comes near: random and medrep are known at 40 steps, no medium is ever found."""
    return dataclasses.replace(tiny_state_recipe(), medium_band=(-1.0, 1e9), medium_mean=7e8,
                               medrep_until="band", random_policies=1, **changes)


def run_early(root, levels=LEVELS, **options):
    """generate() with :func:`early_recipe`; it always ends on the spent budget."""
    from collectors.generate import generate

    with pytest.raises(GenerateError, match="spent its budget") as spent:
        generate(TASK, root=root, seed=1, recipe=early_recipe(), progress=False,
                 max_shard_bytes=60_000, levels=levels, **options)
    return str(spent.value)


def early_levels(root):
    """The random and medrep folders under ``root``."""
    return [root / f"{TASK}-{level}" for level in ("random", "medrep")]


def test_random_and_medrep_are_recorded_at_the_band_and_kept_when_no_medium_is_found(tmp_path):
    from collectors.generate import generate

    short, long, later = tmp_path / "short", tmp_path / "long", tmp_path / "later"
    message = run_early(short)
    assert "budget of 120 environment steps" in message
    assert message.endswith(f"{TASK}-medium was not recorded. Give the run more steps: the same "
                            "command with --max-env-steps 240 (lqv-d4rl generate; "
                            "SACConfig.total_steps in Python) continues it from where it stopped. "
                            "Or add --record-closest-medium (record_closest_medium=True) to "
                            "record the closest candidate as it is, its fidelity verdicts showing "
                            "how far it is from Table 3")
    assert sorted(shard_hashes(short)) == [f"{TASK}-medrep", f"{TASK}-random"]
    for folder in early_levels(short):
        assert verify_dataset(folder, require_complete=True) == []
        run = read_manifest(folder)["provenance"]["training_run"]
        assert run["env_steps"] == 40 and [e["env_steps"] for e in run["evaluations"]] == [0, 40]
        assert run["episodes"] == 2 and "medium_policy" not in run  # as it was at the band
    assert load_dataset(short / f"{TASK}-medrep").policies() == ["sac-seed1-prefill"]
    run_early(long, max_env_steps=240)  # the medium search trains longer
    # A run already past the band (it trained to 120 steps for medium alone) records them later.
    assert run_early(later, levels=["medium"]).count("was not recorded") == 1
    generate(TASK, root=later, seed=1, recipe=early_recipe(), progress=False,
             max_shard_bytes=60_000, levels=["random", "medrep"])  # no medium asked: no error
    assert shard_hashes(long) == shard_hashes(later) == shard_hashes(short)
    for level in ("random", "medrep"):
        runs = [read_manifest(root / f"{TASK}-{level}")["provenance"]["training_run"]
                for root in (short, long, later)]
        assert runs[0] == runs[1] == runs[2]
    kept = {p: p.stat().st_mtime_ns for folder in early_levels(short) for p in folder.iterdir()}
    run_early(short, max_env_steps=160)  # goes on next to them
    assert {p: p.stat().st_mtime_ns for folder in early_levels(short)
            for p in folder.iterdir()} == kept
    state = json.loads((short / ".work" / f"{TASK}-sac-state-seed1" / "state.json").read_text())
    assert state["state"]["env_steps"] == 160


def test_a_half_written_medrep_is_finished_by_a_run_given_a_larger_budget(tmp_path, monkeypatch):
    from collectors.state_recipe import StateJob

    reference, root = tmp_path / "reference", tmp_path / "root"
    run_early(reference)
    write_rendered = StateJob.write_rendered

    def first_then_stop(self, writer, entries, total, description):
        def first():
            yield next(iter(entries))
            raise KeyboardInterrupt

        return write_rendered(self, writer, first() if "medrep" in description else entries,
                              total, description)

    monkeypatch.setattr(StateJob, "write_rendered", first_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_early(root)
    partial = read_manifest(root / f"{TASK}-medrep")
    assert partial["num_episodes"] == 1 and not partial.get("complete")
    monkeypatch.undo()
    run_early(root, max_env_steps=240)
    assert shard_hashes(root) == shard_hashes(reference)
    recipe = read_manifest(root / f"{TASK}-medrep")["provenance"]["recipe"]
    assert recipe["sac"]["total_steps"] == 120  # the budget it was started with


@pytest.mark.parametrize("medrep_until", ["band", "medium"])
def test_a_run_that_never_passes_what_random_and_medrep_take_records_nothing(tmp_path,
                                                                             medrep_until):
    from collectors.generate import generate

    # "band": the band is out of reach; "medium": medrep waits for a medium that is never found.
    band = (5e8, 1e9) if medrep_until == "band" else (-1.0, 1e9)
    recipe = dataclasses.replace(tiny_state_recipe(), medium_band=band, medium_mean=7e8,
                                 medrep_until=medrep_until, random_policies=1)
    with pytest.raises(GenerateError, match=f"{TASK}-random, {TASK}-medrep, {TASK}-medium were "
                                            "not recorded"):
        generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False)
    assert not list(tmp_path.glob("*/manifest.json"))


def test_a_training_run_that_trained_past_a_smaller_budget_is_refused(tmp_path):
    budget_run(tmp_path, 100).run()
    saved = (tmp_path / "state.json").read_bytes()
    with pytest.raises(CheckpointError, match="has trained 100 environment steps, past the "
                                              "budget of 60 asked for"):
        budget_run(tmp_path, 60).run()
    assert (tmp_path / "state.json").read_bytes() == saved  # nothing lost
    state = budget_run(tmp_path, 90).run()  # its last episode (80..100) spent 90 too
    assert state.env_steps == 100 and state.finished


def test_a_run_that_spends_its_budget_below_the_band_records_nothing_and_can_go_on(tmp_path):
    from collectors.generate import generate

    recipe = dataclasses.replace(tiny_state_recipe(), medium_band=(5e8, 1e9), medium_mean=7e8)
    with pytest.raises(GenerateError, match=r"spent its budget of 120 environment steps and no "
                                            r"evaluated snapshot matched .* the same command "
                                            r"with --max-env-steps 240"):
        generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False)
    assert not list(tmp_path.glob("*/manifest.json"))
    state_file = tmp_path / ".work" / f"{TASK}-sac-state-seed1" / "state.json"
    before = json.loads(state_file.read_text())["state"]["evaluations"]
    with pytest.raises(GenerateError, match="budget of 160 environment steps"):
        generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False, max_env_steps=160)
    after = json.loads(state_file.read_text())["state"]
    assert after["env_steps"] == 160 and after["evaluations"][:len(before)] == before


def generate_closest(root, recipe, levels=LEVELS):
    """generate() with ``--record-closest-medium``; the result and the warning it gave."""
    from collectors.generate import generate

    with pytest.warns(UserWarning, match=r"no evaluated snapshot of the .* training run matched "
                                         r"Table 3's medium row in its 120 environment steps; "
                                         r"recording the closest candidate, sac-seed1-step") \
            as warned:
        result = generate(TASK, root=root, seed=1, recipe=recipe, progress=False,
                          record_closest_medium=True, levels=levels)
    return result, str(warned[0].message)


def test_a_spent_budget_records_the_closest_medium_when_asked_and_its_verdicts_show_the_miss(
        tmp_path):
    # humanoid_walk's way: random and medrep recorded at the band, no medium match in the budget
    result, notice = generate_closest(tmp_path, early_recipe())
    closest = json.loads((tmp_path / ".work" / f"{TASK}-sac-state-seed1" /
                          "medium-policy.json").read_text())
    medium = tmp_path / f"{TASK}-medium"
    assert notice.endswith(f"To search on, delete {medium} (even if only partly written) and run "
                           "the same command with a larger --max-env-steps")
    assert sorted(shard_hashes(tmp_path)) == [f"{TASK}-{level}" for level in
                                              ("medium", "medrep", "random")]
    assert verify_dataset(medium, require_complete=True) == []
    policy = read_manifest(medium)["provenance"]["training_run"]["medium_policy"]
    assert policy == {**closest, "recorded_without_match": True} and not policy["in_band"]
    assert load_dataset(medium).policies() == [closest["policy_id"]]
    assert "medium_policy" not in read_manifest(tmp_path / f"{TASK}-medrep")["provenance"][
        "training_run"]  # recorded at the band, before the search ended
    info = CliRunner().invoke(cli_main, ["info", str(medium)])
    assert f"note:         {closest['policy_id']} is the medium search's closest candidate" in \
        info.output and "NOT within the tolerances" in info.output
    verdicts = {verdict.statistic: verdict for verdict in result.verdicts["medium"]}
    assert not verdicts["in_band"].passed  # the miss is reported, not hidden
    again = tmp_path / "again"
    generate_closest(again, early_recipe())
    assert shard_hashes(again) == shard_hashes(tmp_path)


def test_a_partly_written_closest_medium_is_kept_when_the_run_has_trained_on(tmp_path):
    from collectors.generate import generate

    generate_closest(tmp_path, early_recipe())
    medium = tmp_path / f"{TASK}-medium"
    manifest = json.loads((medium / "manifest.json").read_text())
    (medium / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    kept = sorted(path.read_bytes() for path in medium.iterdir())
    with pytest.warns(UserWarning), pytest.raises(
            GenerateError, match=rf"delete {medium} to record it again; --overwrite would also "
                                 r"restart the training run\)$"):
        generate(TASK, root=tmp_path, seed=1, recipe=early_recipe(), progress=False,
                 record_closest_medium=True, max_env_steps=240)  # the run trains on: 240 steps
    assert sorted(path.read_bytes() for path in medium.iterdir()) == kept


def test_the_closest_medium_names_the_medrep_that_ends_at_it(tmp_path):
    # cheetah_run's way: medrep ends at the medium snapshot, here the closest candidate
    recipe = dataclasses.replace(tiny_state_recipe(), medium_band=(-1.0, 1e9), medium_mean=7e8)
    _, notice = generate_closest(tmp_path, recipe, levels=["medrep", "medium"])
    medium = read_manifest(tmp_path / f"{TASK}-medium")["provenance"]["training_run"]
    medrep = read_manifest(tmp_path / f"{TASK}-medrep")["provenance"]["training_run"]
    assert medrep["medium_policy"] == medium["medium_policy"]
    assert medrep["medium_policy"]["recorded_without_match"]
    assert f"delete {tmp_path / (TASK + '-medrep')} and {tmp_path / (TASK + '-medium')} " in notice
    info = CliRunner().invoke(cli_main, ["info", str(tmp_path / f"{TASK}-medrep")])
    assert "closest candidate" not in info.output  # the note is the medium level's


def test_the_closest_medium_is_refused_where_it_cannot_apply(tmp_path):
    from collectors.generate import generate

    # The band out of reach: random and medrep are undefined, so nothing is recorded ...
    recipe = dataclasses.replace(tiny_state_recipe(), medium_band=(5e8, 1e9), medium_mean=7e8,
                                 medrep_until="band")
    with pytest.raises(GenerateError, match=rf"Or record the closest candidate as {TASK}-medium "
                                            r"alone: the same command with --levels medium "
                                            rf"--record-closest-medium \({TASK}-random and "
                                            rf"{TASK}-medrep need a run that passed the band\)$"):
        generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False,
                 record_closest_medium=True)
    assert not list(tmp_path.glob("*/manifest.json"))
    # ... but the medium level alone can be, from the same run
    generate_closest(tmp_path, recipe, levels=["medium"])
    assert sorted(shard_hashes(tmp_path)) == [f"{TASK}-medium"]
    with pytest.raises(GenerateError, match="record_closest_medium records the medium level; add "
                                            "medium to the levels \(--levels random,medium\)"):
        generate(TASK, root=tmp_path / "no", recipe=recipe, levels=["random"],
                 record_closest_medium=True)
    with pytest.raises(GenerateError, match="record_closest_medium applies to the sac-state "
                                            "behaviour"):
        generate(TASK, root=tmp_path / "no", recipe=tiny_recipe(), record_closest_medium=True)
    outcome = CliRunner().invoke(cli_main, ["generate", TASK, "--root", str(tmp_path / "no"),
                                            "--behaviour", "tia", "--record-closest-medium"])
    assert outcome.exit_code == 1 and "record_closest_medium applies to the sac-state" in \
        outcome.output and "Traceback" not in outcome.output
    assert not (tmp_path / "no").exists()


def test_a_training_budget_is_checked_before_anything_is_written(tmp_path):
    from collectors.generate import generate

    with pytest.raises(GenerateError, match="above the run's learning_starts \\(20\\); got 10"):
        generate(TASK, root=tmp_path, recipe=tiny_state_recipe(), max_env_steps=10)
    with pytest.raises(GenerateError, match="max_env_steps applies to the sac-state behaviour"):
        generate(TASK, root=tmp_path, recipe=tiny_recipe(), max_env_steps=1000)
    outcome = CliRunner().invoke(cli_main, ["generate", TASK, "--root", str(tmp_path),
                                            "--preset", "smoke", "--max-env-steps", "50"])
    assert outcome.exit_code == 1 and "above the run's learning_starts (100); got 50" in \
        outcome.output and "Traceback" not in outcome.output
    assert list(tmp_path.iterdir()) == []


def test_the_datasets_benchmark_sets_recipe_fields_for_an_experiment():
    from conftest import load_benchmark_script

    recipe_changes = load_benchmark_script("datasets").recipe_changes
    assert recipe_changes(["training_shaping=5", "medium_action_scales=[0.9]"]) == {
        "training_shaping": 5, "medium_action_scales": [0.9]}
    with pytest.raises(SystemExit, match="expected FIELD=JSON with FIELD one of the StateRecipe"):
        recipe_changes(["shaping=5"])
    with pytest.raises(SystemExit, match="or sac.FIELD of its SACConfig"):
        recipe_changes(["sac.alpha=1"])
    with pytest.raises(SystemExit, match="'five' is not JSON"):
        recipe_changes(["training_shaping=five"])


def test_the_datasets_benchmark_sets_sac_fields_on_the_cpu_preset():
    from collectors.state_recipe import state_recipe
    from conftest import load_benchmark_script

    datasets = load_benchmark_script("datasets")
    preset = state_recipe("car_racing")
    changes = datasets.recipe_changes(["sac.init_alpha=1.0", "sac.actor_lr=1e-4",
                                       "medrep_episodes=300"])
    recipe = datasets.apply_changes(preset, changes)
    assert (recipe.sac.init_alpha, recipe.sac.actor_lr, recipe.medrep_episodes) == (1.0, 1e-4, 300)
    assert recipe.sac.updates_per_step == preset.sac.updates_per_step == 0.05  # the rest kept
    assert recipe.sac.critic_lr == preset.sac.critic_lr and recipe.preset == preset.preset
    assert preset.sac.init_alpha == 0.1  # the preset itself is untouched


def test_the_datasets_benchmark_checks_only_the_levels_asked_for(state_generated, tmp_path,
                                                                 capsys):
    from conftest import load_benchmark_script

    root, _ = state_generated
    datasets = load_benchmark_script("datasets")
    argv = [TASK, "--root", str(root), "--seed", "1", "--out", str(tmp_path)]
    assert datasets.main(argv + ["--levels", "medrep,random"]) == 1  # tiny: far from Table 3
    record = json.loads((tmp_path / f"{TASK}.json").read_text())
    assert sorted(record["levels"]) == ["medrep", "random"]
    assert record["command"].endswith("--seed 1 --levels random,medrep")
    assert f"FAILED: {TASK}-random, {TASK}-medrep miss" in capsys.readouterr().out
    outcome = datasets.outcome
    passed, missed = [Verdict("mean", 1.0, 1.0, 0.0, 2.0)], [Verdict("mean", 3.0, 1.0, 0.0, 2.0)]
    assert outcome("t", ["random", "medium"], {"random": passed, "medium": missed}) == (
        "FAILED: t-medium misses Table 3's tolerances (see the table above)", 1)
    assert outcome("t", ["random", "medium"], {"random": passed, "medium": passed}) == (
        "PASSED: t-random, t-medium lie within Table 3's tolerances", 0)
    with pytest.raises(SystemExit):
        datasets.main(argv + ["--levels", "expert"])
    assert "'expert': the levels are random, medrep, medium" in capsys.readouterr().err


def test_medium_candidates_judges_returns_as_the_medium_search_does():
    from collectors.state_recipe import MediumSearch
    from conftest import load_benchmark_script

    judge = load_benchmark_script("medium_candidates").judge
    search = MediumSearch((401.5, 598.0), 513.1, ".", min_share=0.95, mean_tolerance=0.07)
    spread = judge([450.0, 500.0, 550.0, 600.0], search)  # 600 lies above the band
    assert spread == {"mean": 525.0, "std": pytest.approx(55.9017, abs=1e-4), "min": 450.0,
                      "max": 600.0, "share_in_band": 0.75, "meets_search": False}
    assert judge([500.0] * 4, search)["meets_search"]  # 2.6 % below the paper's mean
    assert not judge([470.0] * 4, search)["meets_search"]  # 8.4 % below


def test_medium_candidates_plays_the_runs_snapshots_under_each_scale(state_generated, tmp_path,
                                                                    capsys):
    from conftest import load_benchmark_script

    root, _ = state_generated
    candidates = load_benchmark_script("medium_candidates")
    argv = [TASK, "--root", str(root), "--seed", "1", "--steps", "40,120", "--scales", "1,0.5",
            "--episodes", "2", "--out", str(tmp_path)]
    assert candidates.main(argv) == 0
    record = json.loads((tmp_path / f"medium-candidates-{TASK}.json").read_text())
    rows = record["rows"]
    assert [(r["env_steps"], r["scale"]) for r in rows] == [(40, 1.0), (40, 0.5), (120, 1.0),
                                                           (120, 0.5)]
    assert all(len(r["returns"]) == 2 and r["mean"] == np.mean(r["returns"]) for r in rows)
    assert rows[0]["returns"] != rows[1]["returns"]  # weaker actuators, another episode
    assert "Table 3 medium" in capsys.readouterr().out
    assert candidates.main(argv) == 0  # the same episodes again
    assert json.loads((tmp_path / f"medium-candidates-{TASK}.json").read_text())["rows"] == rows
    with pytest.raises(SystemExit, match="no evaluation at \\[50\\] environment steps"):
        candidates.main([TASK, "--root", str(root), "--seed", "1", "--steps", "50"])


def test_training_progress_reports_the_run_against_table_3(state_generated, tmp_path, capsys):
    """``benchmarks/training_progress.py`` on a finished tiny run: its curve, updates and pace."""
    from conftest import load_benchmark_script

    root, _ = state_generated
    progress = load_benchmark_script("training_progress")
    assert progress.main([TASK, "--root", str(root), "--seed", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / f"training-{TASK}.json").read_text())
    state = json.loads((root / ".work" / f"{TASK}-sac-state-seed1" / "state.json").read_text())
    assert [e["env_steps"] for e in record["evaluations"]] == [0, 40, 80, 120]
    assert record["best_mean_return"] == max(e["mean_return"] for e in state["state"]["evaluations"])
    config = state["run"]["config"]  # 120 env steps, 20 before learning, action repeat 2
    assert record["updates"] == int((120 - 20) / 2 * config["updates_per_step"])
    assert record["evaluations"][-1]["updates"] == record["updates"]
    assert record["medium_band"] == [401.5, 598.0] and record["finished"]
    assert record["medium_candidate"]["policy_id"] == "sac-seed1-step000120"
    assert record["departures_from_cpu_preset"]["units"] == 32  # the tiny run's smoke networks
    assert (tmp_path / f"training-{TASK}.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "medium search: best so far sac-seed1-step000120" in printed
    assert printed.split("medium search: ")[1].splitlines()[0].endswith(", no match")  # finished
    # medrep as the cpu preset would record it: the band is never reached, so all 6 episodes
    medrep, preview = load_dataset(root / f"{TASK}-medrep"), record["medrep_preview"]
    assert not preview["reached"] and preview["kept"] == len(medrep) == 6
    assert preview["statistics"] == pytest.approx(return_statistics(medrep.returns))
    assert "medrep if recorded now: 6 of the 6 training episodes so far (not yet at the first " \
        "evaluation whose mean return reached the band's min)" in printed
    assert "walker_walk-medrep  episodes" in printed  # the verdict table
    assert "the run has finished (max_env_steps)" in printed and "h more" not in printed
    with pytest.raises(SystemExit, match="no SAC training run of this task and seed"):
        progress.main([TASK, "--root", str(root), "--seed", "7", "--out", str(tmp_path)])


def test_training_progress_previews_medrep_up_to_where_the_rule_ends_it(state_generated):
    from conftest import load_benchmark_script

    root, _ = state_generated
    folder = root / ".work" / f"{TASK}-sac-state-seed1"
    state = json.loads((folder / "state.json").read_text())["state"]
    evaluations = [dict(e, mean_return=450.0 if e["env_steps"] == 80 else 0.0)
                   for e in state["evaluations"]]  # the band (401.5..598) reached at 80
    preview = load_benchmark_script("training_progress").medrep_preview(
        TASK, folder, state, evaluations, None)
    medrep = load_dataset(root / f"{TASK}-medrep")  # policy steps 0, 0, 40, 60, 80, 100
    assert preview["reached"] and preview["until_env_steps"] == 80
    assert preview["before"] == preview["kept"] == 4
    assert preview["statistics"] == pytest.approx(return_statistics(medrep.returns[:4]))
    assert [v["statistic"] for v in preview["verdicts"]] == ["episodes", "mean", "median"]


def test_training_progress_names_an_experiments_departures_from_the_cpu_preset():
    from collectors.state_recipe import state_recipe
    from conftest import load_benchmark_script

    departures = load_benchmark_script("training_progress").preset_departures
    config = dataclasses.asdict(state_recipe("car_racing").sac)
    assert departures("car_racing", config, {"torch_threads": 1}) == {}
    config.update(init_alpha=1.0, actor_lr=1e-4)
    assert departures("car_racing", config, {}) == {"init_alpha": 1.0, "actor_lr": 1e-4}
    hopper = dataclasses.asdict(state_recipe("hopper_hop").sac)
    assert departures("hopper_hop", hopper, {"training_shaping": 5.0}) == {}  # the preset's
    assert departures("hopper_hop", hopper, {}) == {"training_shaping": 0.0}  # unshaped
    humanoid = dataclasses.asdict(state_recipe("humanoid_walk").sac)
    assert departures("humanoid_walk", humanoid, {"torch_threads": 1, "training_shaping": 5.0}
                      ) == {"training_threads": 1}
    assert departures("humanoid_walk", humanoid, {"torch_threads": 2}) == {"training_shaping": 0.0}


def test_training_progress_measures_the_pace_after_the_latest_pause():
    from conftest import load_benchmark_script

    recent_pace = load_benchmark_script("training_progress").recent_pace
    written = [0.0, 10.0, 20.0, 1000.0, 1010.0, 1030.0, 1040.0]  # a pause after 20 s
    evaluations = [{"env_steps": 5000 * i, "written": t} for i, t in enumerate(written)]
    pace, timed = recent_pace(evaluations)
    assert timed == 4 and pace == pytest.approx(3 * 5000 / 40.0)
    assert recent_pace(evaluations[:1]) == (None, 1)
    assert recent_pace([{"env_steps": 0, "written": None}] * 3) == (None, 0)


def test_the_state_recipe_bytes_do_not_depend_on_the_render_workers(state_generated, tmp_path):
    reference_root, _ = state_generated  # made with one render process
    run_state(tmp_path, workers=2)  # 2 render processes, and 2 playing the random candidates
    hashes = shard_hashes(tmp_path)
    assert {name.split("/")[0] for name in hashes} == {f"{TASK}-{level}" for level in LEVELS}
    assert hashes == shard_hashes(reference_root)
    assert candidate_returns(tmp_path, TASK) == candidate_returns(reference_root, TASK)


@pytest.mark.slow
def test_a_killed_state_recipe_run_resumes_to_the_same_bytes(state_generated, tmp_path):
    reference_root, _ = state_generated
    root = tmp_path / "interrupted"
    code = ("import collectors.sac as sac, time\n"
            "update = sac.SACAgent.update\n"
            "def slow(self, batch):\n    time.sleep(0.05)\n    return update(self, batch)\n"
            "sac.SACAgent.update = slow\n"
            f"from test_generate import run_state; run_state({str(root)!r})")
    # killed mid-training: no level written yet (all three come from the training run)
    kill_when_written(code, root / ".work" / f"{TASK}-sac-state-seed1" / "state.json", tmp_path)
    assert not any((root / f"{TASK}-{level}").exists() for level in ("random", "medrep", "medium"))
    run_state(root)
    assert shard_hashes(root) == shard_hashes(reference_root)


class _Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, episodes):
    """Make the state recipe's episode player raise after ``episodes`` episodes."""
    import collectors.state_recipe as state_recipe

    original = state_recipe.simulate_episode
    played = []

    def play_then_stop(*args, **kwargs):
        if len(played) == episodes:
            raise _Interrupted()
        played.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(state_recipe, "simulate_episode", play_then_stop)
    return original


def _finished_episodes(root):
    return {folder.name: read_manifest(folder)["num_episodes"]
            for folder in sorted(Path(root).glob(f"{TASK}-*"))}


def _check_interruption(state_generated, tmp_path, monkeypatch, episodes):
    import collectors.state_recipe as state_recipe

    reference_root, _ = state_generated
    original = _interrupt_after(monkeypatch, episodes)
    with pytest.raises(_Interrupted):
        run_state(tmp_path)
    finished = _finished_episodes(tmp_path)
    monkeypatch.setattr(state_recipe, "simulate_episode", original)
    run_state(tmp_path)
    reference = {name: read_manifest(reference_root / name)["num_episodes"] for name in finished}
    for name, count in finished.items():  # nothing finished before the interruption was lost
        assert count <= reference[name]
    assert shard_hashes(tmp_path) == shard_hashes(reference_root)


def test_a_state_recipe_run_interrupted_while_recording_medium_loses_nothing(
        state_generated, tmp_path, monkeypatch):
    # 4 random + 6 training + 3 evaluation episodes, then 1 of the 3 medium ones
    _check_interruption(state_generated, tmp_path, monkeypatch, episodes=14)
    assert read_manifest(tmp_path / f"{TASK}-medium")["num_episodes"] == 3


def test_ctrl_c_says_what_is_kept_and_how_to_go_on(tmp_path, monkeypatch, capsys):
    """Ctrl-C in ``generate`` and in the datasets benchmark: exit 130 and one line naming the root
    and the way to resume, no traceback."""
    from conftest import load_benchmark_script

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("collectors.state_recipe.simulate_episode", stop)
    expected = (f"interrupted: finished datasets and the training checkpoint are kept in "
                f"{tmp_path}; run the same command again to continue")
    outcome = CliRunner().invoke(cli_main, ["generate", TASK, "--root", str(tmp_path),
                                            "--preset", "smoke"])
    assert outcome.exit_code == 130, outcome.output
    assert isinstance(outcome.exception, SystemExit)  # not the KeyboardInterrupt itself
    assert outcome.stderr.strip().splitlines()[-1] == expected
    with pytest.raises(SystemExit) as stopped:
        load_benchmark_script("datasets").main([TASK, "--root", str(tmp_path),
                                                "--render-workers", "1"])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected


@pytest.mark.slow
@pytest.mark.parametrize("episodes", [0, 1, 3, 4, 6, 8, 11, 13, 15])
def test_a_state_recipe_run_interrupted_anywhere_resumes_to_the_same_bytes(
        state_generated, tmp_path, monkeypatch, episodes):
    _check_interruption(state_generated, tmp_path, monkeypatch, episodes)


def test_behaviours_and_presets_are_checked_before_anything_is_written(tmp_path):
    from collectors.generate import generate

    with pytest.raises(GenerateError, match="behaviour must be one of sac-state, tia"):
        generate(TASK, root=tmp_path, behaviour="ppo")
    with pytest.raises(GenerateError, match="the sac-state behaviour has the presets cpu, smoke"):
        generate(TASK, root=tmp_path, behaviour="sac-state", preset="paper")
    with pytest.raises(GenerateError, match="medium_speed_limits apply to car_racing only"):
        generate(TASK, root=tmp_path, recipe=dataclasses.replace(tiny_state_recipe(),
                                                                  medium_speed_limits=(0.4,)))
    outcome = CliRunner().invoke(cli_main, ["generate", TASK, "--root", str(tmp_path),
                                            "--behaviour", "tia", "--preset", "cpu"])
    assert outcome.exit_code == 1 and "the tia behaviour has the presets smoke, paper" in \
        outcome.output and "Traceback" not in outcome.output
    assert list(tmp_path.iterdir()) == []


def test_the_cpu_preset_follows_v_d4rl_and_the_paper_counts():
    from collectors.sac import SACConfig
    from collectors.state_recipe import state_recipe

    recipe = state_recipe("cheetah_run", "cpu")
    assert (recipe.random_policies, recipe.random_episodes_per_policy) == (10, 20)
    assert (recipe.medrep_episodes, recipe.medium_episodes) == (400, 200)
    assert recipe.medium_band == (300.5, 403.2) and recipe.max_episode_steps is None
    default = SACConfig()  # V-D4RL's SAC
    assert (default.units, default.actor_layers, default.batch_size, default.gamma,
            default.tau, default.actor_lr, default.init_alpha) == (256, 3, 256, 0.99, 0.005,
                                                                   1e-4, 1.0)
    assert recipe.sac.units == 256 and recipe.sac.batch_size == 256
    assert (recipe.sac.init_alpha, recipe.sac.updates_per_step) == (0.1, 0.1)  # per task
    walker = state_recipe("walker_walk", "cpu").sac
    assert (walker.init_alpha, walker.updates_per_step) == (0.3, 0.06)
    assert state_recipe("humanoid_walk", "cpu").sac.updates_per_step == 1.0  # V-D4RL's value


def test_the_medium_search_confirms_a_candidate_that_matches_table_3(tmp_path):
    from collectors.online import Evaluation
    from collectors.sac import SACAgent, SACConfig
    from collectors.state_recipe import MediumSearch, _ActorSaver

    agent = _ActorSaver(SACAgent(SACConfig.smoke(), 24, 6))
    played = []

    def player(deterministic, sampled):
        def play(count, explore, transform=None):
            played.append((count, explore))
            return ((sampled if explore else deterministic) * count)[:count]
        return play

    search = MediumSearch((401.5, 598.0), 513.1, tmp_path, confirm_episodes=3)
    above = [650.0] * 4  # a snapshot above the band is no more medium than one below it ...
    assert not search(Evaluation(5000, "a", above), agent, play=player([650.0], [700.0]))
    assert played == [(4, True)]  # ... but its sampled actions are tried
    assert search.load_info()["distance"] == pytest.approx(0.95 + (650 - 513.1) / 513.1 - 0.07
                                                           + 1e-3)
    falls = [520.0] * 9 + [200.0]  # 90 % in band: short of the 95 % margin
    assert not search(Evaluation(10000, "b", falls), agent, play=player([0.0], [0.0]))
    played.clear()  # an above-band snapshot whose sampled actions are medium:
    assert search(Evaluation(15000, "c", above), agent, play=player([650.0], [500.0, 530.0]))
    assert played == [(4, True), (3, True)]  # four sampled episodes, then three to confirm
    info = search.load_info()
    assert (info["policy_id"], info["explore"], info["distance"], info["in_band"]) == (
        "c", True, 0.0, True)
    assert info["returns"] == [500.0, 530.0, 500.0, 530.0, 500.0, 530.0, 500.0]
    without_play = MediumSearch((401.5, 598.0), 513.1, tmp_path / "x")
    (tmp_path / "x").mkdir()
    assert not without_play(Evaluation(15000, "d", [510.0] * 4), agent)  # nothing confirmed it
    assert without_play.load_info()["distance"] == 1e-3


def test_random_policies_are_matched_to_the_quantiles_of_table_3_on_their_own_episodes():
    from collectors.generate import GenerateError
    from collectors.state_recipe import (
        choose_random_policies, quantile_targets, random_candidates,
    )

    paper = {"min": 0.0, "p25": 40.0, "median": 60.0, "p75": 120.0, "max": 200.0}
    assert quantile_targets(paper, 4) == pytest.approx([20.0, 50.0, 90.0, 160.0])
    evaluations = [{"policy_id": f"s{i}", "env_steps": 1000 * i, "mean_return": value}
                   for i, value in enumerate([30.0, 10.0, 250.0, 170.0, 90.0, 450.0, 5.0])]
    candidates = random_candidates(evaluations, (401.5, 598.0), paper, 4)
    assert [c["policy_id"] for c in candidates] == ["s0", "s1", "s3", "s4"]  # s2 above the max,
    assert [c["index"] for c in candidates] == [0, 1, 3, 4]  # s5 in the band, s6 after it
    few = random_candidates(evaluations, (401.5, 598.0), paper, 5)  # too few below the max:
    assert [c["policy_id"] for c in few] == ["s0", "s1", "s2", "s3", "s4"]  # the lowest five

    returns = {"s0": [20.0, 30.0], "s1": [5.0, 15.0], "s3": [100.0, 260.0], "s4": [80.0, 120.0]}
    played = [dict(c, returns=returns[c["policy_id"]]) for c in candidates]
    chosen = choose_random_policies(played, [20.0, 50.0, 90.0, 160.0], cap=200.0)
    # 20: s1 (mean 10) and s0 (25) are 10 and 5 off: s0; 50: s1 is the closest unused one within
    # the cap; 90: s4 (100); 160: only s3 is left, though its 260 is above the cap
    assert [c["policy_id"] for c in chosen] == ["s0", "s1", "s4", "s3"]
    chosen = choose_random_policies(played, [180.0, 100.0], cap=200.0)
    assert [c["policy_id"] for c in chosen] == ["s4", "s0"]  # s3's 260 is above the cap
    with pytest.raises(GenerateError, match="needs 5 distinct snapshots"):
        choose_random_policies(played, [1.0] * 5, cap=200.0)


def test_random_candidates_include_the_snapshots_between_evaluations_before_the_band():
    from collectors.state_recipe import SNAPSHOT_INDEX_OFFSET, random_candidates

    paper = {"max": 200.0}
    evaluations = [{"policy_id": f"e{i}", "env_steps": 1000 * i, "mean_return": value}
                   for i, value in enumerate([30.0, 250.0, 10.0, 450.0])]
    snapshots = [{"policy_id": f"s{steps}", "env_steps": steps} for steps in (500, 1500, 3500)]
    candidates = random_candidates(evaluations, (401.5, 598.0), paper, 3, snapshots)
    # e1 is above the row's max, s3500 after the band (e3); ordered by steps
    assert [c["policy_id"] for c in candidates] == ["e0", "s500", "s1500", "e2"]
    assert [c["index"] for c in candidates] == [0, SNAPSHOT_INDEX_OFFSET,
                                                SNAPSHOT_INDEX_OFFSET + 1, 2]
    assert [c["policy_id"] for c in random_candidates(evaluations, (401.5, 598.0), paper, 3)] \
        == ["e0", "e1", "e2"]  # without them too few are below the max: the lowest three


def test_the_snapshots_between_evaluations_are_the_actors_that_played_the_training_episodes(
        tmp_path):
    from collectors.recorders import STREAMS, derived_seed
    from collectors.sac import SACPolicy
    from collectors.state_recipe import simulate_episode

    def run_until(work_dir, band):
        run = budget_run(work_dir, 200, snapshot_every=20, band=band)
        return run, run.run()

    run, state = run_until(tmp_path, None)  # no band: kept to the end
    assert [s["env_steps"] for s in state.snapshots] == [60, 100, 140, 180]  # 40.. evaluated
    for snapshot in state.snapshots:
        index = snapshot["env_steps"] // 20  # 20 environment steps per episode
        played, policy_id, _ = run.episodes[index]
        assert policy_id == snapshot["policy_id"]
        replayed = simulate_episode(
            run.simulator, SACPolicy.load(tmp_path / snapshot["snapshot"]),
            derived_seed(2, "medrep", index), explore=True,
            noise_seed=derived_seed(2, "noise", STREAMS["medrep"], index), max_episode_steps=10)
        assert np.array_equal(replayed.learner_steps["action"], played.learner_steps["action"])
    best = max(e["mean_return"] for e in state.evaluations[1:])
    band_at = next(e["env_steps"] for e in state.evaluations[1:] if e["mean_return"] >= best)
    _, banded = run_until(tmp_path / "band", (best, 1e9))  # none kept after the band
    assert [s["env_steps"] for s in banded.snapshots] == [
        s["env_steps"] for s in state.snapshots if s["env_steps"] < band_at]
    saved = json.loads((tmp_path / "state.json").read_text())["run"]["settings"]
    assert saved == {"snapshot_every": 20}  # a resume with another cadence is refused


def test_the_random_level_chooses_among_the_snapshots_between_evaluations(tmp_path):
    from collectors.generate import generate

    recipe = dataclasses.replace(tiny_state_recipe(), random_snapshot_every=20)
    result = generate(TASK, root=tmp_path, seed=1, recipe=recipe, progress=False,
                      levels=["random"], max_shard_bytes=60_000)
    provenance = read_manifest(result.folders["random"])["provenance"]
    assert provenance["recipe"]["random_snapshot_every"] == 20
    between = [s["policy_id"] for s in provenance["training_run"]["snapshots"]]
    assert between == ["sac-seed1-step000060", "sac-seed1-step000100"]  # 40, 80, 120 evaluated
    work_dir = tmp_path / ".work" / f"{TASK}-sac-state-seed1"
    played = json.loads((work_dir / "random_candidates.json").read_text())["returns"]
    assert set(between) < set(played)  # candidates too, with their own episodes
    assert len({tuple(returns) for returns in played.values()}) == len(played)
    with pytest.raises(ValueError, match="random_snapshot_every must be a whole number"):
        dataclasses.replace(tiny_state_recipe(), random_snapshot_every=-1)


# -- the sac-state behaviour on car_racing -------------------------------------------------------


def tiny_car_recipe():
    """car_racing's sac-state smoke recipe cut down like tiny_state_recipe (10-step episodes, 2x2
    random, 6 training episodes, 3 medium)."""
    from collectors.state_recipe import state_recipe

    smoke = state_recipe("car_racing", "smoke")
    sac = dataclasses.replace(smoke.sac, random_steps=40, learning_starts=20, eval_every=40,
                              total_steps=120)
    return dataclasses.replace(smoke, sac=sac, random_policies=2, random_episodes_per_policy=2,
                               medium_episodes=3, max_episode_steps=10)


def run_car(root, seed=1, **options):
    """generate(car_racing, behaviour sac-state) with the tiny car recipe."""
    from collectors.generate import generate

    return generate("car_racing", root=root, seed=seed, recipe=tiny_car_recipe(),
                    progress=False, max_shard_bytes=60_000, **options)


@pytest.fixture(scope="module")
def car_generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("car")
    return root, run_car(root)


def test_the_state_recipe_makes_car_racing_with_live_frames_states_and_no_physics(car_generated):
    from collectors.sac import SACAgent
    from lqv_d4rl.car_racing import FEATURE_DIM, render_car_episode

    root, result = car_generated
    data = {level: load_dataset(folder) for level, folder in result.folders.items()}
    for level, level_data in data.items():
        assert verify_dataset(result.folders[level], require_complete=True) == []
        manifest = read_manifest(result.folders[level])
        assert manifest["provenance"]["behaviour"] == "sac-state"
        assert "physics" not in manifest["spaces"] and level_data.physics is None
        assert level_data.states.shape == (level_data.num_steps, 12)  # the car state
        assert level_data.images.shape == (level_data.num_steps, 64, 64, 3)
        assert set(level_data.episode_lengths.tolist()) == {11}
        episode = level_data.episode(len(level_data) - 1)  # frames of the live environment
        assert np.array_equal(episode["image"], render_car_episode(
            episode["action"], level_data.episode_seeds[-1], episode["reward"],
            expected_states=episode["state"]))
    assert len({s["policy_id"] for s in read_manifest(result.folders["random"])["provenance"]
                ["random_selection"]["snapshots"]}) == 2
    assert data["medrep"].policies() == ["sac-seed1-prefill"] + [
        f"sac-seed1-step{s:06d}" for s in (40, 60, 80, 100)]
    assert len(data["medium"].policies()) == 1
    # SAC learned on the simulator's features; the training episodes keep them next to the state
    work_dir = root / ".work" / "car_racing-sac-state-seed1"
    state = __import__("json").loads((work_dir / "state.json").read_text())
    assert SACAgent.load(work_dir / state["state"]["agent_file"]).state_dim == FEATURE_DIM
    with np.load(sorted((work_dir / "episodes").glob("*.npz"))[0]) as chunk:
        assert chunk["features"].shape == (11, FEATURE_DIM) and chunk["state"].shape == (11, 12)
        assert "physics" not in chunk.files


def test_car_racing_bytes_do_not_depend_on_the_render_workers(car_generated, tmp_path):
    reference_root, _ = car_generated
    run_car(tmp_path, workers=2)
    assert shard_hashes(tmp_path) == shard_hashes(reference_root)
    assert len(shard_hashes(tmp_path)) == 3
    assert candidate_returns(tmp_path, "car_racing") == candidate_returns(reference_root,
                                                                          "car_racing")


def _check_car_interruption(car_generated, tmp_path, monkeypatch, episodes):
    import collectors.state_recipe as state_recipe

    reference_root, _ = car_generated
    original = _interrupt_after(monkeypatch, episodes)
    with pytest.raises(_Interrupted):
        run_car(tmp_path)
    monkeypatch.setattr(state_recipe, "simulate_episode", original)
    run_car(tmp_path)
    assert shard_hashes(tmp_path) == shard_hashes(reference_root)


def test_a_car_racing_run_interrupted_while_training_resumes_to_the_same_bytes(
        car_generated, tmp_path, monkeypatch):
    # stopped in the 5th training episode (after the untrained actor's evaluation, 4 training
    # episodes, each checkpointed with its features, and 2 evaluations): the resumed learner
    # must train on the same observations
    _check_car_interruption(car_generated, tmp_path, monkeypatch, episodes=7)


@pytest.mark.slow
@pytest.mark.parametrize("episodes", [0, 3, 12, 15])
def test_a_car_racing_run_interrupted_anywhere_resumes_to_the_same_bytes(
        car_generated, tmp_path, monkeypatch, episodes):
    _check_car_interruption(car_generated, tmp_path, monkeypatch, episodes)


def test_the_car_racing_medium_level_drives_as_the_search_kept_it(car_generated, tmp_path):
    """A medium snapshot kept with a speed limit records its limited actions (replayed live)."""
    import json

    from collectors.sac import SACPolicy
    from lqv_d4rl.car_racing import CarRacingSimulator, speed_limited_action

    reference_root, _ = car_generated
    shutil.copytree(reference_root / ".work", tmp_path / ".work")
    work_dir = tmp_path / ".work" / "car_racing-sac-state-seed1"
    info_path = work_dir / "medium-policy.json"
    limit = 0.02
    info_path.write_text(json.dumps(dict(json.loads(info_path.read_text()),
                                         transform=["speed_limit", limit])))
    result = run_car(tmp_path, levels=["medium"])
    medium = load_dataset(result.folders["medium"])
    assert read_manifest(result.folders["medium"])["provenance"]["training_run"][
        "medium_policy"]["transform"] == ["speed_limit", limit]
    policy = SACPolicy.load(work_dir / "medium-policy.pt")
    simulator = CarRacingSimulator()
    limited = 0
    for index in range(len(medium)):
        actions = medium.episode(index)["action"]
        features, _ = simulator.reset(seed=int(medium.episode_seeds[index]))
        for action in actions[1:]:
            chosen = policy.act(features, deterministic=True)
            assert np.array_equal(action, speed_limited_action(chosen, features, limit))
            limited += int(features[0] >= limit)
            features, *_ = simulator.step(action)
    simulator.close()
    assert limited > 0


def test_the_car_racing_cpu_preset_and_its_speed_limited_medium_search(tmp_path):
    from collectors.online import Evaluation
    from collectors.sac import SACAgent, SACConfig
    from collectors.state_recipe import (CAR_RACING_SPEED_LIMIT, MEDIUM_ACTION_SCALES,
                                         MediumSearch, _ActorSaver, state_recipe)

    recipe = state_recipe("car_racing", "cpu")
    assert recipe.medium_band == (302.3, 449.9) and recipe.medium_mean == 372.3
    assert (recipe.sac.init_alpha, recipe.sac.updates_per_step, recipe.sac.actor_lr) == (
        0.1, 0.05, 3e-4)
    assert recipe.medium_speed_limits == (CAR_RACING_SPEED_LIMIT,)
    assert recipe.describe()["medium_speed_limits"] == [CAR_RACING_SPEED_LIMIT]
    walker = state_recipe(TASK, "cpu")  # dm_control: action scales instead of speed limits
    assert walker.medium_speed_limits == () and "medium_speed_limits" not in walker.describe()
    assert walker.medium_action_scales == MEDIUM_ACTION_SCALES and recipe.medium_action_scales == ()
    assert walker.sac == SACConfig.cpu()
    assert (recipe.random_snapshot_every, recipe.random_max_ratio) == (1000, 1.35)
    assert recipe.describe()["random_snapshot_every"] == 1000  # one per training episode
    for task in ("walker_walk", "cheetah_run", "hopper_hop", "humanoid_walk"):
        dm_control = state_recipe(task)  # earlier datasets' provenance unchanged
        assert dm_control.random_max_ratio == 1.0
        assert "random_snapshot_every" not in dm_control.describe()

    played = []

    def play(count, explore, transform=None):
        played.append((count, explore, transform))
        return [370.0 if transform == ("speed_limit", 0.5) else 800.0 if not explore else
                150.0] * count

    search = MediumSearch((302.3, 449.9), 372.3, tmp_path, confirm_episodes=3,
                          speed_limits=(0.6, 0.5))
    agent = _ActorSaver(SACAgent(SACConfig.smoke(), 28, 3))
    assert not search(Evaluation(5000, "below", [100.0] * 4), agent, play=play)
    assert played == []  # below the band: neither sampled nor limited modes are tried
    assert search(Evaluation(10000, "driver", [800.0] * 4), agent, play=play)
    assert played == [(4, True, None), (4, False, ("speed_limit", 0.6)),
                      (4, False, ("speed_limit", 0.5)), (3, False, ("speed_limit", 0.5))]
    info = search.load_info()
    assert (info["policy_id"], info["explore"], info["transform"], info["in_band"]) == (
        "driver", False, ["speed_limit", 0.5], True)
    assert info["action_transform"]["forward_speed_limit"] == 0.5
    assert info["returns"] == [370.0] * 7


def test_an_old_checkpoint_is_named_as_such_and_overwrite_restarts_the_random_levels_run(
        tmp_path):
    import json as json_module

    from collectors.online import read_checkpoint_state

    run_state(tmp_path, levels=["random"])  # the random level comes from the training run
    state_path = tmp_path / ".work" / f"{TASK}-sac-state-seed1" / "state.json"
    saved = json_module.loads(state_path.read_text())
    saved["version"] = 1  # as an older lqv-d4rl wrote it
    state_path.write_text(json_module.dumps(saved))
    with pytest.raises(CheckpointError, match="written by another lqv-d4rl .* version 1; this "
                                              "one reads 2"):
        read_checkpoint_state(state_path, 2, saved["run"])
    result = run_state(tmp_path, levels=["random"], overwrite=True)  # starts the run over
    assert read_manifest(result.folders["random"])["complete"]
    assert json_module.loads(state_path.read_text())["version"] == 2


def test_the_medium_search_tries_weaker_actuators_on_a_snapshot_that_acts_too_well(tmp_path):
    from collectors.online import Evaluation
    from collectors.sac import SACAgent, SACConfig, SACPolicy
    from collectors.state_recipe import MediumSearch, _ActorSaver, medium_policy

    played = []

    def play(count, explore, transform=None):
        played.append((count, explore, transform))
        scale = 1.0 if transform is None else transform[1]
        return [640.0 * scale ** 2 - (60.0 if explore else 0.0)] * count  # 0.9: 518.4, 0.8: 409.6

    search = MediumSearch((401.5, 598.0), 513.1, tmp_path, confirm_episodes=3,
                          action_scales=(0.8, 0.9, 0.95))
    agent = _ActorSaver(SACAgent(SACConfig.smoke(), 24, 6))
    assert search(Evaluation(5000, "walker", [640.0] * 4), agent, play=play)
    assert played == [(4, True, None), (4, False, ("action_scale", 0.95)),
                      (4, False, ("action_scale", 0.9)), (3, False, ("action_scale", 0.9))]
    info = search.load_info()
    assert (info["transform"], info["action_transform"]["scale"], info["in_band"]) == (
        ["action_scale", 0.9], 0.9, True)
    played.clear()  # a snapshot at the paper's mean or below is never weakened further
    search(Evaluation(10000, "slow", [500.0, 450.0, 450.0, 450.0]), agent, play=play)
    assert [transform for _, _, transform in played] == [None]  # sampled actions only
    scales = []  # the scales stop once one brings the mean below the band

    def strong(count, explore, transform=None):
        if transform is not None:
            scales.append(transform[1])
        return [900.0 * (1.0 if transform is None else transform[1]) ** 2] * count

    (tmp_path / "x").mkdir()
    MediumSearch((401.5, 598.0), 513.1, tmp_path / "x", action_scales=(0.9, 0.8, 0.7, 0.6, 0.5))(
        Evaluation(15000, "strong", [900.0] * 4), agent, play=strong)
    assert scales == [0.9, 0.8, 0.7, 0.6]  # 729, 576, 441 (no match), then 324 < 401.5: stop
    policy = SACPolicy.of(SACAgent(SACConfig.smoke(), 24, 6))
    state = np.zeros(24, np.float32)
    assert np.allclose(medium_policy(policy, ("action_scale", 0.5)).act(state, deterministic=True),
                       0.5 * policy.act(state, deterministic=True))
