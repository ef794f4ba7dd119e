"""The dataset verbs of the ``lqv-d4rl`` command: list, info, verify, preview, import-npz and
export-minari, run through click's CliRunner on tiny datasets written by the real ShardWriter."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_episode, tiny_policy_id, write_tiny_dataset

from lqv_d4rl.cli import main
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.format import ShardWriter, read_manifest
from lqv_d4rl.registry import DATASET_IDS, get_recipe
from lqv_d4rl.stats import format_statistics_table, return_statistics


def run_cli(*args):
    """Invoke ``lqv-d4rl args...`` and return click's Result (exceptions are caught by click)."""
    return CliRunner().invoke(main, [str(arg) for arg in args])


def assert_clean_failure(result, *fragments, exit_code=1):
    """Exit code 1 (2: a usage error), an 'Error: ...' line (no traceback) holding every fragment."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


@pytest.fixture
def root(tmp_path):
    """A dataset root with the tiny 'walker_walk-medrep' dataset in it."""
    write_tiny_dataset(tmp_path / "root" / "walker_walk-medrep")
    return tmp_path / "root"


# ----------------------------------------------------------------------------------- stats


def test_return_statistics_match_numpy():
    returns = np.random.default_rng(3).normal(100, 30, size=57)
    stats = return_statistics(returns)
    assert stats["episodes"] == 57
    assert stats["mean"] == pytest.approx(returns.mean())
    assert stats["std"] == pytest.approx(returns.std())
    assert stats["min"] == returns.min() and stats["max"] == returns.max()
    for key, q in (("p25", 25), ("median", 50), ("p75", 75)):
        assert stats[key] == pytest.approx(np.percentile(returns, q))
    assert return_statistics([])["mean"] is None


def test_statistics_table_aligns_rows_and_marks_missing_values():
    table = format_statistics_table(
        [("ours", return_statistics([1.0, 2.0, 3.0])), ("paper", {"episodes": 200, "mean": 86.6})]
    )
    header, ours, paper = table.splitlines()
    assert header.split() == ["episodes", "mean", "std", "min", "p25", "median", "p75", "max"]
    assert ours.split() == ["ours", "3", "2.0", "0.8", "1.0", "1.5", "2.0", "2.5", "3.0"]
    assert paper.split() == ["paper", "200", "86.6"] + ["-"] * 6
    assert len({len(line) for line in (header, ours)}) == 1


# ------------------------------------------------------------------------------------ list


def test_list_shows_registry_presence_and_custom_datasets(root):
    write_tiny_dataset(root / "my_data", dataset_id="my_data", task="hopper_hop", level="custom")
    writer = ShardWriter(root / "cheetah_run-random", dataset_id="cheetah_run-random",
                         task="cheetah_run", level="random", action_dim=6, max_shard_bytes=1)
    writer.add_episode(make_episode(5, 6), policy_id="p")  # a finished shard; never closed

    result = run_cli("list", "--root", root)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert set(DATASET_IDS) <= set(lines)
    assert result.output.splitlines()[1].split() == [
        "dataset_id", "task", "level", "on", "disk", "paper"]
    # what is on disk, with its real count, next to the paper's count
    assert lines["walker_walk-medrep"].split()[1:] == [
        "walker_walk", "medrep", "complete", "(6", "episodes)", "400", "episodes"]
    assert lines["walker_walk-random"].split()[1:] == [
        "walker_walk", "random", "missing", "200", "episodes"]
    assert "incomplete (1 episodes so far)" in lines["cheetah_run-random"]
    assert lines["my_data"].split()[1:] == [
        "hopper_hop", "custom", "complete", "(6", "episodes)", "-"]

    rows = json.loads(run_cli("list", "--root", root, "--json").output)
    by_id = {row["dataset_id"]: row for row in rows}
    assert by_id["hopper_hop-medium"] == {"dataset_id": "hopper_hop-medium", "task": "hopper_hop",
                                          "level": "medium", "episodes": None,
                                          "paper_episodes": 200, "local": "missing",
                                          "custom": False}
    medrep = by_id["walker_walk-medrep"]
    assert (medrep["episodes"], medrep["paper_episodes"]) == (6, 400)
    assert by_id["cheetah_run-random"]["episodes"] == 1
    assert by_id["my_data"]["custom"] is True
    assert (by_id["my_data"]["episodes"], by_id["my_data"]["paper_episodes"]) == (6, None)


def test_list_reports_a_damaged_dataset(root):
    (root / "walker_walk-medrep" / "shard-00001.h5").unlink()
    result = run_cli("list", "--root", root)
    assert "damaged (shard-00001.h5 missing)" in result.output


def test_list_remote_shows_what_a_hub_repo_holds(root, tmp_path, monkeypatch):
    from hub_server import HubServer

    from lqv_d4rl.hub import upload_dataset

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with HubServer() as server:
        monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", server.url)
        upload_dataset(root / "walker_walk-medrep", repo_id="team/lqv", token="test-token")
        result = run_cli("list", "--remote", "--repo-id", "team/lqv", "--root", root)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[2].split() == ["walker_walk-medrep", "complete", "(6", "episodes)"]
        rows = json.loads(run_cli("list", "--remote", "--repo-id", "team/lqv", "--json",
                                  "--root", tmp_path / "elsewhere").output)
        assert rows == [{"dataset_id": "walker_walk-medrep", "local": "missing"}]
        assert_clean_failure(run_cli("list", "--remote", "--repo-id", "team/none"), "team/none")


# ------------------------------------------------------------------------------------ info


def test_info_json_matches_numpy_on_the_returns(root):
    result = run_cli("info", "walker_walk-medrep", "--root", root, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    returns = load_dataset(root / "walker_walk-medrep").returns
    stats = report["returns"]
    assert stats["episodes"] == len(returns) == 6
    assert stats["mean"] == pytest.approx(np.mean(returns))
    assert stats["std"] == pytest.approx(np.std(returns))
    assert stats["median"] == pytest.approx(np.median(returns))
    assert stats["p75"] == pytest.approx(np.percentile(returns, 75))
    paper = get_recipe("walker_walk-medrep").paper_returns
    assert report["paper_returns"] == {"episodes": 400, **paper}
    assert [p["policy_id"] for p in report["policies"]] == [tiny_policy_id(i) for i in range(3)]
    assert [p["episodes"] for p in report["policies"]] == [2, 2, 2]
    assert report["policies"][1]["mean_return"] == pytest.approx(returns[2:4].mean())
    assert report["policies"][2]["policy_step"] == 2000
    assert report["num_steps"] == 6 * 21
    assert report["bytes_in_memory"] == 6 * 21 * (64 * 64 * 3 + 4 * 6 + 4 + 4 + 3)
    files = (root / "walker_walk-medrep").iterdir()
    assert report["bytes_on_disk"] == sum(path.stat().st_size for path in files)
    assert report["provenance"]["distractor"] == {"kind": "test-noise"}
    assert report["provenance"]["seed"] == 0


def test_info_table_shows_ours_next_to_the_paper_row(root):
    result = run_cli("info", root / "walker_walk-medrep")  # by path this time
    assert result.exit_code == 0, result.output
    returns = load_dataset(root / "walker_walk-medrep").returns
    lines = result.output.splitlines()
    header_row = lines.index("Episodic return:") + 1
    ours, paper = lines[header_row + 1], lines[header_row + 2]
    assert ours.startswith("walker_walk-medrep")
    assert ours.split()[1:] == [
        "6", *(f"{value:.1f}" for value in (returns.mean(), returns.std(), returns.min(),
                                            *np.percentile(returns, [25, 50, 75]), returns.max()))
    ]
    assert paper.startswith("paper (Table 3)")
    assert paper.split()[3:] == ["400", "106.6", "79.7", "5.0", "45.4", "81.3", "148.8", "398.2"]
    assert "Policies: 3" in result.output
    assert "distractor:   test-noise" in result.output
    assert "episodes: 6 (paper: 400)" in lines  # flagged: the paper's medrep has 400


def test_info_marks_each_statistic_against_the_papers_tolerances(root):
    result = run_cli("info", "walker_walk-medrep", "--root", root)
    assert "Against the paper's Table 3 (tolerances in DATASETS.md): NOT within the tolerances" \
        in result.output
    lines = result.output.splitlines()
    table = lines[lines.index("Against the paper's Table 3 (tolerances in DATASETS.md): NOT within "
                              "the tolerances") + 2:]
    rows = {line.split()[1]: line for line in table if line.startswith("walker_walk-medrep ")}
    assert set(rows) == {"episodes", "mean", "median"}
    assert rows["episodes"].endswith("FAIL: 6 episodes, the paper has 400")
    report = json.loads(run_cli("info", "walker_walk-medrep", "--root", root, "--json").output)
    mean = next(v for v in report["fidelity"] if v["statistic"] == "mean")
    assert (mean["paper"], mean["low"], mean["high"]) == pytest.approx((106.6, 74.62, 138.58))
    assert mean["passed"] == (74.62 <= report["returns"]["mean"] <= 138.58)


def test_info_says_when_the_episode_count_is_the_papers(tmp_path):
    folder = write_tiny_dataset(tmp_path / "walker_walk-random", level="random", num_policies=200,
                                episodes_per_policy=1, length=2)
    result = run_cli("info", folder)
    assert result.exit_code == 0, result.output
    assert "episodes: 200 (as in the paper)" in result.output.splitlines()
    assert json.loads(run_cli("info", folder, "--json").output)["paper_episodes"] == 200
    custom = write_tiny_dataset(tmp_path / "mine", dataset_id="mine", level="custom")
    assert "episodes: 6" in run_cli("info", custom).output.splitlines()


def test_info_condenses_many_policies(tmp_path):
    folder = write_tiny_dataset(tmp_path / "many", dataset_id="many", num_policies=30,
                                episodes_per_policy=1, length=3)
    output = run_cli("info", folder).output
    assert "Policies: 30" in output
    assert "... 18 more policies ..." in output
    assert tiny_policy_id(0) in output and tiny_policy_id(29) in output
    assert tiny_policy_id(15) not in output


def test_info_of_a_missing_or_mistyped_dataset_fails_cleanly(root):
    assert_clean_failure(run_cli("info", "walker_walk-medium", "--root", root),
                         "walker_walk-medium", "download")
    assert_clean_failure(run_cli("info", "walker_walk-medrp", "--root", root),
                         "Did you mean 'walker_walk-medrep'", exit_code=2)


# ---------------------------------------------------------------------------------- verify


def test_verify_passes_a_good_dataset(root):
    result = run_cli("verify", "walker_walk-medrep", "--root", root)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK")


def test_verify_names_the_tampered_shard_and_exits_1(root):
    shard = root / "walker_walk-medrep" / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_cli("verify", "walker_walk-medrep", "--root", root)
    assert result.exit_code == 1
    bad_lines = [line for line in result.output.splitlines() if line.startswith("BAD")]
    assert len(bad_lines) == 1 and "shard-00001.h5" in bad_lines[0]


def test_verify_flags_an_unfinished_dataset(tmp_path):
    writer = ShardWriter(tmp_path / "hopper_hop-random", dataset_id="hopper_hop-random",
                         task="hopper_hop", level="random", action_dim=4, max_shard_bytes=1)
    writer.add_episode(make_episode(5, 4), policy_id="p")  # a finished shard; never closed
    result = run_cli("verify", tmp_path / "hopper_hop-random")
    assert result.exit_code == 0 and "INCOMPLETE" in result.output
    result = run_cli("verify", tmp_path / "hopper_hop-random", "--require-complete")
    assert result.exit_code == 1 and "incomplete" in result.output


# --------------------------------------------------------------------------------- preview


def test_preview_writes_an_animated_gif(root, tmp_path):
    from PIL import Image

    out = tmp_path / "preview.gif"
    result = run_cli("preview", "walker_walk-medrep", "--root", root, "--out", out,
                     "--episodes", "0,3", "--every", "2")
    assert result.exit_code == 0, result.output
    with Image.open(out) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 2 * 11  # 21 entries, every 2nd frame, two episodes


def test_preview_writes_a_png_contact_sheet(root, tmp_path):
    from PIL import Image

    out = tmp_path / "sheet.png"
    result = run_cli("preview", "walker_walk-medrep", "--root", root, "--out", out,
                     "--episodes", "1,2,5", "--frames", "4", "--scale", "1")
    assert result.exit_code == 0, result.output
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        width, height = sheet.size
    assert width >= 4 * 64 and height >= 3 * 64  # one row of 4 frames per episode
    assert width < 5 * 64 and height < 3 * (64 + 60)  # plus a caption and a label line per row


def test_default_png_preview_spreads_labelled_rows_over_the_dataset(tmp_path, monkeypatch):
    from lqv_d4rl import images

    folder = write_tiny_dataset(tmp_path / "walker_walk-medrep", num_policies=5,
                                episodes_per_policy=3, length=40)
    drawn = []
    monkeypatch.setattr(images, "labelled_sheet",
                        lambda rows, scale: drawn.extend(rows) or images.Image.new("RGB", (8, 8)))
    result = run_cli("preview", folder, "--out", tmp_path / "sheet.png")
    assert result.exit_code == 0, result.output
    data = load_dataset(folder)
    assert [row.caption.split(" |")[0] for row in drawn] == [
        "episode 0", "episode 5", "episode 9", "episode 14"]  # 4 spread over 15, ends included
    last = drawn[-1]
    assert last.caption == (f"episode 14 | policy {tiny_policy_id(4)} | return "
                            f"{data.returns[14]:.1f} | 40 entries")
    assert last.labels == [f"step {t}" for t in (0, 6, 11, 17, 22, 28, 33, 39)]  # spread over 40
    start = data.episode_starts[14]
    assert np.array_equal(last.frames, data.images[start + np.array([0, 6, 11, 17, 22, 28, 33, 39])])
    drawn.clear()
    run_cli("preview", folder, "--out", tmp_path / "sheet.png", "--episodes", "2", "--every", "10")
    assert [row.labels for row in drawn] == [["step 0", "step 10", "step 20", "step 30"]]


def test_labelled_sheet_draws_captions_and_labels(tmp_path):
    from PIL import Image

    from lqv_d4rl.images import SheetRow, save_labelled_sheet

    frames = np.zeros((3, 64, 64, 3), np.uint8) + np.array([200, 10, 90], np.uint8)  # no gray
    rows = [SheetRow(frames, "episode 0 | policy p | return 1.0", ["step 0", "step 5", "step 9"]),
            SheetRow(frames[:2], "a caption far too long to fit " * 10, ["step 0", "step 1"])]
    path = save_labelled_sheet(rows, tmp_path / "sheet.png", scale=1)
    with Image.open(path) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    assert pixels.shape[1] == 3 * 64 + 2 * 2
    caption_band = pixels[:10]
    assert (caption_band > 150).any() and (caption_band < 50).any()  # light text on dark
    assert (pixels == [200, 10, 90]).all(axis=2).sum() == 5 * 64 * 64  # every frame drawn whole


def test_preview_rejects_bad_episodes_and_suffixes(root, tmp_path):
    result = run_cli("preview", "walker_walk-medrep", "--root", root, "--out",
                     tmp_path / "x.gif", "--episodes", "0,6")
    assert result.exit_code == 2 and "out of range" in result.output
    result = run_cli("preview", "walker_walk-medrep", "--root", root, "--out", tmp_path / "x.mp4")
    assert result.exit_code == 2 and ".gif or .png" in result.output


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_preview_of_a_dataset_without_episodes_says_so(tmp_path, suffix):
    from lqv_d4rl.format import ShardWriter

    folder = tmp_path / "walker_walk-random"
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(folder, dataset_id="walker_walk-random", task="walker_walk",
                         level="random", action_dim=6):
            raise KeyboardInterrupt  # stopped before its first episode
    result = run_cli("preview", folder, "--out", tmp_path / f"x{suffix}")
    assert result.exit_code == 1 and "holds no finished episode yet" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------ import-npz


def write_vd4rl_folder(folder, *, lengths=(11, 9, 13, 7), action_dim=6, flags=False):
    """Episodes as V-D4RL writes them: '<timestamp>-<index>-<length>.npz', keys image/action/
    reward/discount (reward and discount as (L, 1) columns), odd episodes channel-first, the last
    one ending in a terminal state (discount 0). Returns the episodes in file-name order."""
    folder.mkdir(parents=True, exist_ok=True)
    episodes = []
    for index, length in enumerate(lengths):
        episode = make_episode(length, action_dim, seed=100 + index,
                               terminal=index == len(lengths) - 1)
        image = episode["image"].transpose(0, 3, 1, 2) if index % 2 else episode["image"]
        arrays = {"image": image, "action": episode["action"],
                  "reward": episode["reward"][:, None], "discount": episode["discount"][:, None]}
        if flags:
            arrays.update({key: episode[key] for key in ("is_first", "is_last", "is_terminal")})
        np.savez_compressed(folder / f"20220301T1200{index:02d}-{index}-{length}.npz", **arrays)
        episodes.append(episode)
    return episodes


def assert_same_episodes(dataset, episodes):
    assert len(dataset) == len(episodes)
    for index, expected in enumerate(episodes):
        loaded = dataset.episode(index)
        for key, array in expected.items():
            np.testing.assert_array_equal(np.asarray(loaded[key]), array, err_msg=key)


def test_import_npz_round_trip_with_a_csv_policy_map(tmp_path):
    episodes = write_vd4rl_folder(tmp_path / "vd4rl")
    policy_map = tmp_path / "policies.csv"
    policy_map.write_text("file,policy_id,policy_step\n"
                          "20220301T120001-1-9.npz,checkpoint-b,20000\n"
                          "# the rest come from the first checkpoint\n"
                          "*.npz,checkpoint-a,10000\n")
    result = run_cli("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-medrep",
                     "--root", tmp_path / "root", "--policy-map", policy_map)
    assert result.exit_code == 0, result.output
    assert "Imported 4 episodes" in result.output

    dataset = load_dataset("walker_walk-medrep", root=tmp_path / "root")
    assert_same_episodes(dataset, episodes)  # flags rebuilt, channel-first transposed
    assert dataset.is_terminal.sum() == 1 and dataset.is_terminal[-1]
    assert dataset.policy_ids.tolist() == ["checkpoint-a", "checkpoint-b", "checkpoint-a",
                                           "checkpoint-a"]
    assert dataset.policy_steps.tolist() == [10000, 20000, 10000, 10000]
    manifest = read_manifest(tmp_path / "root" / "walker_walk-medrep")
    assert manifest["provenance"]["source"] == "npz-import"
    assert manifest["provenance"]["source_files"][0] == "20220301T120000-0-11.npz"


def test_import_npz_keeps_given_flags_and_a_json_map_for_a_custom_id(tmp_path):
    episodes = write_vd4rl_folder(tmp_path / "vd4rl", lengths=(5, 6), action_dim=4, flags=True)
    policy_map = tmp_path / "policies.json"
    policy_map.write_text(json.dumps({"*-0-5.npz": {"policy_id": "early", "policy_step": 3},
                                      "*-1-*": "late"}))
    result = run_cli("import-npz", tmp_path / "vd4rl", "--id", "hop_import", "--task",
                     "hopper_hop", "--root", tmp_path / "root", "--policy-map", policy_map)
    assert result.exit_code == 0, result.output
    dataset = load_dataset(tmp_path / "root" / "hop_import")
    assert_same_episodes(dataset, episodes)
    assert dataset.policy_ids.tolist() == ["early", "late"]
    assert dataset.policy_steps.tolist() == [3, -1]
    assert read_manifest(tmp_path / "root" / "hop_import")["level"] == "custom"


def test_import_npz_defaults_to_unknown_policy_and_refuses_to_overwrite(tmp_path):
    write_vd4rl_folder(tmp_path / "vd4rl", lengths=(4,))
    args = ("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-random", "--root", tmp_path)
    assert run_cli(*args).exit_code == 0
    assert load_dataset(tmp_path / "walker_walk-random").policy_ids.tolist() == ["unknown"]
    assert_clean_failure(run_cli(*args), "already complete", "--overwrite")
    result = run_cli(*args, "--overwrite", "--policy-id", "random-init")
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "walker_walk-random").policy_ids.tolist() == ["random-init"]


def corrupt(folder, how):
    """Spoil the second episode file of a V-D4RL folder in one of several ways; return its name."""
    path = sorted(folder.glob("*.npz"))[1]
    if how == "unreadable":
        path.write_bytes(b"this is not a zip archive")
    elif how == "missing key":
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files if key != "discount"}
        np.savez(path, **arrays)
    elif how == "inconsistent lengths":
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        arrays["reward"] = arrays["reward"][:-2]
        np.savez(path, **arrays)
    elif how == "wrong image size":
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        arrays["image"] = np.zeros((len(arrays["action"]), 84, 84, 3), np.uint8)
        np.savez(path, **arrays)
    return path.name


@pytest.mark.parametrize("how, message", [
    ("unreadable", "cannot read the npz file"),
    ("missing key", "missing key(s) discount"),
    ("inconsistent lengths", "inconsistent lengths"),
    ("wrong image size", "84, 84, 3"),
])
def test_import_npz_names_the_bad_file_and_writes_nothing(tmp_path, how, message):
    write_vd4rl_folder(tmp_path / "vd4rl")
    name = corrupt(tmp_path / "vd4rl", how)
    result = run_cli("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-medium",
                     "--root", tmp_path / "root")
    assert_clean_failure(result, name, message)
    assert not (tmp_path / "root" / "walker_walk-medium").exists()


def test_import_npz_stopped_by_damaged_pixels_keeps_the_episodes_before_and_resumes(tmp_path):
    episodes = write_vd4rl_folder(tmp_path / "vd4rl")
    damaged = sorted((tmp_path / "vd4rl").glob("*.npz"))[2]
    intact = damaged.read_bytes()
    with np.load(damaged) as data:  # rewrite uncompressed, then flip one pixel byte
        np.savez(damaged, **{key: data[key] for key in data.files})
    spoiled = bytearray(damaged.read_bytes())
    spoiled[len(spoiled) // 2] ^= 0xFF  # inside image.npy, the largest member
    damaged.write_bytes(bytes(spoiled))
    args = ("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-medium", "--root", tmp_path)

    assert_clean_failure(run_cli(*args), damaged.name, "left incomplete with the 2 episode(s)",
                         "--resume")
    assert read_manifest(tmp_path / "walker_walk-medium")["num_episodes"] == 2
    damaged.write_bytes(intact)
    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_episodes(load_dataset(tmp_path / "walker_walk-medium"), episodes)


def test_import_npz_bad_folders_maps_and_ids(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run_cli("import-npz", tmp_path / "empty", "--id", "walker_walk-medium",
                                 "--root", tmp_path), "no .npz files")
    write_vd4rl_folder(tmp_path / "vd4rl", lengths=(4, 5))
    partial_map = tmp_path / "map.csv"
    partial_map.write_text("*-0-4.npz,a\n")
    assert_clean_failure(
        run_cli("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-medium", "--root",
                tmp_path, "--policy-map", partial_map),
        "no policy for 1 file(s): 20220301T120001-1-5.npz",
    )
    bad_step = tmp_path / "steps.csv"
    bad_step.write_text("*,a,ten\n")
    assert_clean_failure(
        run_cli("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-medium", "--root",
                tmp_path, "--policy-map", bad_step),
        "line 1", "'ten' is not an integer",
    )
    assert_clean_failure(run_cli("import-npz", tmp_path / "vd4rl", "--id", "my_walker",
                                 "--root", tmp_path), "--task")
    assert_clean_failure(run_cli("import-npz", tmp_path / "vd4rl", "--id", "my_walker",
                                 "--task", "hopper_hop", "--root", tmp_path), "is --task right")
    assert_clean_failure(run_cli("import-npz", tmp_path / "vd4rl", "--id", "walker_walk-medium",
                                 "--task", "hopper_hop", "--root", tmp_path), "contradicts")


# --------------------------------------------------------------------------- export-minari


def test_export_minari_round_trip(root, tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    minari_root = tmp_path / "minari"
    result = run_cli("export-minari", "walker_walk-medrep", "--root", root,
                     "--name", "lqv-d4rl/walker_walk-medrep-v0", "--minari-root", minari_root)
    assert result.exit_code == 0, result.output

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    exported = minari.load_dataset("lqv-d4rl/walker_walk-medrep-v0")
    ours = load_dataset(root / "walker_walk-medrep")
    assert exported.total_episodes == len(ours) == 6
    assert exported.total_steps == ours.num_steps - len(ours)
    for index, episode in enumerate(exported.iterate_episodes()):
        steps = ours.episode(index)
        np.testing.assert_array_equal(episode.observations, steps["image"])
        np.testing.assert_array_equal(episode.actions, steps["action"][1:])
        np.testing.assert_array_equal(episode.rewards, steps["reward"][1:])
        np.testing.assert_array_equal(episode.terminations, steps["is_terminal"][1:])
        np.testing.assert_array_equal(episode.truncations, [False] * 19 + [True])
        np.testing.assert_array_equal(episode.infos["discount"], steps["discount"])
    metadata = list(exported.storage.get_episode_metadata(range(6)))
    assert [m["policy_id"] for m in metadata] == ours.policy_ids.tolist()
    assert [int(m["policy_step"]) for m in metadata] == ours.policy_steps.tolist()
    assert [int(m["seed"]) for m in metadata] == ours.episode_seeds.tolist()
    score = minari.get_normalized_score(exported, np.array([5.0, 598.0]))
    np.testing.assert_allclose(score, [0.0, 1.0])

    again = run_cli("export-minari", "walker_walk-medrep", "--root", root,
                    "--name", "lqv-d4rl/walker_walk-medrep-v0", "--minari-root", minari_root)
    assert_clean_failure(again, "already exists", "--overwrite")
    assert_clean_failure(run_cli("export-minari", "walker_walk-medrep", "--root", root,
                                 "--name", "no version", "--minari-root", minari_root),
                         "not a Minari dataset id", exit_code=2)
