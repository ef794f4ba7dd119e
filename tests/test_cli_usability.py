"""What the command line says and asks: paper-size runs on a CPU ask first, every default shows in
``--help``, one name per meaning (with deprecated old names that warn), missing-dataset hints that
keep the user's ``--root``, and ``leaderboard --report-only`` on a folder without runs."""

import re

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import record_walker_dataset, write_tiny_dataset
from test_leaderboard_toys import ALGORITHM as MEAN_BC
from test_leaderboard_toys import DATASET, registered

from lqv_d4rl import cpu_cost
from lqv_d4rl.cli import main
from lqv_d4rl.cli.options import deprecated_alias


def run_cli(*args, **options):
    return CliRunner().invoke(main, [str(arg) for arg in args], **options)


def error_line(result):
    """The one 'Error: ...' line of a failed command (no traceback)."""
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def walker_root(tmp_path_factory):
    """A dataset root with a small walker_walk-medrep recorded in the real environment."""
    folder = tmp_path_factory.mktemp("usability-root")
    record_walker_dataset(folder / DATASET, episodes_per_policy=1, steps=8)
    return folder


@pytest.fixture
def slow_mean_bc(monkeypatch):
    """``mean_bc`` (a test learner) registered, with a measured cost of 100 s per update of its
    paper preset (60 updates) and 200 s of its smoke preset (30 updates) in the cpu_cost table:
    either is then a 100-minute CPU run."""
    monkeypatch.setitem(cpu_cost.PHASES, "mean_bc", (("bc", "updates"),))
    monkeypatch.setitem(cpu_cost.SECONDS_PER_UPDATE, "mean_bc",
                        {"paper": {"bc": 100.0}, "smoke": {"bc": 200.0}})
    with registered(MEAN_BC):
        yield


# ------------------------------------------------------------------- long runs on a CPU ask first


def test_the_projection_comes_from_the_measured_table():
    from lqv_d4rl import algorithms

    for name in cpu_cost.PHASES:
        algorithm = algorithms.get(name)
        smoke = cpu_cost.project_run(name, algorithm.config("smoke"), "smoke")
        paper = cpu_cost.project_run(name, algorithm.config("paper"), "paper")
        assert not smoke.is_long, smoke.describe()  # the smoke presets start without a question
        assert paper.is_long and paper.seconds > 10 * smoke.seconds, paper.describe()
    semopo = algorithms.get("semopo")
    released = cpu_cost.project_run("semopo", semopo.config("released"), "released")
    assert released.figures_of == "paper" and released.is_long  # an unmeasured preset
    assert "25,100 model + 100,000 policy updates" in released.describe()
    stopped = cpu_cost.project_run("semopo", semopo.config("paper"), "paper", stop_after=10)
    assert stopped.phases[0][1] == 10 and stopped.phases[1][1] == 0
    assert cpu_cost.project_run("mean_bc", MEAN_BC.config("paper"), "paper") is None  # unmeasured
    assert [cpu_cost.format_duration(s) for s in (30, 600, 7200, 86400 * 3)] == [
        "30 s", "10 min", "2.0 h", "3.0 days"]


def test_a_paper_run_on_a_cpu_is_refused_without_a_terminal(walker_root):
    result = run_cli("train", "semopo", DATASET, "--preset", "paper", "--device", "cpu",
                     "--root", walker_root, "--out", walker_root.parent / "never")
    assert result.exit_code == 1
    line = error_line(result)
    assert "not started" in line and "--allow-long-cpu-run" in line and "--preset smoke" in line
    assert re.search(r"semopo --preset paper on a CPU: 25,000 model \+ 100,000 policy updates, "
                     r"projected [\d.]+ days of training", result.output)
    assert "measured on" in result.output and "lqv_d4rl/cpu_cost.py" in result.output
    assert not (walker_root.parent / "never").exists()


def test_a_long_cpu_run_starts_with_the_flag_or_a_yes(walker_root, tmp_path, slow_mean_bc):
    common = ["train", "mean_bc", DATASET, "--preset", "paper", "--device", "cpu", "--root",
              walker_root]
    result = run_cli(*common, "--out", tmp_path / "flag", "--allow-long-cpu-run")
    assert result.exit_code == 0, result.output
    assert "60 bc updates, projected 1.7 h of training" in result.output
    assert "starting it anyway (--allow-long-cpu-run)" in result.output
    assert (tmp_path / "flag" / "eval.json").is_file()


def test_a_long_cpu_run_asks_on_a_terminal_and_no_is_the_default(walker_root, tmp_path,
                                                                  slow_mean_bc, monkeypatch):
    monkeypatch.setattr("lqv_d4rl.cli.cpu_guard.is_interactive", lambda: True)
    common = ["train", "mean_bc", DATASET, "--preset", "smoke", "--device", "cpu", "--root",
              walker_root]
    result = run_cli(*common, "--out", tmp_path / "no", input="\n")  # just Enter: no
    assert result.exit_code == 1 and "Start it on this CPU anyway? [y/N]" in result.output
    assert "not started" in result.output and not (tmp_path / "no").exists()
    result = run_cli(*common, "--out", tmp_path / "yes", input="y\n")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "yes" / "eval.json").is_file()


def test_a_short_cpu_run_starts_without_asking(walker_root, tmp_path, slow_mean_bc):
    result = run_cli("train", "mean_bc", DATASET, "--preset", "smoke", "--device", "cpu",
                     "--root", walker_root, "--out", tmp_path / "short", "--stop-after", "5")
    assert result.exit_code == 0, result.output  # 5 updates x 200 s: under the hour
    assert "projected" not in result.output


def test_a_long_leaderboard_grid_on_a_cpu_asks_first(walker_root, tmp_path, slow_mean_bc):
    common = ["leaderboard", "--methods", "mean_bc", "--datasets", DATASET, "--seeds", "2",
              "--preset", "smoke", "--root", walker_root, "--device", "cpu", "--backend",
              "inline"]
    result = run_cli(*common, "--out", tmp_path / "lb")
    assert result.exit_code == 1
    assert "not started" in error_line(result) and "--allow-long-cpu-run" in error_line(result)
    assert re.search(r"leaderboard --preset smoke on a CPU: 2 run\(s\) to do, projected 3.3 h of "
                     r"CPU time .*about 3.3 h with 1 run\(s\) at once", result.output)
    assert not list((tmp_path / "lb").glob("runs/*/*/seed*/config.json"))
    result = run_cli(*common, "--out", tmp_path / "lb", "--allow-long-cpu-run")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------- defaults in --help


@pytest.mark.parametrize("algorithm", ["semopo", "bc", "lompo"])
def test_train_help_shows_every_default(algorithm):
    import dataclasses

    from lqv_d4rl import algorithms

    fields = {field.name for field in dataclasses.fields(algorithms.get(algorithm).config_class)}
    (_, command, context), = [item for item in _commands() if item[0] == f"train {algorithm}"]
    shown = {param.name for param in command.params
             if param.name in fields and "[default: " in param.get_help_record(context)[1]}
    assert shown == fields
    help_text = " ".join(run_cli("train", algorithm, "--help").output.split())
    if algorithm == "semopo":
        assert "paper: 25000; released: 25100; smoke: 200" in help_text  # --model-steps
        assert "[default: (paper, released: 64; smoke: 8)]" in help_text  # --batch-size
        assert "--rgb-background" in help_text and "--rgb-eval" not in help_text
        assert "--allow-long-cpu-run" in help_text


def _commands():
    """Every verb (``train ALGO`` for each algorithm) with the context its --help is made in."""
    from lqv_d4rl import algorithms

    top = click.Context(main, info_name="lqv-d4rl", **main.context_settings)
    for name in main.list_commands(top):
        command = main.get_command(top, name)
        context = click.Context(command, parent=top, info_name=name)
        if isinstance(command, click.Group):
            for algorithm in algorithms.names():
                sub = command.get_command(context, algorithm)
                yield f"{name} {algorithm}", sub, click.Context(sub, parent=context,
                                                               info_name=algorithm)
        else:
            yield name, command, context


def _has_default(param):
    """Whether an option has a default worth showing (not None, nor unset, nor a repeatable)."""
    unset = getattr(click.core, "UNSET", None)  # click >= 8.3 marks "no default" with a sentinel
    none = param.multiple or param.default is None or (unset is not None and param.default is unset)
    return isinstance(param.show_default, str) or not none


def test_every_verb_shows_every_default():
    for name, command, context in _commands():
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.required:
                continue
            if _has_default(param) and not param.is_flag:
                record = " ".join(param.get_help_record(context)[1].split())
                assert "[default:" in record or "default:" in (param.help or ""), \
                    f"lqv-d4rl {name} {param.opts[0]}: {record}"
    generate_help = " ".join(run_cli("generate", "--help").output.split())
    assert "--env-workers" in generate_help and "--render-workers" in generate_help
    assert "--workers " not in generate_help  # the deprecated name is hidden
    assert "[default: (cpu for sac-state, smoke for tia)]" in generate_help
    assert "--behaviour [sac-state|tia] sac-state (recommended" in generate_help
    assert "--env-workers INTEGER RANGE tia only" in generate_help
    evaluate_help = " ".join(run_cli("evaluate", "--help").output.split())
    assert ("--eval-workers INTEGER RANGE Processes that play evaluation episodes in parallel. "
            "[default: 1; x>=1]") in evaluate_help


# ------------------------------------------------------------- one name, one meaning; old names


def test_the_alias_helper_warns_and_refuses_both_names():
    @click.command()
    @deprecated_alias("--workers", "--eval-workers", type=int)
    @click.option("--eval-workers", type=int, default=1, help="Processes.")
    def command(eval_workers):
        click.echo(f"eval_workers={eval_workers}")

    runner = CliRunner()
    assert runner.invoke(command, []).output.strip() == "eval_workers=1"
    result = runner.invoke(command, ["--workers", "3"])
    assert result.exit_code == 0 and "eval_workers=3" in result.output
    assert ("Warning: option --workers of `command` is deprecated and will be removed; use "
            "--eval-workers instead.") in result.output
    result = runner.invoke(command, ["--workers", "3", "--eval-workers", "2"])
    assert result.exit_code == 2
    assert "--workers is the deprecated name of --eval-workers; give --eval-workers only" in \
        result.output


def test_train_rgb_eval_is_an_old_name_of_rgb_background(walker_root, tmp_path):
    with registered(MEAN_BC):
        result = run_cli("train", "mean_bc", DATASET, "--preset", "smoke", "--device", "cpu",
                         "--root", walker_root, "--out", tmp_path / "run", "--rgb-eval")
    assert result.exit_code == 0, result.output
    assert "option --rgb-eval of `main train mean_bc` is deprecated" in result.output
    assert "use --rgb-background instead" in result.output
    assert (tmp_path / "run" / "eval_rgb.json").is_file()


def test_evaluate_workers_is_an_old_name_of_eval_workers(walker_root, tmp_path):
    with registered(MEAN_BC):
        assert run_cli("train", "mean_bc", DATASET, "--preset", "smoke", "--device", "cpu",
                       "--root", walker_root, "--out", tmp_path / "run").exit_code == 0
        new = run_cli("evaluate", tmp_path / "run", "--eval-workers", "1", "--episodes", "1")
        old = run_cli("evaluate", tmp_path / "run", "--workers", "1", "--episodes", "1")
    assert new.exit_code == 0 and "deprecated" not in new.output
    assert old.exit_code == 0, old.output
    assert "option --workers of `main evaluate` is deprecated" in old.output
    assert "use --eval-workers instead" in old.output


def test_leaderboard_workers_is_an_old_name_of_parallel_runs(walker_root, tmp_path):
    with registered(MEAN_BC):
        result = run_cli("leaderboard", "--methods", "mean_bc", "--datasets", DATASET, "--seeds",
                         "1", "--preset", "smoke", "--root", walker_root, "--device", "cpu",
                         "--out", tmp_path / "lb", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "use --parallel-runs instead" in result.output
    assert "1 worker process(es) on cpu" in result.output


@pytest.mark.parametrize("behaviour, old_means, wrong", [
    ("tia", "--env-workers", "--render-workers"),
    ("sac-state", "--render-workers", "--env-workers"),
])
def test_generate_workers_splits_into_env_and_render_workers(behaviour, old_means, wrong,
                                                             monkeypatch, tmp_path):
    import collectors.generate

    calls = []

    def fake_generate(task, **options):
        calls.append(options["workers"])
        return type("Result", (), {"folders": {}})()

    monkeypatch.setattr(collectors.generate, "generate", fake_generate)
    common = ["generate", "walker_walk", "--behaviour", behaviour, "--root", tmp_path]
    result = run_cli(*common, "--workers", "3")
    assert result.exit_code == 0, result.output
    assert f"use {old_means} instead" in result.output and calls == [3]
    assert run_cli(*common, old_means, "2").exit_code == 0 and calls == [3, 2]
    result = run_cli(*common, wrong, "2")
    assert result.exit_code == 2 and f"{wrong} does not apply to --behaviour {behaviour}" in \
        error_line(result)
    assert run_cli(*common).exit_code == 0 and calls[-1] == 1


def test_rerender_workers_is_an_old_name_of_render_workers(monkeypatch, tmp_path):
    import lqv_d4rl.rerender

    calls = []
    monkeypatch.setattr(lqv_d4rl.rerender, "rerender",
                        lambda source, new_id, **options: calls.append(options["workers"]) or
                        tmp_path)
    common = ["rerender", DATASET, "--video-dir", "procedural", "--id", "copy"]
    assert run_cli(*common, "--render-workers", "2").exit_code == 0
    result = run_cli(*common, "--workers", "3")
    assert result.exit_code == 0 and "use --render-workers instead" in result.output
    assert calls == [2, 3]


def test_python_evaluate_names_the_first_episode_seed(walker_root):
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.evaluation import evaluate

    class Still:
        def reset(self):
            pass

        def __call__(self, observation):
            return np.zeros(6, np.float32)

    env_kwargs = load_dataset(walker_root / DATASET).eval_env_kwargs()
    new = evaluate(Still(), env_kwargs, episodes=1, first_episode_seed=5, max_steps=2)
    with pytest.warns(DeprecationWarning, match="first_episode_seed"):
        old = evaluate(Still(), env_kwargs, episodes=1, seed=5, max_steps=2)
    assert new["first_episode_seed"] == old["first_episode_seed"] == 5 and "seed" not in new
    assert new["returns"] == old["returns"]


def test_run_experiment_rgb_eval_is_an_old_name(walker_root, tmp_path):
    from lqv_d4rl.experiment import run_experiment

    with registered(MEAN_BC), pytest.warns(DeprecationWarning, match="rgb_background"):
        run_experiment("mean_bc", DATASET, preset="smoke", root=walker_root, out=tmp_path / "run",
                       rgb_eval=True, progress=False, echo=lambda message: None)
    assert (tmp_path / "run" / "eval_rgb.json").is_file()


def test_transition_and_sequence_batches_name_the_terminal_flag_alike(tmp_path):
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.samplers import TransitionSampler, make_sequence_sampler

    data = load_dataset(write_tiny_dataset(tmp_path / DATASET))
    transitions = TransitionSampler(data, batch_size=4, seed=0).sample()
    sequences = make_sequence_sampler(data, "random", batch_size=2, seq_len=5, seed=0).sample()
    shared = {"action", "reward", "discount", "is_terminal"}
    assert shared <= set(transitions) and shared <= set(sequences)
    assert "terminal" not in transitions


# ------------------------------------------------------------------ hints keep the user's --root


def test_missing_dataset_hints_repeat_the_root_and_suggest_the_cpu_recipe(tmp_path):
    root = tmp_path / "my data"
    write_tiny_dataset(root / DATASET)
    line = error_line(run_cli("info", "walker_walk-medium", "--root", root))
    quoted = f"'{root}'"  # the path has a space: quoted as a shell would need it
    assert (f"`lqv-d4rl generate walker_walk --behaviour sac-state --preset cpu --root {quoted}`"
            in line)
    assert f"`lqv-d4rl generate walker_walk --preset smoke --levels medium --root {quoted}`" in line
    assert f"`lqv-d4rl download walker_walk-medium --root {quoted}`" in line
    line = error_line(run_cli("info", "car_racing-random", "--root", root))
    assert (f"`lqv-d4rl generate car_racing --behaviour sac-state --preset cpu --root {quoted}`"
            in line)  # car_racing has the CPU recipe too


def test_a_leaderboard_with_missing_datasets_repeats_the_root(tmp_path):
    with registered(MEAN_BC):
        result = run_cli("leaderboard", "--methods", "mean_bc", "--datasets", "walker_walk-*",
                         "--preset", "smoke", "--root", tmp_path / "empty", "--device", "cpu",
                         "--out", tmp_path / "lb")
    line = error_line(result)
    assert "--behaviour sac-state --preset cpu --root" in line and str(tmp_path / "empty") in line


# ---------------------------------------------------------------- report-only without runs


def test_report_only_on_a_folder_without_runs_says_so(tmp_path):
    for out in (tmp_path / "nothing", tmp_path):  # a folder that does not exist, an empty one
        result = run_cli("leaderboard", "--report-only", "--out", out, "--root", tmp_path / "x")
        assert result.exit_code == 1
        line = error_line(result)
        assert f"no runs to report: {out}" in line and "without --report-only" in line
        assert "not in" not in line  # nothing about missing datasets
