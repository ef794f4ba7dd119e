"""Hub download/upload against a loopback stand-in of the Hugging Face Hub (tests/hub_server.py).

Everything goes through the real ``huggingface_hub`` client; the server only replaces
huggingface.co. A guard refuses any connection that leaves this machine.
"""

import ipaddress
import json
import os
import socket
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_tiny_dataset
from hub_server import HubServer
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _http as hf_http

from lqv_d4rl import hub as hub_module
from lqv_d4rl.cli import main
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.errors import (
    ChecksumMismatchError,
    CorruptDatasetError,
    DatasetExistsError,
    DatasetNotFoundError,
    UnknownDatasetError,
)
from lqv_d4rl.format import read_episode_table, read_manifest, verify_dataset
from lqv_d4rl.hub import HubError, HubUnavailableError, UnknownRevisionError
from lqv_d4rl.stats import return_statistics

REPO = "lqv-test/bench"
DATASET = "walker_walk-medrep"


# ------------------------------------------------------------------------------------ fixtures


def _is_loopback(host) -> bool:
    if host is None:
        return True  # a passive (listening) lookup
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No test may reach beyond this machine: name lookups and connections that would leave it fail,
    and the test fails even if the library swallowed that error (e.g. best-effort telemetry)."""
    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(address[0])
            raise OSError(f"test tried to connect to {address[0]} (tests stay on loopback)")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            attempts.append(host)
            raise socket.gaierror(f"test tried to look up {host!r} (tests stay on loopback)")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert attempts == [], f"the test tried to reach {attempts}"


@pytest.fixture(autouse=True)
def isolated_hub_environment(tmp_path, monkeypatch):
    """A private HF cache (HF_HOME), a dummy token, and no configuration from the outside."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                 "LQV_D4RL_HUB_REPO", "LQV_D4RL_HUB_ENDPOINT", "LQV_D4RL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "lqv-test-token")  # never send a real token anywhere
    # huggingface_hub reads these when imported; pin them for the tests
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no agent lookup on hf.co


@pytest.fixture
def hub(monkeypatch):
    """The loopback Hub, set as our endpoint through $LQV_D4RL_HUB_ENDPOINT."""
    server = HubServer().start()
    monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture
def source(tmp_path):
    """A finished local walker_walk-medrep: 6 episodes in 3 shards."""
    return write_tiny_dataset(tmp_path / "src" / DATASET)


@pytest.fixture
def published(hub, source):
    """``source`` uploaded to REPO; returns the UploadResult."""
    return hub_module.upload_dataset(source, repo_id=REPO)


def download(tmp_path, dataset_id=DATASET, root="root", **options):
    return hub_module.download_dataset(dataset_id, repo_id=REPO, root=tmp_path / root, progress=False,
                                       **options)


def assert_same_data(a, b):
    for name in ("images", "actions", "rewards", "discounts", "is_first", "is_last", "is_terminal",
                 "episode_lengths", "returns", "policy_ids", "policy_steps"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


def entries(folder):
    """What a folder holds (nothing if it does not exist)."""
    return sorted(folder.iterdir()) if folder.exists() else []


def shard_names(folder):
    return [shard["file"] for shard in read_manifest(folder)["shards"]]


# ------------------------------------------------------------------------------------ round trip


def test_upload_then_download_gives_the_same_dataset(tmp_path, hub, source, published):
    folder = download(tmp_path)

    assert folder == tmp_path / "root" / DATASET
    assert verify_dataset(folder) == []
    assert (folder / "manifest.json").read_bytes() == (source / "manifest.json").read_bytes()
    assert_same_data(load_dataset(folder), load_dataset(source))
    record = hub_module.read_hub_record(folder)
    assert record["repo_id"] == REPO and record["revision"] == "main" and record["commit"] == published.commit
    # shards are hard links to the HF cache's blobs: one copy on disk
    assert all((folder / name).stat().st_nlink >= 2 for name in shard_names(folder))
    # readable like any folder made with mkdir (the umask decides), not private to this user
    assert folder.stat().st_mode & 0o777 == folder.parent.stat().st_mode & 0o777
    assert hub.repos[REPO].tags[hub_module.FORMAT_TAG] == published.commit


def test_second_download_fetches_nothing(tmp_path, hub, published):
    download(tmp_path)
    gets_before = [r for r in hub.requests if r.method == "GET"]
    assert download(tmp_path) == tmp_path / "root" / DATASET
    new_gets = [r for r in hub.requests if r.method == "GET"][len(gets_before):]
    assert all("/api/datasets/" in r.path for r in new_gets)  # only the revision lookup


def test_damaged_download_is_repaired_and_crash_leftovers_are_removed(tmp_path, hub, published):
    folder = download(tmp_path)
    (folder / "shard-00001.h5").unlink()
    leftover = tmp_path / "root" / f".{DATASET}.partial-crashed"
    leftover.mkdir()
    os.utime(leftover, (0, 0))  # old: its download is long dead

    assert download(tmp_path) == folder
    assert verify_dataset(folder) == []
    assert entries(tmp_path / "root") == [folder]


def test_identical_locally_generated_dataset_is_kept(tmp_path, hub, source, published):
    folder = download(tmp_path, root="src")
    assert folder == source
    assert hub_module.read_hub_record(source) is None
    assert not hub.content_gets(f"{DATASET}/shard-00000.h5")


def test_load_dataset_download_true_uses_the_hub(tmp_path, hub, source, published, monkeypatch):
    monkeypatch.setenv("LQV_D4RL_HUB_REPO", REPO)
    data = load_dataset(DATASET, root=tmp_path / "root", download=True)
    assert_same_data(data, load_dataset(source))


# ------------------------------------------------------------------------------------ revisions


def test_revision_pins_a_version_and_finished_data_is_not_replaced_without_force(tmp_path, hub, source):
    first = hub_module.upload_dataset(source, repo_id=REPO, tag="v1")
    newer = write_tiny_dataset(tmp_path / "src2" / DATASET, seed=7)
    second = hub_module.upload_dataset(newer, repo_id=REPO)

    folder = download(tmp_path, revision="v1")
    assert_same_data(load_dataset(folder), load_dataset(source))
    assert hub_module.read_hub_record(folder)["commit"] == first.commit

    with pytest.raises(DatasetExistsError, match="force"):
        download(tmp_path)  # main now holds other data
    assert_same_data(load_dataset(folder), load_dataset(source))

    download(tmp_path, force=True)
    assert_same_data(load_dataset(folder), load_dataset(newer))
    assert hub_module.read_hub_record(folder)["commit"] == second.commit
    assert hub.repos[REPO].tags == {"v1": first.commit, hub_module.FORMAT_TAG: second.commit}


def test_failed_replacement_puts_the_old_dataset_back(tmp_path, hub, source, monkeypatch):
    first = hub_module.upload_dataset(source, repo_id=REPO, tag="v1")
    hub_module.upload_dataset(write_tiny_dataset(tmp_path / "src2" / DATASET, seed=7), repo_id=REPO)
    folder = download(tmp_path, revision="v1")
    real_rename = os.rename

    def rename(source_path, destination):
        if ".partial-" in os.fspath(source_path):  # the finished staging folder cannot be moved
            raise OSError("simulated failure")
        return real_rename(source_path, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="simulated failure"):
        download(tmp_path, force=True)
    assert entries(tmp_path / "root") == [folder]
    assert_same_data(load_dataset(folder), load_dataset(source))
    assert hub_module.read_hub_record(folder)["commit"] == first.commit


def test_unknown_revision_is_named(tmp_path, hub, published):
    with pytest.raises(UnknownRevisionError, match="no-such-tag"):
        download(tmp_path, revision="no-such-tag")


def test_existing_tag_is_refused_before_uploading(hub, source, published):
    hub_module.upload_dataset(source, repo_id=REPO, tag="v1")
    commits = len(hub.repos[REPO].commits)
    with pytest.raises(HubError, match="already exists"):
        hub_module.upload_dataset(source, repo_id=REPO, tag="v1")
    assert len(hub.repos[REPO].commits) == commits


# ------------------------------------------------------------------------------------ unknown data


def test_unknown_dataset_id_fails_before_any_request(tmp_path, hub, published):
    before = len(hub.requests)
    with pytest.raises(UnknownDatasetError, match="walker_walk-medrep"):
        download(tmp_path, dataset_id="walker_wlak-medrep")
    assert len(hub.requests) == before


def test_dataset_absent_from_the_repo_names_repo_and_revision(tmp_path, hub, published):
    with pytest.raises(DatasetNotFoundError) as info:
        download(tmp_path, dataset_id="walker_walk-medium")
    message = str(info.value)
    assert REPO in message and "main" in message and published.commit[:12] in message
    assert f"Datasets there: {DATASET}" in message


def test_unknown_repository(tmp_path, hub):
    with pytest.raises(HubError, match="lqv-test/missing"):
        hub_module.download_dataset(DATASET, repo_id="lqv-test/missing", root=tmp_path, progress=False)


# ------------------------------------------------------------------------------------ integrity


def test_tampered_file_on_the_hub_is_fetched_twice_then_reported(tmp_path, hub, published):
    shard = f"{DATASET}/shard-00001.h5"
    content = bytearray(hub.file_content(REPO, shard))
    content[-1] ^= 0x01
    hub.tamper(REPO, shard, bytes(content))

    with pytest.raises(ChecksumMismatchError, match="shard-00001.h5"):
        download(tmp_path)
    assert len(hub.content_gets(shard)) == 2
    assert entries(tmp_path / "root") == []  # no dataset, no staging leftovers


def test_transfer_corrupted_once_is_fetched_again(tmp_path, hub, published):
    shard = f"{DATASET}/shard-00001.h5"
    hub.add_fault(shard, "corrupt")
    folder = download(tmp_path)
    assert len(hub.content_gets(shard)) == 2
    assert verify_dataset(folder) == []


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, hub, published, monkeypatch):
    # small read chunks, so that the client holds part of the file when the connection dies
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    shard = f"{DATASET}/shard-00001.h5"
    hub.add_fault(shard, "drop")

    folder = download(tmp_path)
    first, retry = hub.content_gets(shard)
    assert first.range is None
    assert retry.range.startswith("bytes=") and int(retry.range[6:-1]) > 0
    assert verify_dataset(folder) == []


def test_failed_download_leaves_no_dataset_and_next_run_skips_finished_shards(tmp_path, hub, published):
    shard = f"{DATASET}/shard-00002.h5"
    hub.add_fault(shard, "drop")
    hub.add_fault(shard, "error")

    with pytest.raises(HubError, match="shard-00002.h5") as info:
        download(tmp_path)
    assert "again" in str(info.value)
    root = tmp_path / "root"
    assert entries(root) == []  # a partial dataset is never left where it could be loaded
    with pytest.raises(DatasetNotFoundError):
        load_dataset(DATASET, root=root)

    folder = download(tmp_path)
    assert verify_dataset(folder) == []
    assert len(hub.content_gets(f"{DATASET}/shard-00000.h5")) == 1


@pytest.mark.parametrize("bad_name", ["../evil.h5", "/tmp/lqv-evil.h5", "sub/shard-00000.h5", "evil.sh",
                                      "shard-00000.h5\n"])
def test_hostile_manifest_is_refused_and_nothing_is_written(tmp_path, hub, source, published, bad_name):
    manifest = read_manifest(source)
    manifest["shards"][0]["file"] = bad_name
    api = HfApi(endpoint=hub.url)
    api.upload_file(path_or_fileobj=json.dumps(manifest).encode(), path_in_repo=f"{DATASET}/manifest.json",
                    repo_id=REPO, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"#!/bin/sh\n", path_in_repo="evil.h5", repo_id=REPO, repo_type="dataset")

    with pytest.raises(CorruptDatasetError) as info:
        download(tmp_path)
    assert repr(bad_name) in str(info.value)
    assert entries(tmp_path / "root") == []
    assert not os.path.exists("/tmp/lqv-evil.h5")
    outside_cache = [p for p in tmp_path.rglob("*evil*") if "hf-home" not in p.parts]
    assert outside_cache == []


# ------------------------------------------------------------------------------------ offline


def test_offline_mode_and_no_network_use_the_cache(tmp_path, hub, source, published, monkeypatch):
    folder = download(tmp_path)
    hub.stop()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download(tmp_path) == folder
    (folder / "shard-00001.h5").unlink()  # a damaged copy is rebuilt from the cache, offline
    assert download(tmp_path) == folder
    assert verify_dataset(folder) == []
    again = download(tmp_path, root="root2")  # materialized from the HF cache alone
    assert_same_data(load_dataset(again), load_dataset(source))
    with pytest.raises(HubUnavailableError, match="offline"):
        download(tmp_path, dataset_id="cheetah_run-random", root="root3")

    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, but the server is gone: the cache stands in
    third = download(tmp_path, root="root4")
    assert hub_module.read_hub_record(third)["commit"] == published.commit
    with pytest.raises(HubUnavailableError, match="cannot reach the Hub"):
        download(tmp_path, dataset_id="cheetah_run-random", root="root5")


# ------------------------------------------------------------------------------------ network faults


@pytest.fixture
def no_backoff(monkeypatch):
    """The sleeps of the client's retry loop, recorded instead of slept (each retry sleeps)."""
    sleeps = []
    monkeypatch.setattr(hf_http.time, "sleep", sleeps.append)
    return sleeps


def test_unreachable_hub_fails_at_once_with_one_line(tmp_path, hub, source, no_backoff):
    hub.stop()  # connections are refused from now on
    with pytest.raises(HubUnavailableError, match=f"cannot reach the Hub at {hub.url}"):
        hub_module.list_remote_datasets(REPO)
    with pytest.raises(HubUnavailableError, match=f"cannot reach the Hub at {hub.url}"):
        download(tmp_path)
    with pytest.raises(HubUnavailableError, match=f"cannot reach the Hub at {hub.url}"):
        hub_module.upload_dataset(source, repo_id=REPO)
    assert no_backoff == []  # no retry loop: the first refused connection is the answer
    assert entries(tmp_path / "root") == []

    for args in (["list", "--remote", "--repo-id", REPO],
                 ["download", DATASET, "--repo-id", REPO, "--root", str(tmp_path / "root")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
        assert "cannot reach the Hub" in result.output
    assert no_backoff == []


def test_hub_that_never_answers_times_out(tmp_path, monkeypatch, no_backoff):
    from hub_server import SilentServer

    monkeypatch.setattr(hub_module, "REACHABILITY_TIMEOUT", 0.2)
    outcome = {}

    def list_and_download():
        for name, call in (("list", lambda: hub_module.list_remote_datasets(REPO)),
                           ("download", lambda: download(tmp_path))):
            try:
                call()
            except HubUnavailableError as err:
                outcome[name] = str(err)

    with SilentServer() as silent:
        monkeypatch.setenv("LQV_D4RL_HUB_ENDPOINT", silent.url)
        worker = threading.Thread(target=list_and_download, daemon=True)
        worker.start()
        worker.join(timeout=60)  # a guard only: without a timeout the client waits forever
        assert not worker.is_alive(), "still waiting for a Hub that never answers"
    assert "Timeout" in outcome["list"] and "Timeout" in outcome["download"]
    assert no_backoff == []


def test_complete_local_dataset_needs_no_network(tmp_path, hub, source, published, no_backoff):
    downloaded = download(tmp_path)
    requests = len(hub.requests)
    assert_same_data(load_dataset(DATASET, root=tmp_path / "root", download=True), load_dataset(source))
    assert len(hub.requests) == requests  # a complete local dataset is just loaded
    hub.stop()

    assert_same_data(load_dataset(DATASET, root=tmp_path / "root", download=True), load_dataset(source))
    assert download(tmp_path) == downloaded  # the local copy stands in for the unreachable Hub
    runner = CliRunner()
    result = runner.invoke(main, ["download", DATASET, "--repo-id", REPO, "--root", str(source.parent)])
    assert result.exit_code == 0, result.output  # made on this machine, never downloaded
    assert "not compared with the Hub" in result.output and "identical" not in result.output
    assert no_backoff == []


def test_moving_the_format_tag_never_leaves_the_repo_without_it(tmp_path, hub, source, published):
    tag = hub_module.FORMAT_TAG
    newer = write_tiny_dataset(tmp_path / "src2" / DATASET, seed=7)
    hub.fail_requests("POST", rf"/tag/(?!{published.commit})", count=1)  # one hiccup: retried
    second = hub_module.upload_dataset(newer, repo_id=REPO)
    assert hub.repos[REPO].tags[tag] == second.commit

    hub.fail_requests("POST", rf"/tag/(?!{second.commit})", count=hub_module.TAG_ATTEMPTS)
    with pytest.raises(HubError, match=f"could not be moved.*still points at {second.commit[:12]}"):
        hub_module.upload_dataset(source, repo_id=REPO)
    assert hub.repos[REPO].tags[tag] == second.commit  # put back where it was
    assert hub.repos[REPO].branches["main"] != second.commit  # the upload itself went through


# ------------------------------------------------------------------------------------ upload, listing


def test_upload_card_listing_and_stale_files(tmp_path, hub, source):
    cheetah = write_tiny_dataset(tmp_path / "src" / "cheetah_run-random", task="cheetah_run", level="random",
                                 num_policies=1)
    first = hub_module.upload_dataset([source, cheetah], repo_id=REPO)
    assert hub_module.list_remote_datasets(REPO) == ["cheetah_run-random", DATASET]

    smaller = write_tiny_dataset(tmp_path / "src2" / DATASET, num_policies=1, max_shard_bytes=2**30)
    hub_module.upload_dataset(DATASET, repo_id=REPO, root=tmp_path / "src2")
    files = [p for p in HfApi(endpoint=hub.url).list_repo_files(REPO, repo_type="dataset")
             if p.startswith(DATASET)]
    assert sorted(files) == [f"{DATASET}/manifest.json", f"{DATASET}/shard-00000.h5",
                             f"{DATASET}/statistics.json"]

    card = hub.file_content(REPO, "README.md").decode()
    returns = read_episode_table(smaller / "shard-00000.h5")["return"]
    walker_row = next(line for line in card.splitlines() if line.startswith(f"| {DATASET} |"))
    assert walker_row.split("|")[2].strip() == "2"
    assert walker_row.split("|")[3].strip() == f"{return_statistics(returns)['mean']:.1f}"
    cheetah_row = next(line for line in card.splitlines() if line.startswith("| cheetah_run-random |"))
    assert cheetah_row.split("|")[2].strip() == "2"  # kept from the earlier upload
    assert hub_module.list_remote_datasets(REPO, revision=first.commit) == ["cheetah_run-random", DATASET]


def test_listing_errors(hub, published):
    with pytest.raises(UnknownRevisionError, match="v9"):
        hub_module.list_remote_datasets(REPO, revision="v9")
    with pytest.raises(HubError, match="lqv-test/missing"):
        hub_module.list_remote_datasets("lqv-test/missing")


def test_corrupt_local_dataset_is_not_uploaded(hub, source):
    shard = source / "shard-00000.h5"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDatasetError, match="shard-00000.h5"):
        hub_module.upload_dataset(source, repo_id=REPO)
    assert hub.requests == []


# ------------------------------------------------------------------------------------ CLI


def test_cli_upload_and_download(tmp_path, hub, source):
    runner = CliRunner()
    result = runner.invoke(main, ["upload", DATASET, "--root", str(source.parent), "--repo-id", REPO,
                                  "--tag", "v1.0"])
    assert result.exit_code == 0, result.output
    commit = hub.repos[REPO].tags["v1.0"]
    assert commit in result.output

    destination = tmp_path / "dst"
    result = runner.invoke(main, ["download", DATASET, "--repo-id", REPO, "--revision", "v1.0",
                                  "--root", str(destination)])
    assert result.exit_code == 0, result.output
    assert commit[:12] in result.output
    assert verify_dataset(destination / DATASET) == []

    result = runner.invoke(main, ["download", "walker_walk-medium", "--repo-id", REPO, "--root", str(destination)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: dataset 'walker_walk-medium' is not in Hub repository")
    assert "Traceback" not in result.output

    result = runner.invoke(main, ["upload", DATASET, "--root", str(source.parent), "--repo-id", REPO,
                                  "--tag", "v1.0"])
    assert result.exit_code == 1 and "already exists" in result.output


def test_cli_offline_download_keeps_a_local_dataset_without_claiming_it_matches_the_hub(source, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(main, ["download", DATASET, "--repo-id", REPO, "--root", str(source.parent)])
    assert result.exit_code == 0, result.output
    assert "not compared with the Hub" in result.output and "identical" not in result.output
