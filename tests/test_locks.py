"""One writer per dataset folder: the lock of lqv_d4rl.locks, held by real separate processes."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_episode, write_tiny_dataset

from lqv_d4rl.cli import main
from lqv_d4rl.locks import DatasetLockedError, dataset_lock, dataset_locks, lock_path

HOLDER = """
import sys
from lqv_d4rl.locks import dataset_lock

with dataset_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


class Holder:
    """Another process that holds the lock of ``folder`` until :meth:`release` (or a kill)."""

    def __init__(self, folder, action="generate"):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), action],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "locked"

    @property
    def pid(self):
        return self.process.pid

    def release(self):
        self.process.communicate("\n", timeout=60)
        assert self.process.returncode == 0

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=60)


@pytest.fixture
def holders():
    started = []

    def start(folder, action="generate"):
        started.append(Holder(folder, action))
        return started[-1]

    yield start
    for holder in started:
        if holder.process.poll() is None:
            holder.kill()


def test_a_second_process_is_refused_at_once_and_told_who_holds_the_lock(tmp_path, holders):
    folder = tmp_path / "root" / "walker_walk-medrep"
    holder = holders(folder, "generate")
    record = json.loads(lock_path(folder).read_text())
    assert record["pid"] == holder.pid and record["host"] == socket.gethostname()

    with pytest.raises(DatasetLockedError) as info:
        with dataset_lock(folder, "download"):
            pass
    message = str(info.value)
    assert f"cannot download {folder}" in message
    assert f"generate ('-c {folder} generate', pid {holder.pid} on host {socket.gethostname()}" \
        in message
    assert str(lock_path(folder)) in message

    holder.release()
    with dataset_lock(folder, "download"):
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    assert not lock_path(folder).exists()  # a clean exit leaves nothing behind, not even
    assert not folder.parent.exists()  # the root folder that was made to hold the lock


def test_the_lock_of_a_killed_run_is_stale_and_taken_over(tmp_path, holders, caplog):
    folder = tmp_path / "walker_walk-random"
    holder = holders(folder)
    holder.kill()
    assert json.loads(lock_path(folder).read_text())["pid"] == holder.pid  # left behind

    with caplog.at_level(logging.WARNING, logger="lqv_d4rl.locks"):
        with dataset_lock(folder, "import-npz"):
            pass
    assert f"pid {holder.pid}" in caplog.text and "no longer running" in caplog.text


def test_reentrant_in_one_thread_exclusive_between_threads(tmp_path):
    folder = tmp_path / "d"
    refused = []

    def other_thread():
        try:
            with dataset_lock(folder, "download"):
                pass
        except DatasetLockedError as err:
            refused.append(str(err))

    with dataset_lock(folder, "generate"):
        with dataset_lock(folder, "generate"):  # nested: the same run
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        assert lock_path(folder).exists()  # still held by the outer block
    assert len(refused) == 1 and f"pid {os.getpid()}" in refused[0]
    assert not lock_path(folder).exists()


def test_several_locks_are_all_or_nothing(tmp_path, holders):
    first, second = tmp_path / "a", tmp_path / "b"
    holders(second)
    with pytest.raises(DatasetLockedError):
        with dataset_locks([first, second], "generate"):
            pass
    with dataset_lock(first, "download"):  # the first one was given back
        pass


def _npz_folder(tmp_path):
    source = tmp_path / "npz"
    source.mkdir()
    for index in range(2):
        np.savez(source / f"ep{index}.npz", **make_episode(length=5, seed=index))
    return source


def test_import_npz_in_another_process_is_refused_while_the_folder_is_locked(tmp_path, holders):
    root = tmp_path / "root"
    folder = root / "walker_walk-medrep"
    holder = holders(folder, "download")
    command = [sys.executable, "-m", "lqv_d4rl", "import-npz", str(_npz_folder(tmp_path)),
               "--id", "walker_walk-medrep", "--root", str(root)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: cannot import-npz") and result.stderr.count("\n") == 1
    assert f"pid {holder.pid}" in result.stderr
    assert not folder.exists()

    holder.release()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["walker_walk-medrep"]


@pytest.mark.parametrize("args", [
    ["download", "walker_walk-medrep", "--repo-id", "me/x"],
    ["generate", "walker_walk", "--levels", "medrep"],
])
def test_download_and_generate_are_refused_while_the_folder_is_locked(tmp_path, holders, args,
                                                                       monkeypatch):
    monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", "http://127.0.0.1:9")  # never reached
    root = tmp_path / "root"
    write_tiny_dataset(root / "walker_walk-medrep", num_policies=1)
    before = {p.name: p.read_bytes() for p in (root / "walker_walk-medrep").iterdir()}
    holder = holders(root / "walker_walk-medrep", "import-npz")

    result = CliRunner().invoke(main, args + ["--root", str(root), "--force" if args[0] ==
                                              "download" else "--overwrite"])
    assert result.exit_code == 1, result.output
    assert f"is writing it" in result.output and f"pid {holder.pid}" in result.output
    assert {p.name: p.read_bytes() for p in (root / "walker_walk-medrep").iterdir()} == before
    assert not (root / ".work").exists()  # generate stopped before it trained anything


def test_rerender_is_refused_while_its_target_is_locked(tmp_path, holders):
    from lqv_d4rl.format import ShardWriter

    root = tmp_path / "root"
    with ShardWriter(root / "walker_walk-medrep", dataset_id="walker_walk-medrep",
                     task="walker_walk", level="medrep", action_dim=6,
                     physics_fields=(("physics", 18),)) as writer:
        episode = make_episode(length=5)
        episode["physics"] = np.zeros((5, 18))
        writer.add_episode(episode, policy_id="p")
    holder = holders(root / "mine", "download")
    result = CliRunner().invoke(main, ["rerender", "walker_walk-medrep", "--video-dir",
                                       "procedural", "--id", "mine", "--root", str(root)])
    assert result.exit_code == 1, result.output
    assert "cannot rerender" in result.output and f"pid {holder.pid}" in result.output
    assert not (root / "mine").exists()
