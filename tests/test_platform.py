"""The algorithm platform: registry, configs and --set, run folders, evaluation, the train verb.

Training runs use SeMOPO with tiny networks on a small dataset recorded from the real walker_walk
environment (see ``conftest.record_walker_dataset``); evaluation plays real episodes.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lqv_d4rl import algorithms
from lqv_d4rl.cli import main
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.eval_env import EvalEnvError, env_kwargs_from_manifest
from lqv_d4rl.evaluation import evaluate
from lqv_d4rl.experiment import check_device, run_experiment
from lqv_d4rl.paper import PAPER_TABLE1_REFERENCES, paper_tables
from lqv_d4rl.runs import (
    NotARunError, ResumeMismatchError, Run, RunExistsError, read_metrics, rng_state, set_rng_state,
)
from lqv_d4rl.scores import get_normalized_score

TINY_SEMOPO = ["--batch-size", "4", "--seq-len", "8", "--depth", "4", "--deter", "16",
               "--stoch", "4", "--classes", "4", "--hidden", "16", "--ensemble", "2",
               "--exo-ensemble", "2", "--units", "16", "--reward-layers", "1", "--actor-layers", "1",
               "--critic-layers", "1", "--log-every", "1", "--eval-episodes", "1",
               "--eval-max-steps", "3", "--no-analysis"]


@pytest.fixture(scope="module")
def walker(tmp_path_factory):
    """A small walker_walk dataset recorded over the procedural video (see conftest)."""
    from conftest import record_walker_dataset

    return record_walker_dataset(tmp_path_factory.mktemp("platform") / "walker_walk-medrep")


def tiny_semopo_config(**changes):
    return algorithms.get("semopo").config("smoke", **{
        "batch_size": 4, "seq_len": 8, "depth": 4, "deter": 16, "stoch": 4, "classes": 4,
        "hidden": 16, "ensemble": 2, "exo_ensemble": 2, "units": 16, "reward_layers": 1,
        "actor_layers": 1, "critic_layers": 1, "model_steps": 3, "policy_steps": 2,
        "log_every": 1, "eval_episodes": 1, "eval_max_steps": 3, **changes})


# ---------------------------------------------------------------------------------- registry


def test_registry_lists_installed_algorithms_and_rejects_unknown_ones():
    assert "semopo" in algorithms.names()
    assert set(algorithms.names()) <= set(algorithms.known_names())
    assert algorithms.get("semopo").name == "semopo"
    with pytest.raises(algorithms.UnknownAlgorithmError, match="known: semopo, offline_dv2"):
        algorithms.get("dreamer")


def test_nothing_heavy_is_imported_with_the_library_or_its_cli():
    code = ("import sys, lqv_d4rl, lqv_d4rl.cli, lqv_d4rl.algorithms; lqv_d4rl.algorithms.names(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'semopo', 'baselines', 'collectors', 'torch'}))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


def test_the_library_has_no_import_cycles():
    """No module of lqv_d4rl imports (even lazily, inside a function) one that imports it back."""
    import ast
    from pathlib import Path

    package = Path(algorithms.__file__).parent
    modules = {".".join(path.relative_to(package.parent).with_suffix("").parts)
               .removesuffix(".__init__"): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets.update([target] + [f"{target}.{alias.name}" for alias in node.names])
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        # the package root only holds the version and lazy exports
        graph[name] = {t for t in targets if t in modules and t not in (name, "lqv_d4rl")}

    def reaches(start, goal, seen):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in graph[start])

    assert [name for name in graph if reaches(name, name, {name})] == []


def test_an_algorithm_from_another_package_is_found_by_entry_point(tmp_path):
    (tmp_path / "mean_action.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from lqv_d4rl.algorithms import Algorithm

        @dataclass
        class Config:
            scale: float = 1.0
            """How much of the mean action to play (a field doc from another package)."""
            eval_episodes: int = 1
            """Evaluation episodes."""

        ALGORITHM = Algorithm(name="mean_action", config_class=Config, presets={"paper": {}},
                              train=None, load=None, summary="plays the mean dataset action")
    '''))
    info = tmp_path / "mean_action-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mean-action\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lqv_d4rl.algorithms]\nmean_action = mean_action:ALGORITHM\n")
    code = ("from lqv_d4rl import algorithms; print(algorithms.names()); "
            "print(algorithms.get('mean_action').summary)")
    env = {"PYTHONPATH": str(tmp_path), "PATH": ""}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            check=True).stdout.splitlines()
    assert "'mean_action'" in output[0] and output[1] == "plays the mean dataset action"
    help_text = " ".join(subprocess.run([sys.executable, "-m", "lqv_d4rl.cli", "train",
                                         "mean_action", "--help"], capture_output=True, text=True,
                                        env=env).stdout.split())
    assert "--scale NUMBER How much of the mean action to play (a field doc from another package)" in help_text


def test_every_installed_algorithm_documents_every_config_field_and_has_smoke_and_paper():
    for name in algorithms.names():
        algorithm = algorithms.get(name)
        docs = algorithms.field_docs(algorithm.config_class)
        fields = set(algorithms.field_types(algorithm.config_class))
        assert fields <= set(docs), (name, sorted(fields - set(docs)))
        assert {"smoke", "paper"} <= set(algorithm.presets), name
        assert {"eval_episodes", "eval_max_steps"} <= fields, name
        algorithm.config("smoke")  # valid
        algorithm.config("paper")


# ---------------------------------------------------------------------------------- configs


def test_settings_are_parsed_by_field_type():
    config = tiny_semopo_config()
    changed = algorithms.apply_settings(config, [
        "batch_size=7", "penalty_lambda=2.5", "separated=false", "curriculum_steps=none",
        "eval-max-steps=9", "sampling=random"])
    assert (changed.batch_size, changed.penalty_lambda, changed.separated) == (7, 2.5, False)
    assert (changed.curriculum_steps, changed.eval_max_steps, changed.sampling) == (None, 9, "random")
    assert algorithms.apply_settings(config, ["curriculum_steps=300"]).curriculum_steps == 300


@pytest.mark.parametrize("setting, message", [
    ("batch_size=abc", "batch_size takes an integer, got 'abc'"),
    ("separated=maybe", "separated takes true/false"),
    ("curriculum_steps=1.5", "curriculum_steps takes an integer or none"),
    ("bach_size=3", "semopo has no config field 'bach_size'; known: .*batch_size"),
    ("batch_size", "--set takes key=value"),
    ("sampling=best", "sampling must be one of"),
    ("batch_size=0", "batch_size must be a positive integer"),
])
def test_bad_settings_name_the_field_and_its_type(setting, message):
    with pytest.raises(algorithms.ConfigError, match=message):
        algorithms.apply_settings(tiny_semopo_config(), [setting], "semopo")


def test_released_preset_is_task_specific_and_matches_the_released_command():
    semopo = algorithms.get("semopo")
    walker = semopo.config("released", task="walker_walk")
    hopper = semopo.config("released", task="hopper_hop")
    assert (walker.exo_only_scale, hopper.exo_only_scale) == (2.25, 4.0)
    assert (walker.model_steps, walker.curriculum_steps, walker.policy_sampling) == (
        25_100, 25_001, "return_curriculum")
    assert walker.replicate_off_by_one and walker.unique_returns
    assert (walker.penalty, walker.penalty_lambda, walker.model_lr) == ("semopo_code", 5.0, 3e-4)
    paper = semopo.config("paper", task="hopper_hop")
    assert (paper.sampling, paper.conservative_initial, paper.curriculum_steps) == (
        "conservative", 10, None)
    assert (paper.penalty, paper.penalty_lambda) == ("semopo_code", 10.0)


def test_the_policy_phase_samples_the_frozen_prefix_of_the_released_curriculum(walker):
    from semopo.training import make_sampler

    dataset = load_dataset(walker)
    config = tiny_semopo_config(sampling="return_curriculum", policy_sampling="return_curriculum",
                                model_steps=200, curriculum_steps=200, replicate_off_by_one=True)
    policy = make_sampler(dataset, "return_curriculum", config, 0, frozen_step=config.model_steps)
    model = make_sampler(dataset, "return_curriculum", config, 0)
    # E = 4 episodes: increment max(int(4 / 2), 1) = 2 every 100 updates, capped at E - 1 = 3
    assert [model.prefix_size(step) for step in (0, 100, 199)] == [3, 3, 3]
    policy.set_step(10_000)
    assert policy.prefix_size() == model.prefix_size(200)


# ---------------------------------------------------------------------------------- scores


def test_paper_table1_reference_turns_table5_into_table1_for_every_task_and_method():
    tables = paper_tables()
    raw, normalized = tables["raw_returns"], tables["normalized_returns"]
    assert raw["methods"] == normalized["methods"]
    checked = 0
    for task, levels in raw.items():
        if task == "methods":
            continue
        for level, rows in levels.items():
            for method, (mean, _), (expected, _) in zip(raw["methods"], rows, normalized[task][level]):
                score = get_normalized_score(task, mean, reference="paper_table1")
                assert abs(score - expected) <= 0.01 + 1e-9, (task, level, method, score, expected)
                checked += 1
    assert checked == 5 * 3 * 7
    assert PAPER_TABLE1_REFERENCES["car_racing"] == (10.3, 449.9)
    # with the paper's own definition car_racing's published scores do not come out
    # (DrQ+BC on car_racing-random: raw -10, Table 1 says -0.05)
    assert abs(get_normalized_score("car_racing", -10, reference="paper") - (-0.05)) > 0.1


# ---------------------------------------------------------------------------------- run folders


def test_run_folders_refuse_what_would_lose_or_mix_work(walker, tmp_path):
    dataset = load_dataset(walker)
    semopo = algorithms.get("semopo")
    config = tiny_semopo_config()
    out = tmp_path / "run"
    run = Run.open(out, semopo, config, dataset, seed=3)
    record = json.loads((out / "config.json").read_text())
    assert (record["algorithm"], record["seed"], record["config"]["batch_size"]) == ("semopo", 3, 4)
    assert len(record["dataset"]["manifest_sha256"]) == 64
    run.save_checkpoint({"weights": torch.arange(3.0), "step": 5})
    with pytest.raises(RunExistsError, match="--resume"):
        Run.open(out, semopo, config, dataset, seed=3)
    with pytest.raises(ResumeMismatchError, match="batch_size"):
        Run.open(out, semopo, tiny_semopo_config(batch_size=5), dataset, seed=3, resume=True)
    with pytest.raises(ResumeMismatchError, match="seed 3"):
        Run.open(out, semopo, config, dataset, seed=4, resume=True)
    other = dataset.select([0, 1])
    with pytest.raises(ResumeMismatchError, match="another dataset"):
        Run.open(out, semopo, config, other, seed=3, resume=True)
    resumed = Run.open(out, semopo, tiny_semopo_config(eval_episodes=4), dataset, seed=3,
                       resume=True)  # evaluation settings may change
    state = resumed.load_checkpoint()
    assert torch.equal(state["weights"], torch.arange(3.0)) and state["step"] == 5
    (out / "eval.json").write_text("{}")
    with pytest.raises(RunExistsError, match="finished"):
        Run.open(out, semopo, config, dataset, seed=3, resume=True)
    Run.open(out, semopo, config, dataset, seed=3, overwrite=True)
    assert not (out / "eval.json").exists() and not (out / "checkpoint.pt").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(NotARunError):
        Run.open(precious, semopo, config, dataset, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_checkpoint_that_is_not_plain_data_is_refused_with_a_clear_message(walker, tmp_path):
    dataset = load_dataset(walker)
    run = Run.open(tmp_path / "run", algorithms.get("semopo"), tiny_semopo_config(), dataset)
    torch.save({"sneaky": np.arange(3)}, tmp_path / "run" / "checkpoint.pt")  # not weights-only
    with pytest.raises(Exception, match="cannot read the checkpoint .* --overwrite"):
        run.load_checkpoint()


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    numpy_rng, torch_rng = np.random.default_rng(1), torch.Generator().manual_seed(2)
    torch.manual_seed(3)
    saved = rng_state([numpy_rng, torch_rng])
    expected = (torch.rand(3), numpy_rng.random(3), torch.rand(3, generator=torch_rng))
    torch.save(saved, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", map_location="cpu", weights_only=True)
    for state in [loaded["torch"], *(item["torch"] for item in loaded["generators"][1:])]:
        assert state.dtype == torch.uint8 and state.device.type == "cpu"
    set_rng_state(loaded, [numpy_rng, torch_rng])
    again = (torch.rand(3), numpy_rng.random(3), torch.rand(3, generator=torch_rng))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert torch.equal(expected[2], again[2])


def test_cuda_that_is_not_there_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(Exception, match="sees no CUDA GPU"):
            check_device(device)
    with pytest.raises(Exception, match="is no torch device"):
        check_device("gpu7")


# ---------------------------------------------------------------------------------- evaluation


class SwayPolicy:
    """A tiny picklable policy: a sine sway with torch-random jitter (exercises the seeded RNG)."""

    def reset(self):
        self.t = 0

    def __call__(self, observation):
        assert observation.shape == (64, 64, 3) and observation.dtype == np.uint8
        self.t += 1
        jitter = torch.rand(6).numpy() * 0.2
        return (np.sin(0.3 * self.t + np.arange(6)) * 0.8 + jitter).clip(-1, 1).astype(np.float32)


def test_evaluation_is_the_same_in_any_number_of_workers(walker):
    env_kwargs = load_dataset(walker).eval_env_kwargs()
    here = evaluate(SwayPolicy(), env_kwargs, episodes=3, first_episode_seed=100, max_steps=6)
    spread = evaluate(SwayPolicy(), env_kwargs, episodes=3, first_episode_seed=100, max_steps=6,
                      workers=2)
    assert here["returns"] == spread["returns"] and here["lengths"] == [6, 6, 6]
    assert len(set(here["returns"])) == 3  # each episode has its own seed
    low, high = 5.0, 598.0
    assert here["normalized_score"] == pytest.approx((np.mean(here["returns"]) - low) / (high - low))
    assert here["env"]["distractor"]["kind"] == "procedural"


def test_evaluation_environment_comes_from_the_manifest_and_missing_videos_are_named(tmp_path):
    procedural = {"dataset_id": "walker_walk-medium", "task": "walker_walk", "provenance": {
        "distractor": {"kind": "procedural", "seed": 7, "num_frames": 300, "rgb": False},
        "env": {"composite": "color", "render_quality": "default"}}}
    env = env_kwargs_from_manifest(procedural)
    assert env == {"task": "walker_walk", "composite": "color", "render_quality": "default",
                   "distractor": {"kind": "procedural", "seed": 7, "num_frames": 300, "rgb": False}}
    assert env_kwargs_from_manifest(procedural, rgb_background=True)["distractor"]["rgb"] is True
    videos = {"dataset_id": "walker_walk-medium", "task": "walker_walk", "provenance": {
        "distractor": {"kind": "video_dir", "source": str(tmp_path / "gone"), "seed": 1,
                       "num_frames": 50, "rgb": False, "files": ["a.mp4"]}}}
    with pytest.raises(EvalEnvError, match="--video-dir"):
        env_kwargs_from_manifest(videos)
    (tmp_path / "here").mkdir()
    moved = env_kwargs_from_manifest(videos, video_dir=tmp_path / "here")
    assert moved["distractor"]["source"] == str(tmp_path / "here")
    imported = {"dataset_id": "walker_walk-medium", "task": "walker_walk",
                "provenance": {"source": "npz-import"}}
    with pytest.raises(EvalEnvError, match="--video-dir procedural"):
        env_kwargs_from_manifest(imported)
    assert env_kwargs_from_manifest(imported, video_dir="procedural")["distractor"]["kind"] == "procedural"


# ---------------------------------------------------------------------------------- train verb


def test_train_evaluate_and_resume_through_the_cli(walker, tmp_path):
    out, straight = tmp_path / "split", tmp_path / "straight"
    arguments = [str(walker), "--preset", "smoke", *TINY_SEMOPO, "--model-steps", "3",
                 "--policy-steps", "2", "--set", "penalty_lambda=2"]
    runner = CliRunner()
    first = runner.invoke(main, ["train", "semopo", *arguments, "--out", str(out), "--stop-after", "2"])
    assert first.exit_code == 0, first.output
    assert "continue with --resume" in first.output and not (out / "eval.json").exists()
    refused = runner.invoke(main, ["semopo", *arguments, "--out", str(out)])  # the short form
    assert refused.exit_code == 1 and "--resume" in refused.output and "Traceback" not in refused.output
    finished = runner.invoke(main, ["semopo", *arguments, "--out", str(out), "--resume"])
    assert finished.exit_code == 0, finished.output
    runner.invoke(main, ["train", "semopo", *arguments, "--out", str(straight)])
    for name in ("checkpoint.pt",):
        split_state = torch.load(out / name, weights_only=True)["agent"]["world_model"]
        straight_state = torch.load(straight / name, weights_only=True)["agent"]["world_model"]
        assert all(torch.equal(split_state[key], straight_state[key]) for key in straight_state)
    result = json.loads((out / "eval.json").read_text())
    assert result == {**json.loads((straight / "eval.json").read_text()),
                      "train_seconds": result["train_seconds"],
                      "session_seconds": result["session_seconds"], "seconds": result["seconds"]}
    assert json.loads((out / "config.json").read_text())["config"]["penalty_lambda"] == 2.0
    again = runner.invoke(main, ["evaluate", str(out), "--episodes", "2"])
    assert again.exit_code == 0, again.output
    assert len(json.loads((out / "eval.json").read_text())["returns"]) == 2
    phases = {row["phase"] for row in read_metrics(out)}
    assert phases == {"model", "policy", "eval"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight)).Reload()
    losses = [event.value for event in events.Scalars("model/model_loss")]
    logged = [row["value"] for row in read_metrics(straight) if row["metric"] == "model_loss"]
    assert losses == pytest.approx(logged)


@pytest.mark.parametrize("arguments, message", [
    (["train", "dreamer", "x"], "unknown algorithm 'dreamer'; known: semopo"),
    (["train", "semopo", "DATA", "--set", "batch_size=abc"], "batch_size takes an integer"),
    (["train", "semopo", "DATA", "--set", "bach_size=1"], "no config field 'bach_size'"),
    (["train", "semopo", "DATA", "--batch-size", "abc"], "'abc' is not a valid integer"),
    (["train", "semopo", "DATA", "--preset", "huge"], "'huge' is not one of"),
])
def test_usage_errors_are_one_line_and_exit_2(walker, arguments, message):
    arguments = [str(walker) if item == "DATA" else item for item in arguments]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_without_a_preset_a_cpu_machine_runs_smoke_and_says_so(walker, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["train", "semopo", str(walker), "--out", str(tmp_path / "r"),
                                       *TINY_SEMOPO, "--model-steps", "1", "--policy-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "using the smoke preset" in result.output and "GPU job" in result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["preset"] == "smoke"


def test_run_experiment_skips_nothing_and_overwrites_nothing(walker, tmp_path):
    config = tiny_semopo_config(model_steps=1, policy_steps=1)
    result = run_experiment("semopo", walker, config=config, out=tmp_path / "r", analyse=False,
                            progress=False, echo=lambda *_: None)
    assert set(result) >= {"returns", "mean_return", "normalized_score", "train_seconds"}
    with pytest.raises(RunExistsError, match="finished"):
        run_experiment("semopo", walker, config=config, out=tmp_path / "r", progress=False,
                       echo=lambda *_: None)


def test_one_name_per_hyperparameter_translates_every_config_to_the_behaviour():
    from collectors.tia import TIAConfig
    from lqv_d4rl.networks import BehaviorConfig

    semopo = BehaviorConfig.from_config(tiny_semopo_config(lambda_=0.9, eps=1e-6, clip=50.0,
                                                           actor_entropy=3e-4, slow_critic_every=7))
    assert (semopo.lambda_, semopo.eps, semopo.clip, semopo.actor_entropy,
            semopo.slow_critic_every, semopo.horizon) == (0.9, 1e-6, 50.0, 3e-4, 7, 5)
    tia = TIAConfig().behavior_config()
    assert (tia.actor_dist, tia.actor_entropy, tia.slow_critic_every, tia.eps, tia.critic_layers,
            tia.horizon) == ("tanh_normal", 0.0, 1, 1e-7, 3, 15)


def test_a_batch_stream_checkpoints_what_was_consumed_not_what_was_drawn_ahead(walker):
    from lqv_d4rl.batch_stream import BatchStream, set_sampler_position
    from lqv_d4rl.samplers import make_sequence_sampler

    dataset = load_dataset(walker)
    serial = make_sequence_sampler(dataset, "conservative", batch_size=3, seq_len=5, seed=4)
    expected = [serial.sample()["episode"].copy() for _ in range(7)]
    sampler = make_sequence_sampler(dataset, "conservative", batch_size=3, seq_len=5, seed=4)
    stream = BatchStream(sampler, "cpu", prefetch=3)
    first = [stream.next()["episode"].numpy().copy() for _ in range(4)]
    position = stream.state()
    stream.close()
    assert sampler.step > 4 and position["step"] == 4  # the thread ran ahead; the state did not
    resumed = make_sequence_sampler(dataset, "conservative", batch_size=3, seq_len=5, seed=4)
    set_sampler_position(resumed, position)
    stream = BatchStream(resumed, "cpu")
    rest = [stream.next()["episode"].numpy() for _ in range(3)]
    stream.close()
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, expected))
