"""Bad input on the command line: each mistake ends in a one-line error that says what is wrong and
what to do (no traceback), and leaves finished data alone."""

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_episode, write_tiny_dataset

from lqv_d4rl.cli import main


def run_cli(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def assert_one_line_error(result, exit_code, *fragments):
    """Exit ``exit_code`` (1: failed, 2: bad usage) with an 'Error: ...' line and no traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A dataset root with the tiny 'walker_walk-medrep' dataset; $LQV_D4RL_ROOT points at it."""
    write_tiny_dataset(tmp_path / "root" / "walker_walk-medrep")
    monkeypatch.setenv("LQV_D4RL_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "root"


def snapshot(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- mistyped tasks


@pytest.mark.parametrize("verb", ["generate", "preview-env"])
@pytest.mark.parametrize("task", ["walker-walk", "Walker_Walk", "walker_wlak"])
def test_mistyped_task_gets_a_did_you_mean(verb, task, tmp_path):
    # TASK is checked while parsing: a usage error
    assert_one_line_error(run_cli(verb, task, "--out", tmp_path / "a.gif") if verb == "preview-env"
                          else run_cli(verb, task), 2, "'TASK'", f"unknown task {task!r}",
                          "Did you mean 'walker_walk'?")


def test_dataset_id_given_as_task_names_the_task(tmp_path):
    assert_one_line_error(run_cli("generate", "walker_walk-medrep"), 2,
                          "its task is 'walker_walk'", "--levels medrep")
    result = run_cli("preview-env", "walker_walk-medrep", "--out", tmp_path / "a.gif")
    assert_one_line_error(result, 2, "its task is 'walker_walk'")
    assert "--levels" not in result.output  # preview-env has no --levels


# ------------------------------------------------------------------------ mistyped dataset ids


@pytest.mark.parametrize("verb, extra", [
    ("info", []), ("verify", []), ("preview", ["--out", "p.gif"]),
    ("export-minari", ["--name", "ns/x-v0", "--minari-root", "minari"]),
    ("semopo", ["--preset", "smoke"]),
])
def test_mistyped_dataset_id_gets_a_did_you_mean(root, verb, extra):
    result = run_cli(verb, "walker_walk_medrep", *extra)
    assert_one_line_error(result, 1, "'walker_walk_medrep'", "Did you mean 'walker_walk-medrep'")


def test_task_given_as_dataset_lists_its_datasets(root):
    assert_one_line_error(run_cli("info", "walker_walk"), 1,
                          "'walker_walk' is a task", "'walker_walk-medrep'")
    assert_one_line_error(run_cli("verify", "walker-walk"), 1,
                          "looks like the task 'walker_walk'", "'walker_walk-medium'")


def test_unrelated_name_gets_no_suggestion(root):
    result = run_cli("info", "nothing_like_it")
    assert_one_line_error(result, 1, "no dataset 'nothing_like_it'")
    assert "Did you mean" not in result.output


@pytest.mark.parametrize("verb, extra", [
    ("info", []), ("verify", []), ("preview", ["--out", "p.gif"]),
    ("upload", ["--repo-id", "me/x"]),
])
def test_the_typed_id_is_never_suggested(root, verb, extra, monkeypatch):
    monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", "http://127.0.0.1:9")  # never reached
    result = run_cli(verb, "walker_walk-medium", *extra)  # a right id, just not on disk
    assert_one_line_error(result, 1, "'walker_walk-medium' is not in", "lqv-d4rl generate")
    assert "Did you mean" not in result.output
    result = run_cli(verb, "Walker_Walk-medium", *extra)  # only the case differs
    assert "Did you mean 'walker_walk-medium'?" in result.output  # that one only


def test_task_hints_never_suggest_the_typed_task():
    from lqv_d4rl.cli.hints import dataset_hint, task_hint
    from lqv_d4rl.registry import DATASET_IDS
    from lqv_d4rl.tasks import TASKS

    for task in TASKS:
        assert repr(task) not in task_hint(task)
    for dataset_id in DATASET_IDS:
        assert dataset_hint(dataset_id) == ""


def test_import_npz_with_mistyped_benchmark_id_writes_nothing(root, tmp_path):
    (tmp_path / "npz").mkdir()
    result = run_cli("import-npz", tmp_path / "npz", "--id", "walker_walk_medrep")
    assert_one_line_error(result, 2, "--id", "Did you mean 'walker_walk-medrep'", "--task")
    assert sorted(path.name for path in root.iterdir()) == ["walker_walk-medrep"]


def test_upload_of_a_mistyped_id_gets_a_did_you_mean(root, monkeypatch):
    monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", "http://127.0.0.1:9")  # never reached
    result = run_cli("upload", "walker_walk_medrep", "--repo-id", "me/x")
    assert_one_line_error(result, 1, "Did you mean 'walker_walk-medrep'")


def test_download_of_an_id_absent_from_the_hub_gets_a_did_you_mean(root, tmp_path, monkeypatch):
    from hub_server import HubServer

    from lqv_d4rl.hub import upload_dataset

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with HubServer() as server:
        monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", server.url)
        upload_dataset(root / "walker_walk-medrep", repo_id="team/lqv", token="test-token")
        result = run_cli("download", "walker_walk_medrep", "--repo-id", "team/lqv")
    assert_one_line_error(result, 1, "team/lqv", "Did you mean 'walker_walk-medrep'")


# ------------------------------------------------------------------------------ bad options


@pytest.mark.parametrize("name", ["foo", "ns/foo-v", "foo-vx"])
def test_minari_name_without_version_is_refused(root, name):
    result = run_cli("export-minari", "walker_walk-medrep", "--name", name,
                     "--minari-root", "minari")
    assert_one_line_error(result, 2, "not a Minari dataset id", "-v<version>")


USAGE_ERRORS = [
    (["info", "walker_wlak-medrep"], "Did you mean 'walker_walk-medrep'"),
    (["verify", "bad name!"], "invalid dataset id"),
    (["download", "walker_walk-medrp"], "unknown dataset id"),
    (["download", "walker_walk-medrep", "--repo-id", "not a repo"], "--repo-id"),
    (["list", "--remote", "--repo-id", "a/b/c"], "--repo-id"),
    (["upload", "walker_walk-medrep", "--repo-id", "no repo"], "--repo-id"),
    (["export-minari", "walker_walk-medrep", "--name", "ns/x!-v0"], "--name"),
    (["import-npz", ".", "--id", "bad/id", "--task", "walker_walk"], "invalid dataset id"),
    (["import-npz", ".", "--id", "mine", "--task", "walker_wlak"], "unknown task"),
    (["preview-env", "walker_wlak", "--out", "a.gif"], "TASK"),
    (["generate", "walker_walk", "--levels", "random,best"], "--levels"),
    (["generate", "walker_walk", "--device", "gpu"], "--device"),
    (["train", "semopo", "walker_walk-medrp"], "unknown dataset id"),
]


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS,
                         ids=[" ".join(args[:2]) for args, _ in USAGE_ERRORS])
def test_every_usage_error_exits_2(root, args, fragment, monkeypatch):
    monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", "http://127.0.0.1:9")  # never reached
    assert_one_line_error(run_cli(*args), 2, fragment)
    assert sorted(path.name for path in root.iterdir()) == ["walker_walk-medrep"]


def _all_commands():
    from click.testing import CliRunner  # noqa: F401  (click builds the lazy commands on demand)

    context = main.make_context("lqv-d4rl", ["--help"], resilient_parsing=True)
    return {name: main.get_command(context, name) for name in main.list_commands(context)}


def test_every_option_has_help_and_the_root_default_has_one_wording():
    from lqv_d4rl.cli.options import ROOT_DEFAULT

    for name, command in _all_commands().items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"lqv-d4rl {name} {param.opts[0]} has no help"
                if param.name == "root" or "LQV_D4RL_ROOT" in param.help:
                    assert ROOT_DEFAULT in param.help, f"lqv-d4rl {name} {param.opts[0]}"


@pytest.mark.parametrize("option, value, fragment", [
    ("--seed", "-1", "0<=x<="),
    ("--device", "gpu", "use cpu, cuda or cuda:N"),
])
def test_semopo_rejects_bad_seed_and_device_before_training(root, option, value, fragment):
    result = run_cli("semopo", "walker_walk-medrep", "--preset", "smoke", option, value,
                     "--out", "run")
    assert_one_line_error(result, 2, option, fragment)


def test_preview_env_rejects_a_negative_seed(tmp_path):
    result = run_cli("preview-env", "walker_walk", "--out", tmp_path / "a.gif", "--seed", "-1")
    assert_one_line_error(result, 2, "--seed")


# ---------------------------------------------------------------------- unwritable outputs


def test_output_under_a_file_is_a_one_line_error_and_data_is_kept(root, tmp_path):
    before = snapshot(root / "walker_walk-medrep")
    (tmp_path / "notes.txt").write_text("x")
    result = run_cli("preview", "walker_walk-medrep", "--out", tmp_path / "notes.txt" / "p.gif")
    assert_one_line_error(result, 1, "notes.txt' is a file")
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "ep0.npz", **make_episode(length=5))
    result = run_cli("import-npz", tmp_path / "npz", "--id", "y", "--task", "walker_walk",
                     "--root", tmp_path / "notes.txt" / "sub")
    assert_one_line_error(result, 1, "Not a directory", "check the path")
    assert snapshot(root / "walker_walk-medrep") == before


@pytest.mark.parametrize("target, args, kept", [
    ("lqv_d4rl.leaderboard.run_leaderboard", ["leaderboard", "--out", "{tmp}/board"],
     "finished runs are kept in {tmp}/board"),
    ("lqv_d4rl.rerender.rerender", ["rerender", "walker_walk-medium", "--video-dir",
                                    "procedural", "--id", "again"],
     "the shards rendered so far are kept for 'again'"),
])
def test_ctrl_c_ends_in_one_line_that_says_how_to_go_on(tmp_path, monkeypatch, target, args,
                                                         kept):
    """(generate's own Ctrl-C test is in test_generate.py)"""
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, stop)
    result = run_cli(*[arg.format(tmp=tmp_path) for arg in args])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == (f"interrupted: {kept.format(tmp=tmp_path)}; run the same "
                                     "command again to continue")
