"""``generate``: three valid datasets with the policy structure of the recipe; refusing finished
datasets; an interrupted run (a real process, killed) resumes to the same bytes; the bytes do not
depend on the caller's torch threads; finished datasets, checkpoints and options from other
settings are refused before anything is written.

The runs use a recipe smaller than the smoke preset (10-step episodes, a handful of episodes and
updates) so that the real pipeline (MuJoCo rendering, TIA training, HDF5 shards) stays fast.
"""

import dataclasses
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
from lqv_d4rl.format import read_manifest, verify_dataset

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


def test_killed_generate_resumes_to_the_same_bytes(generated, tmp_path):
    reference_root, _ = generated
    root = tmp_path / "interrupted"
    code = (f"import sys; sys.path[:0] = [{str(REPO_ROOT)!r}, {str(Path(__file__).parent)!r}]; "
            f"from test_generate import run_tiny; run_tiny({str(root)!r})")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                             env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = root / ".work" / f"{TASK}-seed3" / "state.json"
    deadline = time.monotonic() + 120
    while not state.is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child.poll() is None, child.stderr.read().decode()
    child.send_signal(signal.SIGKILL)  # mid-training: random done, medrep and medium not
    child.wait()
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
    assert outcome.exit_code == 1 and "sees no CUDA GPU" in outcome.output
    assert "Traceback" not in outcome.output
    with pytest.raises(GenerateError, match="must be 'cpu', 'cuda' or 'cuda:N'"):
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
