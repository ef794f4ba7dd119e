"""The on-disk format: writer validation, shard rotation, atomic shards, resume, verify, bytes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import flip_byte, make_episode, shard_byte_offsets, write_tiny_dataset
from lqv_d4rl.errors import CorruptDatasetError, DatasetExistsError, UnknownDatasetError
from lqv_d4rl.format import (
    FORMAT_VERSION, GZIP_LEVEL, IMAGE_CHUNK_FRAMES, MANIFEST_NAME, STEP_KEYS, ShardWriter,
    is_safe_file_name, read_episode_table, read_manifest, sha256_file, verify_dataset,
)

LENGTH = 21
EPISODE_BYTES = LENGTH * (64 * 64 * 3 + 4 * 6 + 4 + 4 + 3)


def _writer(folder, **options):
    options = {"dataset_id": "walker_walk-random", "task": "walker_walk", "level": "random",
               "action_dim": 6, **options}
    return ShardWriter(folder, **options)


def _shard_names(folder):
    return sorted(p.name for p in Path(folder).glob("shard-*.h5"))


# -- episode validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda e: e.pop("discount"), "missing \\['discount'\\]"),
        (lambda e: e.update(extra=np.zeros(LENGTH)), "unexpected \\['extra'\\]"),
        (lambda e: e.update(image=e["image"].astype(np.float32)), "'image' must be uint8"),
        (lambda e: e.update(image=e["image"][:, :32]), "'image' must be uint8 with shape"),
        (lambda e: e.update(action=e["action"][:, :4]), "'action' must have shape \\(21, 6\\)"),
        (lambda e: e.update(reward=e["reward"][:-1]), "same length"),
        (lambda e: e["reward"].__setitem__(3, np.nan), "NaN"),
        (lambda e: e["action"].__setitem__((3, 1), 1.5), "'action' must lie in \\[-1, 1\\]"),
        (lambda e: e.update(is_first=e["is_first"].astype(np.float32)), "'is_first' must be bool"),
        (lambda e: e["is_first"].__setitem__(5, True), "'is_first' must be True at entry 0"),
        (lambda e: e["is_last"].__setitem__(-1, False), "'is_last' must be True at the last"),
        (lambda e: e["is_last"].__setitem__(4, True), "'is_last' must be True at the last"),
        (lambda e: e["is_terminal"].__setitem__(4, True), "'is_terminal' may only be True"),
        (lambda e: e["is_terminal"].__setitem__(-1, True), "terminal last entry needs discount 0"),
        (lambda e: e["action"].__setitem__(0, 0.5), "entry 0 holds the first observation"),
        (lambda e: e["reward"].__setitem__(0, 1.0), "entry 0 holds the first observation"),
    ],
)
def test_add_episode_rejects_bad_episodes_with_a_clear_message(tmp_path, spoil, message):
    episode = make_episode(LENGTH)
    spoil(episode)
    with _writer(tmp_path / "d") as writer:
        with pytest.raises(ValueError, match=message):
            writer.add_episode(episode, policy_id="p")
        assert writer.num_episodes == 0


def test_add_episode_rejects_bad_episode_info(tmp_path):
    with _writer(tmp_path / "d") as writer:
        with pytest.raises(ValueError, match="policy_id"):
            writer.add_episode(make_episode(LENGTH), policy_id="")
        with pytest.raises(ValueError, match="video_ids"):
            writer.add_episode(make_episode(LENGTH), policy_id="p", video_ids=[[1, 2]])
        with pytest.raises(ValueError, match="video_ids"):
            writer.add_episode(make_episode(LENGTH), policy_id="p", video_ids=[2**40])
        with pytest.raises(ValueError, match="seed must be an integer"):
            writer.add_episode(make_episode(LENGTH), policy_id="p", seed=1.5)
        with pytest.raises(ValueError, match="policy_step must be an integer"):
            writer.add_episode(make_episode(LENGTH), policy_id="p", policy_step="10")
        writer.add_episode(make_episode(LENGTH), policy_id="p")


def test_integer_flags_and_float64_rewards_are_accepted_and_stored_in_format_dtypes(tmp_path):
    episode = make_episode(LENGTH)
    episode["is_last"] = episode["is_last"].astype(np.int64)
    episode["reward"] = episode["reward"].astype(np.float64)
    with _writer(tmp_path / "d") as writer:
        writer.add_episode(episode, policy_id="p")
    with h5py.File(tmp_path / "d" / "shard-00000.h5") as handle:
        assert handle["steps/is_last"].dtype == np.bool_
        assert handle["steps/reward"].dtype == np.float32


def test_writer_checks_dataset_identity(tmp_path):
    with pytest.raises(UnknownDatasetError, match="walker_walk-medrep"):
        _writer(tmp_path / "a", dataset_id="walker_walk-medrp")
    with pytest.raises(ValueError, match="level 'random'"):
        _writer(tmp_path / "b", level="medium")
    with pytest.raises(ValueError, match="action_dim 6"):
        _writer(tmp_path / "c", action_dim=4)
    with pytest.raises(UnknownDatasetError, match="custom dataset id"):
        _writer(tmp_path / "d", dataset_id="../escape", task="mine", level="x")
    custom = _writer(tmp_path / "e", dataset_id="my_imported_data", task="my_task", level="any",
                     action_dim=2)
    custom.add_episode(make_episode(LENGTH, action_dim=2), policy_id="p")
    custom.close()
    assert read_manifest(tmp_path / "e")["dataset_id"] == "my_imported_data"


# -- layout and manifest -------------------------------------------------------------------------


def test_shard_layout_matches_the_specification(tmp_path):
    folder = write_tiny_dataset(tmp_path / "walker_walk-medrep")
    manifest = read_manifest(folder)
    assert manifest["format"] == "lqv-d4rl" and manifest["format_version"] == FORMAT_VERSION
    identity = (manifest["dataset_id"], manifest["task"], manifest["level"])
    assert identity == ("walker_walk-medrep", "walker_walk", "medrep")
    assert manifest["complete"] is True
    action_space = {"shape": [6], "dtype": "float32", "low": -1.0, "high": 1.0}
    assert manifest["spaces"]["action"] == action_space
    assert manifest["normalization"]["paper"] == {"min": 5.0, "max": 598.0}
    assert manifest["provenance"]["seed"] == 0 and "code_version" in manifest["provenance"]
    assert (manifest["num_episodes"], manifest["num_steps"]) == (6, 6 * LENGTH)
    for record in manifest["shards"]:
        path = folder / record["file"]
        assert record["sha256"] == sha256_file(path) and record["bytes"] == path.stat().st_size
        with h5py.File(path) as handle:
            assert handle.attrs["format_version"] == FORMAT_VERSION
            assert handle.attrs["dataset_id"] == "walker_walk-medrep"
            image = handle["steps/image"]
            assert image.dtype == np.uint8 and image.shape[1:] == (64, 64, 3)
            assert image.compression == "gzip" and image.compression_opts == GZIP_LEVEL
            assert image.chunks[0] == min(IMAGE_CHUNK_FRAMES, image.shape[0])
            assert set(handle["steps"]) == set(STEP_KEYS)
            episodes = handle["episodes"]
            assert set(episodes) == {"start", "length", "return", "policy_id", "policy_step",
                                     "seed", "video_ids"}
            for key in ("start", "length", "policy_step", "seed"):
                assert episodes[key].dtype == np.int64
            assert episodes["return"].dtype == np.float64
            assert h5py.check_string_dtype(episodes["policy_id"].dtype).encoding == "utf-8"
            assert h5py.check_vlen_dtype(episodes["video_ids"].dtype) == np.int32
            assert handle.attrs["shard_index"] == int(record["file"][6:11])
    first_episodes = []
    for record in manifest["shards"]:
        with h5py.File(folder / record["file"]) as handle:
            first_episodes.append(int(handle.attrs["first_episode"]))
    assert first_episodes == [0, 2, 4]


def test_shards_rotate_at_the_size_bound_and_never_split_episodes(tmp_path):
    folder = tmp_path / "d"
    with _writer(folder, max_shard_bytes=int(2.5 * EPISODE_BYTES)) as writer:
        for k in range(7):
            writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    manifest = read_manifest(folder)
    assert [r["num_episodes"] for r in manifest["shards"]] == [2, 2, 2, 1]
    seen_seeds = []
    for record in manifest["shards"]:
        table = read_episode_table(folder / record["file"])
        assert table["start"][0] == 0
        assert table["step_array_lengths"]["image"] == table["length"].sum()
        seen_seeds += table["seed"].tolist()
    assert seen_seeds == list(range(7))


def test_an_episode_larger_than_the_bound_gets_a_shard_of_its_own(tmp_path):
    with _writer(tmp_path / "d", max_shard_bytes=100) as writer:
        for k in range(3):
            writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p")
    assert [r["num_episodes"] for r in read_manifest(tmp_path / "d")["shards"]] == [1, 1, 1]


def test_finished_shards_are_recorded_in_the_manifest_at_once(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=2 * EPISODE_BYTES)
    assert read_manifest(folder)["complete"] is False
    for k in range(3):
        writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p")
    manifest = read_manifest(folder)
    assert (manifest["num_episodes"], len(manifest["shards"])) == (2, 1)
    assert manifest["complete"] is False
    assert (writer.num_episodes, writer.num_finished_episodes) == (3, 2)
    assert not list(folder.glob("*.tmp"))
    writer.close()
    assert read_manifest(folder)["complete"] is True and read_manifest(folder)["num_episodes"] == 3
    with pytest.raises(ValueError, match="closed"):
        writer.add_episode(make_episode(LENGTH), policy_id="p")


def test_an_exception_inside_the_writer_keeps_buffered_episodes_but_leaves_it_incomplete(tmp_path):
    folder = tmp_path / "d"
    with pytest.raises(RuntimeError):
        with _writer(folder) as writer:
            writer.add_episode(make_episode(LENGTH), policy_id="p")
            raise RuntimeError("producer crashed")
    manifest = read_manifest(folder)
    assert manifest["complete"] is False and manifest["num_episodes"] == 1
    assert verify_dataset(folder) == []


# -- overwrite and resume ------------------------------------------------------------------------


def test_refuses_to_overwrite_a_complete_dataset(tmp_path):
    folder = write_tiny_dataset(tmp_path / "walker_walk-medrep")
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    with pytest.raises(DatasetExistsError, match="already complete.*overwrite=True"):
        ShardWriter(folder, dataset_id="walker_walk-medrep", task="walker_walk", level="medrep",
                    action_dim=6)
    assert {p.name: sha256_file(p) for p in folder.iterdir()} == before


def test_refuses_to_overwrite_a_partial_dataset_and_says_how_to_resume(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=EPISODE_BYTES)
    writer.add_episode(make_episode(LENGTH), policy_id="p")
    with pytest.raises(DatasetExistsError, match="partial dataset.*resume=True.*overwrite=True"):
        _writer(folder)


def test_overwrite_replaces_only_the_formats_own_files(tmp_path):
    folder = write_tiny_dataset(tmp_path / "d", num_policies=2, episodes_per_policy=2)
    (folder / "notes.txt").write_text("keep me")
    with _writer(folder, dataset_id="walker_walk-medrep", level="medrep", overwrite=True) as writer:
        writer.add_episode(make_episode(LENGTH, seed=9), policy_id="q")
    assert read_manifest(folder)["num_episodes"] == 1
    assert _shard_names(folder) == ["shard-00000.h5"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_resume_continues_after_the_last_finished_shard(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=2 * EPISODE_BYTES)
    for k in range(5):  # 2 shards finished, 1 episode buffered and lost
        writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    del writer
    (folder / "shard-00002.h5.tmp").write_bytes(b"half-written shard")
    resumed = _writer(folder, max_shard_bytes=2 * EPISODE_BYTES, resume=True)
    assert resumed.num_episodes == 4
    assert not (folder / "shard-00002.h5.tmp").exists()
    for k in range(resumed.num_episodes, 7):
        resumed.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    resumed.close()
    seeds = np.concatenate([read_episode_table(folder / n)["seed"] for n in _shard_names(folder)])
    assert seeds.tolist() == list(range(7)) and verify_dataset(folder, require_complete=True) == []


def test_resume_adopts_a_shard_renamed_but_not_yet_recorded(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=2 * EPISODE_BYTES)
    for k in range(4):
        writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    # Simulate a crash between the rename of shard 1 and the manifest update.
    manifest = read_manifest(folder)
    record = manifest["shards"].pop()
    manifest["num_episodes"] -= record["num_episodes"]
    manifest["num_steps"] -= record["num_steps"]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    resumed = _writer(folder, max_shard_bytes=2 * EPISODE_BYTES, resume=True)
    assert resumed.num_episodes == 4
    resumed.close()
    assert read_manifest(folder)["shards"][1] == record


def test_resume_after_a_kill_during_the_manifest_write(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=2 * EPISODE_BYTES)
    for k in range(2):
        writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    before = (folder / MANIFEST_NAME).read_text()
    for k in range(2, 4):  # shard 1 is renamed into place; the kill hits its manifest update
        writer.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    (folder / MANIFEST_NAME).write_text(before)
    (folder / (MANIFEST_NAME + ".tmp")).write_text(before[: len(before) // 2])
    assert read_manifest(folder)["num_episodes"] == 2
    with _writer(folder, max_shard_bytes=2 * EPISODE_BYTES, resume=True) as resumed:
        assert resumed.num_episodes == 4
        assert not (folder / (MANIFEST_NAME + ".tmp")).exists()
        for k in range(4, 5):
            resumed.add_episode(make_episode(LENGTH, seed=k), policy_id="p", seed=k)
    assert read_manifest(folder)["num_episodes"] == 5
    assert verify_dataset(folder, require_complete=True) == []


_VARIED_LENGTHS = (21, 30, 12, 40, 21, 9, 25, 33)


def _write_varied(writer, stop=len(_VARIED_LENGTHS)):
    for k in range(writer.num_episodes, stop):
        writer.add_episode(make_episode(_VARIED_LENGTHS[k], seed=k), policy_id=f"p{k % 2}",
                           policy_step=k, seed=k, video_ids=[k])


def _digests(folder):
    return [(r["file"], r["num_episodes"], r["sha256"]) for r in read_manifest(folder)["shards"]]


_VARIED_BOUND = int(2.5 * EPISODE_BYTES)


@pytest.fixture(scope="module")
def varied_reference(tmp_path_factory):
    """Shard digests of the _VARIED_LENGTHS episodes written by a run that never stopped."""
    folder = tmp_path_factory.mktemp("reference") / "d"
    with _writer(folder, max_shard_bytes=_VARIED_BOUND) as writer:
        _write_varied(writer)
    return _digests(folder)


@pytest.mark.parametrize("stop_after", range(1, len(_VARIED_LENGTHS)))
def test_a_run_stopped_by_an_exception_and_resumed_writes_the_same_shards(tmp_path, stop_after,
                                                                         varied_reference):
    bound = _VARIED_BOUND
    folder = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        with _writer(folder, max_shard_bytes=bound) as writer:  # saves its buffer early
            _write_varied(writer, stop_after)
            raise KeyboardInterrupt
    assert read_manifest(folder)["num_episodes"] == stop_after
    with _writer(folder, max_shard_bytes=bound, resume=True) as writer:
        assert writer.num_episodes == stop_after
        _write_varied(writer)
        assert writer.num_episodes == len(_VARIED_LENGTHS)
    assert _digests(folder) == varied_reference
    assert verify_dataset(folder, require_complete=True) == []


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_in", ["_replace_atomically", "_record_shard"])
def test_a_crash_while_a_reopened_shard_is_rewritten_loses_nothing(tmp_path, monkeypatch,
                                                                   crash_in, varied_reference):
    bound = _VARIED_BOUND
    folder = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        with _writer(folder, max_shard_bytes=bound) as writer:
            _write_varied(writer, 1)  # shard 0 is saved early with episode 0 only
            raise KeyboardInterrupt
    # The resumed writer reopens shard 0 and dies before (_replace_atomically) or after
    # (_record_shard) renaming its rewrite into place; the process is gone, nothing cleans up.
    writer = _writer(folder, max_shard_bytes=bound, resume=True)
    import lqv_d4rl.format as format_module

    def crash(*args, **kwargs):
        raise _Crash()

    if crash_in == "_replace_atomically":
        monkeypatch.setattr(format_module, "_replace_atomically", crash)
    else:
        monkeypatch.setattr(ShardWriter, "_record_shard", crash)
    with pytest.raises(_Crash):
        _write_varied(writer, 3)  # episode 1 fits into shard 0, episode 2 finishes it
    monkeypatch.undo()
    with _writer(folder, max_shard_bytes=bound, resume=True) as writer:
        assert writer.num_episodes == (1 if crash_in == "_replace_atomically" else 2)
        _write_varied(writer)
    assert _digests(folder) == varied_reference
    assert not list(folder.glob("*.tmp"))


def test_the_partial_dataset_message_names_what_resumes_it_on_the_command_line(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=EPISODE_BYTES)
    writer.add_episode(make_episode(LENGTH), policy_id="p")
    with pytest.raises(DatasetExistsError) as caught:
        _writer(folder)
    message = str(caught.value)
    assert "`lqv-d4rl generate` resumes by itself" in message
    assert "`lqv-d4rl import-npz` needs --resume" in message


def test_resume_of_a_new_folder_starts_a_new_dataset(tmp_path):
    with _writer(tmp_path / "d", resume=True) as writer:
        assert writer.num_episodes == 0
        writer.add_episode(make_episode(LENGTH, terminal=True), policy_id="p")
    table = read_episode_table(tmp_path / "d" / "shard-00000.h5")
    assert table["length"].tolist() == [LENGTH] and verify_dataset(tmp_path / "d") == []


def test_resume_of_a_complete_dataset_reports_its_episodes(tmp_path):
    folder = write_tiny_dataset(tmp_path / "walker_walk-medrep")
    with ShardWriter(folder, dataset_id="walker_walk-medrep", task="walker_walk", level="medrep",
                     action_dim=6, resume=True) as writer:
        assert writer.num_episodes == 6
    assert read_manifest(folder)["complete"] is True


def test_resume_refuses_different_provenance(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=EPISODE_BYTES, provenance={"seed": 1, "note": "a"})
    writer.add_episode(make_episode(LENGTH), policy_id="p")
    with pytest.raises(ValueError, match="provenance differs in \\['seed'\\]"):
        _writer(folder, provenance={"seed": 2}, resume=True)
    assert _writer(folder, provenance={"seed": 1}, resume=True).num_episodes == 1


def test_overwrite_replaces_a_folder_with_an_unreadable_manifest(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text("{broken")
    with pytest.raises(DatasetExistsError, match="no readable manifest"):
        _writer(folder)
    with _writer(folder, overwrite=True) as writer:
        writer.add_episode(make_episode(LENGTH), policy_id="p")
    assert read_manifest(folder)["num_episodes"] == 1


def test_resume_refuses_a_different_dataset_and_a_corrupt_shard(tmp_path):
    folder = tmp_path / "d"
    writer = _writer(folder, max_shard_bytes=EPISODE_BYTES)
    writer.add_episode(make_episode(LENGTH), policy_id="p")
    with pytest.raises(ValueError, match="cannot resume"):
        _writer(folder, dataset_id="walker_walk-medium", level="medium", resume=True)
    with open(folder / "shard-00000.h5", "r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        handle.write(b"0123456789")
    with pytest.raises(CorruptDatasetError, match="shard-00000.h5"):
        _writer(folder, resume=True)


_SLOW_PRODUCER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import make_episode
    from lqv_d4rl.format import ShardWriter
    writer = ShardWriter({folder!r}, dataset_id="walker_walk-random", task="walker_walk",
                         level="random", action_dim=6, max_shard_bytes={bound}, resume={resume})
    for k in range(writer.num_episodes, {total}):
        writer.add_episode(make_episode({length}, seed=k), policy_id=f"p{{k % 3}}", seed=k)
        time.sleep(120 if k == {stall_after} else 0.05)  # the parent kills it during the stall
    writer.close()
""")


def _producer(folder, *, resume, stall_after=-1, total=12):
    script = _SLOW_PRODUCER.format(tests=str(Path(__file__).parent), folder=str(folder),
                                   bound=2 * EPISODE_BYTES, resume=resume, total=total,
                                   length=LENGTH, stall_after=stall_after)
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)


def test_a_killed_writer_leaves_valid_shards_and_resume_completes_the_dataset(tmp_path):
    folder = tmp_path / "walker_walk-random"
    # Episodes 0-3 fill two shards; episode 4 is buffered when the producer stalls and is killed.
    process = _producer(folder, resume=False, stall_after=4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if len(read_manifest(folder)["shards"]) >= 2:
                break
        except (FileNotFoundError, CorruptDatasetError):
            pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, process.stderr.read().decode()
    manifest = read_manifest(folder)
    assert manifest["complete"] is False and manifest["num_episodes"] == 4
    assert verify_dataset(folder) == []

    resumed = _producer(folder, resume=True)
    assert resumed.wait(timeout=60) == 0, resumed.stderr.read().decode()
    assert verify_dataset(folder, require_complete=True) == []
    final = read_manifest(folder)
    assert final["num_episodes"] == 12 and final["num_steps"] == 12 * LENGTH
    seeds = np.concatenate([read_episode_table(folder / n)["seed"] for n in _shard_names(folder)])
    assert seeds.tolist() == list(range(12))
    # An interrupted-and-resumed run writes the same bytes as an uninterrupted one.
    reference = tmp_path / "reference"
    with ShardWriter(reference, dataset_id="walker_walk-random", task="walker_walk", level="random",
                     action_dim=6, max_shard_bytes=2 * EPISODE_BYTES) as writer:
        for k in range(12):
            writer.add_episode(make_episode(LENGTH, seed=k), policy_id=f"p{k % 3}", seed=k)
    reference_digests = [r["sha256"] for r in read_manifest(reference)["shards"]]
    assert [r["sha256"] for r in final["shards"]] == reference_digests


# -- verification --------------------------------------------------------------------------------


def test_verify_catches_a_flipped_byte_and_names_the_file(tmp_path):
    folder = write_tiny_dataset(tmp_path / "d")
    assert verify_dataset(folder) == []
    path = folder / "shard-00001.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = verify_dataset(folder)
    assert len(problems) == 1 and "shard-00001.h5" in problems[0] and "checksum" in problems[0]


@pytest.mark.parametrize("region", ["superblock", "image chunk", "episode returns",
                                    "episode seeds", "last byte"])
def test_verify_catches_a_flipped_byte_in_any_part_of_a_shard(tmp_path, region):
    folder = write_tiny_dataset(tmp_path / "d")
    path = folder / "shard-00001.h5"
    flip_byte(path, shard_byte_offsets(path)[region])
    problems = verify_dataset(folder)
    assert len(problems) == 1 and "shard-00001.h5" in problems[0] and "checksum" in problems[0]


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_verify_catches_a_shard_truncated_anywhere(tmp_path, keep):
    folder = write_tiny_dataset(tmp_path / "d")
    path = folder / "shard-00002.h5"
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    problems = verify_dataset(folder)
    assert len(problems) == 1 and "shard-00002.h5" in problems[0] and "truncated" in problems[0]


def test_verify_catches_a_truncated_and_a_missing_shard(tmp_path):
    folder = write_tiny_dataset(tmp_path / "d")
    path = folder / "shard-00000.h5"
    path.write_bytes(path.read_bytes()[:1000])
    (folder / "shard-00002.h5").unlink()
    problems = verify_dataset(folder)
    assert len(problems) == 2
    assert "shard-00000.h5" in problems[0] and "truncated" in problems[0]
    assert "shard-00002.h5" in problems[1] and "missing" in problems[1]


def test_verify_catches_a_shard_whose_episode_table_does_not_tile_its_steps(tmp_path):
    folder = write_tiny_dataset(tmp_path / "d")
    path = folder / "shard-00001.h5"
    with h5py.File(path, "r+") as handle:  # a consistent checksum over inconsistent content
        handle["episodes/length"][0] = LENGTH - 1
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["shards"][1].update(sha256=sha256_file(path), bytes=path.stat().st_size)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = verify_dataset(folder)
    assert len(problems) == 1 and "shard-00001.h5" in problems[0] and "does not tile" in problems[0]


def test_verify_reports_a_missing_or_broken_manifest(tmp_path):
    assert "manifest.json is missing" in verify_dataset(tmp_path)[0]
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    assert "manifest.json" in verify_dataset(tmp_path)[0]


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../other/shard-00000.h5", "sub/../../x.h5", "a/b.h5", "a\\b.h5", ""]
)
def test_a_manifest_naming_files_outside_the_folder_is_rejected(tmp_path, name):
    folder = write_tiny_dataset(tmp_path / "d")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["shards"][0]["file"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert not is_safe_file_name(name)
    with pytest.raises(CorruptDatasetError, match="outside the dataset folder"):
        read_manifest(folder)
    assert "outside the dataset folder" in verify_dataset(folder)[0]


@pytest.mark.parametrize("spoil, message", [
    (lambda m: m.update(shards="shard-00000.h5"), "'shards' is missing or not of type list"),
    (lambda m: m["shards"][0].update(bytes="12"), "'bytes' is missing or not of type int"),
    (lambda m: m["shards"][1].pop("sha256"), "'sha256' is missing"),
    (lambda m: m["shards"].append(dict(m["shards"][0])), "listed twice"),
    (lambda m: m.update(num_episodes=m["num_episodes"] + 1), "num_episodes does not match"),
    (lambda m: m["spaces"]["action"].update(shape=6), "spaces.action.shape"),
    (lambda m: m["spaces"].update(action=[6]), "spaces.action.shape"),
    (lambda m: m.update(format="d4rl"), "not an lqv-d4rl manifest"),
])
def test_a_malformed_manifest_is_a_corrupt_dataset_error(tmp_path, spoil, message):
    folder = write_tiny_dataset(tmp_path / "d")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    spoil(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptDatasetError, match=message):
        read_manifest(folder)


def test_a_manifest_of_a_newer_format_version_says_to_upgrade(tmp_path):
    folder = write_tiny_dataset(tmp_path / "d")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptDatasetError, match="upgrade lqv-d4rl"):
        read_manifest(folder)


# -- reproducibility -----------------------------------------------------------------------------


def test_same_inputs_give_the_same_shard_bytes(tmp_path):
    first = write_tiny_dataset(tmp_path / "a")
    time.sleep(1.1)  # HDF5 object timestamps have one-second resolution
    second = write_tiny_dataset(tmp_path / "b")
    assert _shard_names(first) == _shard_names(second)
    for name in _shard_names(first):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_different_inputs_give_different_shard_bytes(tmp_path):
    first = write_tiny_dataset(tmp_path / "a", seed=0)
    second = write_tiny_dataset(tmp_path / "b", seed=1)
    assert sha256_file(first / "shard-00000.h5") != sha256_file(second / "shard-00000.h5")


# -- format version 2: state and physics arrays -------------------------------------------------

STATE_FIELDS = (("position", 3), ("velocity", 2))
PHYSICS_FIELDS = (("qpos", 4), ("qvel", 4), ("act", 0))


def _with_states(episode, seed=0, state_dim=5, physics_dim=8):
    rng = np.random.default_rng(seed)
    length = len(episode["reward"])
    return {**episode, "state": rng.normal(size=(length, state_dim)).astype(np.float32),
            "physics": rng.normal(size=(length, physics_dim))}


def _state_writer(folder, **options):
    return _writer(folder, state_fields=STATE_FIELDS, physics_fields=PHYSICS_FIELDS, **options)


def test_states_and_physics_are_stored_with_their_layout_and_load_back_exactly(tmp_path):
    from lqv_d4rl.dataset import load_dataset

    folder = tmp_path / "walker_walk-random"
    episodes = [_with_states(make_episode(LENGTH, seed=k), seed=k) for k in range(3)]
    with _state_writer(folder, max_shard_bytes=2 * EPISODE_BYTES) as writer:
        for k, episode in enumerate(episodes):
            writer.add_episode(episode, policy_id="p", seed=k)
    manifest = read_manifest(folder)
    assert manifest["format_version"] == 2
    assert manifest["spaces"]["state"] == {"shape": [5], "dtype": "float32",
                                           "fields": [["position", 3], ["velocity", 2]]}
    assert manifest["spaces"]["physics"] == {"shape": [8], "dtype": "float64",
                                             "fields": [["qpos", 4], ["qvel", 4], ["act", 0]]}
    with h5py.File(folder / "shard-00000.h5") as handle:
        assert set(handle["steps"]) == set(STEP_KEYS) | {"state", "physics"}
        assert handle["steps/physics"].dtype == np.float64
        assert handle["steps/state"].compression == "gzip"
    assert verify_dataset(folder) == []
    for lazy in (False, True):
        data = load_dataset(folder, lazy=lazy)
        assert data.states.dtype == np.float32 and data.physics.dtype == np.float64
        for k, episode in enumerate(episodes):
            assert np.array_equal(data.episode(k)["state"], episode["state"])
            assert np.array_equal(data.episode(k)["physics"], episode["physics"])


@pytest.mark.parametrize("spoil, message", [
    (lambda e: e.pop("physics"), r"missing \['physics'\]"),
    (lambda e: e.update(state=e["state"][:, :4]), r"'state' must have shape \(21, 5\)"),
    (lambda e: e["physics"].__setitem__((2, 1), np.inf), "'physics' contains NaN or infinite"),
])
def test_declared_state_arrays_are_checked(tmp_path, spoil, message):
    episode = _with_states(make_episode(LENGTH))
    spoil(episode)
    with _state_writer(tmp_path / "d") as writer:
        with pytest.raises(ValueError, match=message):
            writer.add_episode(episode, policy_id="p")


def test_states_given_to_a_dataset_that_declares_none_are_refused_not_dropped(tmp_path):
    with _writer(tmp_path / "d") as writer:
        with pytest.raises(ValueError, match="declares no such array: give the writer "
                                             "state_fields"):
            writer.add_episode(_with_states(make_episode(LENGTH)), policy_id="p")


def test_resume_refuses_other_state_arrays(tmp_path):
    folder = tmp_path / "d"
    with pytest.raises(RuntimeError):
        with _state_writer(folder) as writer:
            writer.add_episode(_with_states(make_episode(LENGTH)), policy_id="p")
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="stores the state arrays"):
        _writer(folder, resume=True)
    writer = _state_writer(folder, resume=True)
    assert writer.num_episodes == 1
    writer.close()


def _make_version_1(folder):
    """Turn a dataset without states into exactly what format version 1 wrote."""
    manifest = read_manifest(folder)
    for record in manifest["shards"]:
        with h5py.File(folder / record["file"], "r+") as handle:
            handle.attrs["format_version"] = 1
        record["sha256"] = sha256_file(folder / record["file"])
        record["bytes"] = (folder / record["file"]).stat().st_size
    manifest["format_version"] = 1
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_version_1_datasets_keep_loading_without_states(tmp_path):
    from lqv_d4rl.dataset import combine, load_dataset

    old = _make_version_1(write_tiny_dataset(tmp_path / "walker_walk-random", level="random"))
    assert verify_dataset(old, require_complete=True) == []
    data = load_dataset(old)
    assert data.states is None and data.physics is None and len(data) == 6
    new = tmp_path / "walker_walk-medrep"
    with _state_writer(new, dataset_id="walker_walk-medrep", level="medrep") as writer:
        writer.add_episode(_with_states(make_episode(LENGTH)), policy_id="p")
    both = load_dataset([old, new])
    assert both.states is None and len(both) == 7  # states only when every source has them
    assert combine([load_dataset(new), load_dataset(new)]).states.shape == (2 * LENGTH, 5)
    assert combine([load_dataset(new, lazy=True), load_dataset(old, lazy=True)]).states is None


def test_a_partial_version_1_dataset_is_not_resumed_in_version_2(tmp_path):
    folder = tmp_path / "d"
    with pytest.raises(RuntimeError):
        with _writer(folder) as writer:
            writer.add_episode(make_episode(LENGTH), policy_id="p")
            raise RuntimeError("interrupted")
    _make_version_1(folder)
    with pytest.raises(ValueError, match="started in format version 1"):
        _writer(folder, resume=True)


def test_verify_catches_shards_whose_state_arrays_disagree_with_the_manifest(tmp_path):
    folder = tmp_path / "d"
    with _state_writer(folder) as writer:
        writer.add_episode(_with_states(make_episode(LENGTH)), policy_id="p")
    manifest = read_manifest(folder)
    manifest["spaces"]["state"]["shape"] = [6]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = verify_dataset(folder)
    assert len(problems) == 1 and "shard-00000.h5" in problems[0] and "state" in problems[0]
    manifest["spaces"]["state"]["dtype"] = "float64"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptDatasetError, match="spaces.state.dtype must be 'float32'"):
        read_manifest(folder)
