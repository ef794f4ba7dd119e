"""Exogenous state dimensions (:mod:`lqv_d4rl.exogenous`): the Lorenz process is deterministic and
ignores actions, ``add-exogenous`` writes a complete dataset (resumable, refusing to overwrite),
and evaluation appends the same process to the environment's state."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import EVALUABLE_PROVENANCE, make_episode

from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.errors import DatasetExistsError
from lqv_d4rl.eval_env import make_eval_env
from lqv_d4rl.exogenous import (
    UNKNOWN_SEED_OFFSET,
    ExogenousError,
    ExogenousStateEnv,
    LorenzProcess,
    default_dims,
    exogenous_spec,
)
from lqv_d4rl.exogenous_dataset import add_exogenous
from lqv_d4rl.format import ShardWriter, read_manifest

torch.set_num_threads(1)

WALKER_FIELDS = (("orientations", 14), ("height", 1), ("velocity", 9))


def write_state_dataset(folder, *, episodes=4, length=9, seeds=None, states=True):
    """A walker_walk dataset of noise frames with random 24-dim states, evaluable (procedural
    background), episode ``k`` seeded ``seeds[k]`` (default k)."""
    seeds = list(range(episodes)) if seeds is None else seeds
    options = {"state_fields": WALKER_FIELDS} if states else {}
    with ShardWriter(folder, dataset_id="walker_walk-medrep", task="walker_walk", level="medrep",
                     action_dim=6, provenance=EVALUABLE_PROVENANCE,
                     max_shard_bytes=2 * length * 13_000, **options) as writer:
        for k in range(episodes):
            steps = make_episode(length, 6, seed=k)
            if states:
                steps["state"] = np.random.default_rng(k).normal(size=(length, 24)).astype(
                    np.float32)
            writer.add_episode(steps, policy_id=f"p{k % 2}", policy_step=k, seed=seeds[k],
                               video_ids=[k])
    return folder


# ----------------------------------------------------------------------------------------------
# The process
# ----------------------------------------------------------------------------------------------


def test_the_process_is_deterministic_chaotic_and_about_unit_scale():
    process = LorenzProcess(exogenous_spec(24))
    first = process.trajectory(7, 400)
    assert first.shape == (400, 24) and first.dtype == np.float32
    np.testing.assert_array_equal(first, LorenzProcess(exogenous_spec(24)).trajectory(7, 400))
    assert not np.allclose(first, process.trajectory(8, 400))  # another episode seed
    assert not np.allclose(first, LorenzProcess(exogenous_spec(24, seed=1)).trajectory(7, 400))
    systems = first.reshape(400, 8, 3)
    assert not np.allclose(systems[:, 0], systems[:, 1])  # independent systems
    pooled = systems.reshape(-1, 3)  # every system and step, per Lorenz coordinate
    assert np.all(np.abs(pooled.mean(0)) < 0.5) and np.all(np.abs(pooled.std(0) - 1) < 0.3)
    # nearby starts part: chaos, not a fixed cycle
    a, b = LorenzProcess(exogenous_spec(3)), LorenzProcess(exogenous_spec(3))
    a.reset(1), b.reset(1)
    b._xyz = b._xyz + 1e-6
    gaps = [np.abs(a.step() - b.step()).max() for _ in range(300)]
    assert gaps[-1] > 100 * gaps[0]
    assert default_dims(24) == 24 and default_dims(17) == 18 and default_dims(15) == 15
    with pytest.raises(ExogenousError, match="multiple of 3"):
        exogenous_spec(25)


class CountingEnv:
    """A stand-in environment whose state is the sum of the actions so far."""

    def reset(self, *, seed=None, options=None):
        self.total = np.zeros(2, np.float32)
        return "frame", {"state": self.total.copy()}

    def step(self, action):
        self.total = self.total + np.asarray(action, np.float32)
        return "frame", 0.0, False, False, {"state": self.total.copy()}

    def close(self):
        pass


def test_no_action_changes_the_exogenous_states_and_the_env_matches_the_dataset_rule():
    spec = exogenous_spec(6)
    runs = []
    for actions in (np.zeros((12, 2)), np.random.default_rng(0).uniform(-1, 1, (12, 2))):
        env = ExogenousStateEnv(CountingEnv(), spec)
        _, info = env.reset(seed=5)
        states = [info["state"]]
        for action in actions:
            states.append(env.step(action)[-1]["state"])
        runs.append(np.stack(states))
    assert runs[0].shape == (13, 8)
    assert not np.allclose(runs[0][:, :2], runs[1][:, :2])  # the actions do change the task state
    np.testing.assert_array_equal(runs[0][:, 2:], runs[1][:, 2:])
    np.testing.assert_array_equal(runs[0][:, 2:], LorenzProcess(spec).trajectory(5, 13))


# ----------------------------------------------------------------------------------------------
# The dataset variant
# ----------------------------------------------------------------------------------------------


def test_add_exogenous_round_trip(tmp_path):
    source = write_state_dataset(tmp_path / "root" / "walker_walk-medrep", seeds=[0, 1, -1, 3])
    folder = add_exogenous("walker_walk-medrep", "walker_walk-medrep-exo24", root=tmp_path / "root",
                           progress=False)
    assert folder == tmp_path / "root" / "walker_walk-medrep-exo24"
    old, new = load_dataset(source), load_dataset(folder)
    assert new.states.shape == (old.num_steps, 48)
    for key in ("images", "actions", "rewards", "discounts", "is_first", "is_last", "is_terminal"):
        np.testing.assert_array_equal(getattr(old, key), getattr(new, key))
    np.testing.assert_array_equal(new.states[:, :24], old.states)
    np.testing.assert_array_equal(new.episode_seeds, old.episode_seeds)
    assert new.policy_ids.tolist() == old.policy_ids.tolist()
    spec = exogenous_spec(24)
    for k, seed in enumerate([0, 1, UNKNOWN_SEED_OFFSET + 2, 3]):
        rows = slice(int(new.episode_starts[k]), int(new.episode_starts[k] + new.episode_lengths[k]))
        np.testing.assert_array_equal(new.states[rows, 24:],
                                      LorenzProcess(spec).trajectory(seed, 9))
    manifest = read_manifest(folder)
    fields = manifest["spaces"]["state"]["fields"]
    assert fields[:3] == [list(field) for field in WALKER_FIELDS]
    assert fields[3:] == [[f"exogenous_lorenz_{i}", 3] for i in range(8)]
    provenance = manifest["provenance"]
    assert provenance["exogenous"]["dims"] == 24 and provenance["exogenous"]["kind"] == "lorenz63"
    assert provenance["exogenous_from"]["dataset_id"] == "walker_walk-medrep"
    assert json.loads(json.dumps(provenance["exogenous"])) == spec
    with pytest.raises(DatasetExistsError, match="already complete"):
        add_exogenous(source, "walker_walk-medrep-exo24", to_root=tmp_path / "root")
    add_exogenous(source, "walker_walk-medrep-exo24", to_root=tmp_path / "root", overwrite=True,
                  progress=False)
    with pytest.raises(ExogenousError, match="already has exogenous"):
        add_exogenous(folder, "again", to_root=tmp_path / "root")


def test_an_interrupted_add_exogenous_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    source = write_state_dataset(tmp_path / "src" / "walker_walk-medrep", episodes=6)
    whole = add_exogenous(source, "exo", to_root=tmp_path / "whole", progress=False,
                          max_shard_bytes=2 * 9 * 13_000)
    calls, trajectory = [], LorenzProcess.trajectory

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return trajectory(self, *args)

    monkeypatch.setattr(LorenzProcess, "trajectory", failing)
    with pytest.raises(KeyboardInterrupt):
        add_exogenous(source, "exo", to_root=tmp_path / "cut", progress=False,
                      max_shard_bytes=2 * 9 * 13_000)
    assert not read_manifest(tmp_path / "cut" / "exo")["complete"]
    monkeypatch.setattr(LorenzProcess, "trajectory", trajectory)
    resumed = add_exogenous(source, "exo", to_root=tmp_path / "cut", progress=False,
                            max_shard_bytes=2 * 9 * 13_000)
    shards = lambda folder: [record["sha256"] for record in read_manifest(folder)["shards"]]  # noqa: E731
    assert shards(resumed) == shards(whole)


def test_a_dataset_without_states_is_refused(tmp_path):
    source = write_state_dataset(tmp_path / "walker_walk-medrep", states=False)
    with pytest.raises(ExogenousError, match="stores no states"):
        add_exogenous(source, "exo", to_root=tmp_path)


def test_the_cli_verb(tmp_path):
    from lqv_d4rl.cli import main

    write_state_dataset(tmp_path / "walker_walk-medrep", episodes=2)
    result = CliRunner().invoke(main, ["add-exogenous", "walker_walk-medrep", "--root",
                                       str(tmp_path), "--dims", "6", "--id", "exo6"])
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "exo6").states.shape[1] == 30
    again = CliRunner().invoke(main, ["add-exogenous", "walker_walk-medrep", "--root",
                                      str(tmp_path), "--dims", "6", "--id", "exo6"])
    assert again.exit_code != 0 and "already complete" in again.output
    bad = CliRunner().invoke(main, ["add-exogenous", "walker_walk-medrep", "--root",
                                    str(tmp_path), "--dims", "7", "--id", "exo7"])
    assert bad.exit_code != 0 and "multiple of 3" in bad.output


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def test_evaluation_env_gives_the_extended_state_seeded_by_the_episode(tmp_path):
    source = write_state_dataset(tmp_path / "walker_walk-medrep", episodes=2)
    data = load_dataset(add_exogenous(source, "exo", to_root=tmp_path, dims=9, progress=False))
    kwargs = data.eval_env_kwargs()
    assert kwargs["exogenous"]["dims"] == 9
    assert "exogenous" not in load_dataset(source).eval_env_kwargs()  # only where recorded
    env = make_eval_env(kwargs, seed=3)
    try:
        _, info = env.reset(seed=11)
        states = [info["state"]]
        for _ in range(3):
            states.append(env.step(np.zeros(6, np.float32))[-1]["state"])
        assert env.video_pool is not None  # the wrapped environment's attributes
    finally:
        env.close()
    states = np.stack(states)
    assert states.shape == (4, 33)
    np.testing.assert_array_equal(states[:, 24:],
                                  LorenzProcess(kwargs["exogenous"]).trajectory(11, 4))


def test_a_state_run_on_an_exogenous_dataset_plays_with_the_extended_state(tmp_path):
    from lqv_d4rl.experiment import run_experiment

    source = write_state_dataset(tmp_path / "walker_walk-medrep", episodes=3, length=17)
    folder = add_exogenous(source, "exo", to_root=tmp_path, dims=6, progress=False)
    overrides = dict(batch_size=4, seq_len=8, deter=16, stoch=4, classes=4, hidden=16, ensemble=3,
                     exo_ensemble=3, units=32, reward_layers=1, actor_layers=1, critic_layers=1,
                     model_steps=2, policy_steps=1, eval_episodes=1, eval_max_steps=2,
                     observation="state", state_layers=1, state_units=16, log_every=1)
    torch.manual_seed(0)
    result = run_experiment("semopo", folder, preset="smoke", overrides=overrides,
                            out=tmp_path / "run", progress=False, echo=lambda *_: None)
    assert result["lengths"] == [2] and result["env"]["exogenous"]["dims"] == 6
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["eval_env"]["exogenous"]["dims"] == 6
