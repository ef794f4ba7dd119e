"""Registry and loader: ids and roots, round trips (RAM and lazy), views, combinations, errors."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    flip_byte, make_episode, shard_byte_offsets, tiny_policy_id, write_tiny_dataset,
)
from lqv_d4rl.dataset import Dataset, LazyImages, combine, load_dataset
from lqv_d4rl.errors import (
    ChecksumMismatchError, CorruptDatasetError, DatasetNotFoundError, UnknownDatasetError,
)
from lqv_d4rl.format import MANIFEST_NAME, STEP_KEYS, ShardWriter
from lqv_d4rl.registry import (
    DATASET_IDS, dataset_path, dataset_root, get_recipe, list_datasets, parse_dataset_id,
)
from lqv_d4rl.tasks import LEVELS, TASKS

PAPER_TABLES = Path("/work/shared/reference/paper_tables.json")
LENGTH = 21


def _expected_episodes(num_policies=3, episodes_per_policy=2, seed=0, action_dim=6):
    """What write_tiny_dataset gave the writer, episode by episode."""
    for k in range(num_policies * episodes_per_policy):
        policy = k // episodes_per_policy
        yield k, make_episode(LENGTH, action_dim, seed=seed + k), {
            "policy_id": tiny_policy_id(policy), "policy_step": 1000 * policy, "seed": seed + k,
            "video_ids": [k, k + 1],
        }


def _assert_round_trip(data: Dataset, **expected_options):
    expected = list(_expected_episodes(**expected_options))
    assert len(data) == len(expected)
    for index, steps, info in expected:
        loaded = data.episode(index)
        assert set(loaded) == set(STEP_KEYS)
        for key in STEP_KEYS:
            assert loaded[key].dtype == steps[key].dtype, key
            assert np.array_equal(loaded[key], steps[key]), key
        row = data.episode_info(index)
        assert {k: row[k] for k in info} == info
        assert row["return"] == float(steps["reward"].sum(dtype=np.float64))
        assert row["length"] == LENGTH


# -- registry ------------------------------------------------------------------------------------


def test_registry_lists_the_15_dataset_ids():
    assert len(list_datasets()) == 15 == len(set(DATASET_IDS))
    assert "walker_walk-medrep" in list_datasets() and "car_racing-medium" in list_datasets()
    assert all(parse_dataset_id(i) in {(t, l) for t in TASKS for l in LEVELS} for i in DATASET_IDS)


def test_unknown_dataset_id_suggests_close_matches():
    with pytest.raises(UnknownDatasetError, match="Did you mean 'walker_walk-medrep'"):
        parse_dataset_id("walker_walk-medrp")
    with pytest.raises(UnknownDatasetError, match="'cheetah_run-medium'"):
        load_dataset("cheeta_run-medium")


@pytest.mark.skipif(not PAPER_TABLES.is_file(), reason="the paper tables are not on this machine")
def test_recipes_match_table_3_of_the_paper():
    stats = json.loads(PAPER_TABLES.read_text())["dataset_stats"]
    for dataset_id in DATASET_IDS:
        recipe = get_recipe(dataset_id)
        table = dict(stats[recipe.task][recipe.level])
        assert recipe.episodes == table.pop("episodes")
        assert recipe.paper_returns == table


def test_recipe_episodes_per_level():
    assert [get_recipe(f"hopper_hop-{level}").episodes for level in LEVELS] == [200, 400, 200]


def test_dataset_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("LQV_D4RL_ROOT", raising=False)
    assert dataset_root() == Path("~/.lqv_d4rl").expanduser()
    monkeypatch.setenv("LQV_D4RL_ROOT", str(tmp_path / "env"))
    assert dataset_root() == tmp_path / "env"
    assert dataset_root(tmp_path / "arg") == tmp_path / "arg"
    assert dataset_path("hopper_hop-medium") == tmp_path / "env" / "hopper_hop-medium"
    with pytest.raises(UnknownDatasetError):
        dataset_path("hopper_hop-expert")


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True])
def test_round_trip_returns_exactly_what_the_writer_was_given(tiny_dataset_path, lazy):
    data = load_dataset(tiny_dataset_path, lazy=lazy)
    assert len(data.metadata["shards"]) == 3  # the round trip crosses shard rotations
    _assert_round_trip(data)
    assert data.lazy is lazy and isinstance(data.images, LazyImages) is lazy
    assert data.task == "walker_walk" and data.metadata["dataset_id"] == "walker_walk-medrep"
    assert data.dataset_ids.tolist() == ["walker_walk-medrep"] * 6
    assert data.policies() == [tiny_policy_id(p) for p in range(3)]
    assert data.num_steps == 6 * LENGTH and data.action_dim == 6
    assert np.array_equal(data.episode_starts, np.arange(6) * LENGTH)
    assert data.is_first.sum() == data.is_last.sum() == 6


@pytest.mark.parametrize("lazy", [False, True])
def test_video_ids_of_any_length_and_terminal_episodes_round_trip(tmp_path, lazy):
    folder = tmp_path / "walker_walk-random"
    episodes = [make_episode(LENGTH, seed=1, terminal=True), make_episode(LENGTH + 5, seed=2)]
    video_ids = [[7, 8], []]
    with ShardWriter(folder, dataset_id="walker_walk-random", task="walker_walk", level="random",
                     action_dim=6) as writer:
        for steps, ids in zip(episodes, video_ids):
            writer.add_episode(steps, policy_id="only", video_ids=ids)
    data = load_dataset(folder, lazy=lazy)
    assert [ids.tolist() for ids in data.video_ids] == video_ids
    assert data.video_ids[0].dtype == np.int32
    assert data.episode_lengths.tolist() == [LENGTH, LENGTH + 5]
    assert data.is_terminal[LENGTH - 1] and data.discounts[LENGTH - 1] == 0
    for i, steps in enumerate(episodes):
        assert all(np.array_equal(v, steps[k]) for k, v in data.episode(i).items())
    assert data.policy_steps.tolist() == [-1, -1] and data.episode_seeds.tolist() == [-1, -1]


def test_an_empty_dataset_loads_as_an_empty_dataset(tmp_path):
    ShardWriter(tmp_path / "empty", dataset_id="empty", task="walker_walk", level="x",
                action_dim=6).close()
    for lazy in (False, True):
        data = load_dataset(tmp_path / "empty", lazy=lazy)
        assert len(data) == data.num_steps == len(data.images) == 0 and data.policies() == []


def test_load_by_id_from_root_argument_and_environment(tiny_dataset_path, monkeypatch):
    root = tiny_dataset_path.parent
    _assert_round_trip(load_dataset("walker_walk-medrep", root=root))
    monkeypatch.setenv("LQV_D4RL_ROOT", str(root))
    _assert_round_trip(load_dataset("walker_walk-medrep"))


def test_an_id_means_the_dataset_under_the_root_even_if_the_working_directory_has_one(
        tmp_path, monkeypatch):
    write_tiny_dataset(tmp_path / "cwd" / "walker_walk-medrep", seed=50)
    write_tiny_dataset(tmp_path / "root" / "walker_walk-medrep", seed=0)
    monkeypatch.chdir(tmp_path / "cwd")
    _assert_round_trip(load_dataset("walker_walk-medrep", root=tmp_path / "root"))
    # A name that is only a folder of the working directory still loads from there.
    assert load_dataset("walker_walk-medrep", root=tmp_path / "empty").episode_seeds[0] == 50


def test_a_custom_dataset_loads_by_folder_and_by_name_under_root(tmp_path):
    write_tiny_dataset(tmp_path / "my_data", dataset_id="my_data", task="my_task", level="x",
                       action_dim=2, num_policies=1)
    assert len(load_dataset(tmp_path / "my_data")) == 2
    data = load_dataset("my_data", root=tmp_path)
    assert data.task == "my_task" and data.action_dim == 2


def test_show_progress_when_asked(tiny_dataset_path, capsys):
    load_dataset(tiny_dataset_path, progress=True)
    assert "loading shards" in capsys.readouterr().err


# -- lazy images ---------------------------------------------------------------------------------


def test_lazy_images_index_like_the_in_memory_array(tiny_dataset_path):
    eager = load_dataset(tiny_dataset_path).images
    lazy = load_dataset(tiny_dataset_path, lazy=True).images
    assert lazy.shape == eager.shape and lazy.dtype == eager.dtype and len(lazy) == len(eager)
    rows = np.array([100, 3, 3, 0, 125, 41, 42])
    mask = np.zeros(len(eager), bool)
    mask[[1, 50, 90]] = True
    keys = [5, -1, slice(30, 100), slice(None), slice(10, 120, 7), slice(50, 10), rows,
            rows.tolist(), mask, (rows, slice(0, 8)), (slice(40, 44), 3, slice(None), 0), [],
            np.zeros(0, np.int64)]
    for key in keys:
        assert np.array_equal(lazy[key], eager[key]), key
    assert np.array_equal(np.asarray(lazy), eager)
    with pytest.raises(IndexError):
        lazy[np.array([len(eager)])]
    with pytest.raises(IndexError):
        lazy[np.array([0.5])]


def test_lazy_images_match_ram_for_random_unsorted_repeated_and_negative_indices(
        tiny_dataset_path):
    eager = load_dataset(tiny_dataset_path).images
    lazy = load_dataset(tiny_dataset_path, lazy=True).images
    rng = np.random.default_rng(0)
    for _ in range(50):
        rows = rng.integers(-len(eager), len(eager), size=rng.integers(1, 40))
        assert np.array_equal(lazy[rows], eager[rows]), rows


def test_lazy_dataset_survives_pickling(tiny_dataset_path):
    data = load_dataset(tiny_dataset_path, lazy=True)
    data.images[0]  # opens a file handle, which must not be pickled
    clone = pickle.loads(pickle.dumps(data))
    assert np.array_equal(clone.images[10:30], data.images[10:30])


# -- views ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True])
def test_per_policy_views_share_memory_and_never_mix_episodes(tiny_dataset_path, lazy):
    data = load_dataset(tiny_dataset_path, lazy=lazy)
    for policy in data.policies():
        view = data.by_policy(policy)
        assert len(view) == 2 and set(view.policy_ids.tolist()) == {policy}
        assert view.images is data.images
        for key in ("actions", "rewards", "is_first"):
            assert np.shares_memory(getattr(view, key), getattr(data, key))
        if not lazy:
            assert np.shares_memory(view.images, data.images)
        for i in range(len(view)):
            original = int(np.flatnonzero(data.episode_starts == view.episode_starts[i])[0])
            assert data.policy_ids[original] == policy
            for key, array in view.episode(i).items():
                assert np.array_equal(array, data.episode(original)[key])
        rows = view.row_indices()
        assert len(rows) == view.num_steps and data.is_first[rows].sum() == len(view)
    with pytest.raises(KeyError, match="policy-00"):
        data.by_policy("nobody")


def test_select_by_indices_or_mask(tiny_dataset_path):
    data = load_dataset(tiny_dataset_path)
    picked = data.select([4, 0])
    assert picked.episode_seeds.tolist() == [4, 0]
    assert np.array_equal(picked.episode(0)["image"], make_episode(LENGTH, seed=4)["image"])
    high = data.select(data.returns > np.median(data.returns))
    assert len(high) == 3 and np.all(high.returns > np.median(data.returns))
    assert len(data.select([])) == 0 and data.select([]).num_steps == 0
    with pytest.raises(IndexError):
        data.select([6])
    with pytest.raises(ValueError, match="boolean mask"):
        data.select([True, False])


# -- combinations --------------------------------------------------------------------------------


def _three_levels(root):
    for offset, level in enumerate(LEVELS):
        write_tiny_dataset(root / f"walker_walk-{level}", level=level, num_policies=1 + offset,
                           seed=100 * offset)
    return [f"walker_walk-{level}" for level in LEVELS]


@pytest.mark.parametrize("lazy", [False, True])
def test_loading_a_list_gives_one_dataset_of_all_levels(tmp_path, lazy):
    ids = _three_levels(tmp_path)
    data = load_dataset(ids, root=tmp_path, lazy=lazy)
    assert len(data) == 2 + 4 + 6 and data.task == "walker_walk"
    assert [m["dataset_id"] for m in data.metadata["sources"]] == ids
    assert data.dataset_ids.tolist() == [ids[0]] * 2 + [ids[1]] * 4 + [ids[2]] * 6
    for offset, level in enumerate(LEVELS):
        part = data.select(data.dataset_ids == f"walker_walk-{level}")
        _assert_round_trip(part, num_policies=1 + offset, seed=100 * offset)


def test_combine_in_memory_copies_only_the_selected_episodes_once(tmp_path):
    ids = _three_levels(tmp_path)
    random, medium = load_dataset(ids[0], root=tmp_path), load_dataset(ids[2], root=tmp_path)
    mixed = combine([medium.by_policy(tiny_policy_id(1)), random])
    assert len(mixed) == 4 and mixed.num_steps == len(mixed.images) == 4 * LENGTH
    assert mixed.episode_seeds.tolist() == [202, 203, 0, 1]
    assert not np.shares_memory(mixed.images, medium.images)
    assert np.array_equal(mixed.episode(0)["image"], make_episode(LENGTH, seed=202)["image"])
    assert np.array_equal(mixed.episode(3)["action"], make_episode(LENGTH, seed=1)["action"])
    assert [m["dataset_id"] for m in mixed.metadata["sources"]] == [ids[2], ids[0]]
    assert mixed.is_first.sum() == 4 and np.all(mixed.is_first[mixed.episode_starts])


def test_combine_lazy_datasets_stays_lazy(tmp_path):
    ids = _three_levels(tmp_path)
    parts = [load_dataset(i, root=tmp_path, lazy=True) for i in ids]
    mixed = combine([parts[2].by_policy(tiny_policy_id(2)), parts[0]])
    assert mixed.lazy and isinstance(mixed.images, LazyImages)
    assert mixed.episode_seeds.tolist() == [204, 205, 0, 1]
    for i, seed in enumerate([204, 205, 0, 1]):
        expected = make_episode(LENGTH, seed=seed)
        assert all(np.array_equal(v, expected[k]) for k, v in mixed.episode(i).items())


def test_datasets_with_different_action_sizes_do_not_mix(tmp_path):
    write_tiny_dataset(tmp_path / "walker_walk-random", level="random")
    write_tiny_dataset(tmp_path / "hopper_hop-random", task="hopper_hop", level="random")
    with pytest.raises(ValueError, match="action sizes"):
        load_dataset(["walker_walk-random", "hopper_hop-random"], root=tmp_path)


# -- missing, partial and corrupt datasets -------------------------------------------------------


def test_a_missing_dataset_says_how_to_generate_or_download_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("hopper_hop-medium", root=tmp_path)
    message = str(caught.value)
    root = f" --root {tmp_path}"  # the user's root is repeated in every suggested command
    assert f"lqv-d4rl generate hopper_hop --behaviour sac-state --preset cpu{root}" in message
    assert f"lqv-d4rl generate hopper_hop --preset smoke --levels medium{root}" in message
    assert f"lqv-d4rl download hopper_hop-medium{root}" in message and "download=True" in message
    with pytest.raises(DatasetNotFoundError, match="no lqv-d4rl dataset at"):
        load_dataset(tmp_path / "nowhere")


def test_a_partial_dataset_loads_only_when_allowed(tmp_path):
    folder = tmp_path / "walker_walk-random"
    writer = ShardWriter(folder, dataset_id="walker_walk-random", task="walker_walk",
                         level="random", action_dim=6, max_shard_bytes=1)
    for k in range(3):
        writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p")
    with pytest.raises(CorruptDatasetError, match="incomplete.*allow_partial=True"):
        load_dataset(folder)
    assert len(load_dataset(folder, allow_partial=True)) == 3


def _flip_byte(path: Path, position: float = 0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * position)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("lazy", [False, True])
def test_load_catches_a_flipped_byte_and_names_the_file(tiny_dataset_path, lazy):
    _flip_byte(tiny_dataset_path / "shard-00002.h5")
    with pytest.raises(ChecksumMismatchError, match="shard-00002.h5.*Re-download or re-generate"):
        load_dataset(tiny_dataset_path, lazy=lazy)


@pytest.mark.parametrize("region", ["superblock", "image chunk", "episode returns",
                                    "episode seeds", "last byte"])
@pytest.mark.parametrize("lazy", [False, True])
def test_load_catches_a_flipped_byte_in_any_part_of_a_shard(tiny_dataset_path, lazy, region):
    path = tiny_dataset_path / "shard-00001.h5"
    flip_byte(path, shard_byte_offsets(path)[region])
    with pytest.raises(ChecksumMismatchError, match="shard-00001.h5"):
        load_dataset(tiny_dataset_path, lazy=lazy)


def test_damaged_image_chunks_name_the_shard_even_without_checksums(tiny_dataset_path):
    path = tiny_dataset_path / "shard-00001.h5"
    flip_byte(path, shard_byte_offsets(path)["image chunk"])
    with pytest.raises(CorruptDatasetError, match="shard-00001.h5.*Re-download"):
        load_dataset(tiny_dataset_path, verify=False)
    lazy = load_dataset(tiny_dataset_path, verify=False, lazy=True)
    start = int(lazy.episode_starts[2])  # the first episode of shard 1
    for key in (start, slice(start, start + 3), [start + 1, 0, start]):
        with pytest.raises(CorruptDatasetError, match="shard-00001.h5.*Re-download"):
            lazy.images[key]
    intact = np.concatenate([make_episode(LENGTH, seed=k)["image"] for k in (0, 1)])
    assert np.array_equal(lazy.images[:start], intact)  # the other shards still read


def test_load_catches_a_truncated_shard_even_without_checksums(tiny_dataset_path):
    path = tiny_dataset_path / "shard-00001.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptDatasetError, match="shard-00001.h5.*truncated"):
        load_dataset(tiny_dataset_path)
    with pytest.raises(CorruptDatasetError, match="shard-00001.h5"):
        load_dataset(tiny_dataset_path, verify=False)


def test_load_rejects_a_manifest_pointing_outside_the_folder(tiny_dataset_path):
    manifest = json.loads((tiny_dataset_path / MANIFEST_NAME).read_text())
    manifest["shards"][0]["file"] = "../walker_walk-medrep/shard-00000.h5"
    (tiny_dataset_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptDatasetError, match="outside the dataset folder"):
        load_dataset(tiny_dataset_path)


def test_a_missing_shard_is_named_even_without_checksums(tmp_path):
    folder = write_tiny_dataset(tmp_path / "walker_walk-medrep")
    (folder / "shard-00001.h5").unlink()
    for verify in (True, False):
        with pytest.raises(CorruptDatasetError, match=r"shard-00001.h5 is missing\. Re-download"):
            load_dataset(folder, verify=verify)


# ----------------------------------------------------------------------------------------------
# State arrays through import-npz and the Minari export
# ----------------------------------------------------------------------------------------------


def test_npz_import_writes_version_2_without_states(tmp_path):
    from lqv_d4rl.format import read_manifest
    from lqv_d4rl.npz_import import import_npz_dir

    source = tmp_path / "npz"
    source.mkdir()
    for k in range(2):
        episode = make_episode(LENGTH, seed=k)
        np.savez(source / f"20220101T000000-{k}-{LENGTH}.npz",
                 **{key: episode[key] for key in ("image", "action", "reward", "discount")})
    folder = import_npz_dir(source, "walker_walk-random", root=tmp_path / "root",
                            progress=False)
    manifest = read_manifest(folder)
    assert manifest["format_version"] == 2
    assert "state" not in manifest["spaces"] and "physics" not in manifest["spaces"]
    data = load_dataset(folder)
    assert data.states is None and data.physics is None and len(data) == 2


def test_the_minari_export_carries_states_and_physics_per_observation(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from lqv_d4rl.minari_export import export_to_minari

    folder = tmp_path / "walker_walk-medium"
    rng = np.random.default_rng(0)
    episodes = []
    with ShardWriter(folder, dataset_id="walker_walk-medium", task="walker_walk", level="medium",
                     action_dim=6, state_fields=[("obs", 4)],
                     physics_fields=[("qpos", 3), ("qvel", 3), ("act", 0)]) as writer:
        for k in range(2):
            episode = {**make_episode(LENGTH, seed=k),
                       "state": rng.normal(size=(LENGTH, 4)).astype(np.float32),
                       "physics": rng.normal(size=(LENGTH, 6))}
            episodes.append(episode)
            writer.add_episode(episode, policy_id="p", seed=k)
    export_to_minari(folder, "lqv-d4rl/walker-states-v0", minari_root=tmp_path / "minari",
                     progress=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    exported = minari.load_dataset("lqv-d4rl/walker-states-v0")
    for episode, data in zip(episodes, exported.iterate_episodes()):
        assert np.array_equal(data.infos["state"], episode["state"])
        assert np.array_equal(data.infos["physics"], episode["physics"])
        assert data.infos["physics"].dtype == np.float64
    spaces = exported.storage.metadata["lqv_d4rl"]["state_spaces"]
    assert spaces["state"]["fields"] == [["obs", 4]]


def test_band_report_and_markdown_table_of_return_statistics():
    from lqv_d4rl.stats import band_report, markdown_statistics_table, return_statistics

    paper = {"min": 401.5, "max": 598.0}
    assert band_report(return_statistics([420.0, 500.0, 590.0]), paper) == "in band"
    assert band_report(return_statistics([380.0, 500.0, 620.0]), paper) == \
        "outside the paper's [401.5, 598]: min 380.0, max 620.0"
    table = markdown_statistics_table([("walker_walk-medium", return_statistics([1.0, 3.0]))])
    assert table.splitlines()[2] == "| walker_walk-medium | 2 | 2.0 | 1.0 | 1.0 | 1.5 | 2.0 | " \
                                    "2.5 | 3.0 |"
