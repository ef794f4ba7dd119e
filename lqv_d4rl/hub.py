"""Download datasets from, and publish them to, the Hugging Face Hub, verified end to end.

Repository layout (a Hub *dataset* repository, default ``lqv-d4rl/lqv-d4rl``)::

    README.md                         dataset card with a return-statistics table per dataset
    <dataset_id>/manifest.json        the dataset's manifest (lists every shard with its sha256)
    <dataset_id>/shard-00000.h5, ...  the shards
    <dataset_id>/statistics.json      episodic return statistics (feeds the card's table)

Commits are tagged ``format-v<N>`` (moved to the newest upload, so that readers of format N can
find the newest data they understand); ``upload --tag NAME`` adds an immutable tag. For a
reproducible leaderboard, download with ``revision=`` a tag or commit sha: the commit a download
resolved to is recorded in ``<root>/<dataset_id>/.hub.json`` and shown in messages.

Where files live: the real ``huggingface_hub`` client downloads into its cache (``HF_HOME``, by
default ``~/.cache/huggingface/hub``), where it handles revisions, offline use and retries. The
dataset folder ``<root>/<dataset_id>/`` that ``load_dataset`` reads holds *hard links* to the
cached shard files, so a dataset is stored once even though it appears in both places (when the
two are on different file systems the shards are copied instead). Deleting either side leaves the
other intact. Never edit shard files in place: they share their bytes with the cache.

Safety: the manifest is fetched first and checked (shard names must be plain ``shard-NNNNN.h5``
names, so a hostile manifest cannot write outside the dataset folder); then every shard is
downloaded, pinned to the one commit the revision resolved to, and checked against the manifest's
sha256. A mismatch is fetched once more with ``force_download`` and then reported by file name.
Shards are linked into a hidden staging folder that is renamed to ``<root>/<dataset_id>`` only
when all of them passed, so a half-downloaded dataset is never mistaken for a finished one. The
client resumes a transfer cut off midway with a Range request; if a download still fails, the
shards already finished stay in the cache and the next run does not fetch them again. A finished
local dataset that differs from the requested one is never replaced without ``force=True``.

Faults. Before it talks to the Hub, every call sends one request with a short timeout
(:data:`REACHABILITY_TIMEOUT`) and no retries, so that an unreachable Hub is reported within
seconds instead of after the client's ~24 s of retries. ``download_dataset`` then carries on as in
offline mode: a finished local copy or the cache is used where it can stand in for the request,
and otherwise one :class:`HubUnavailableError` line says what failed. Two runs never write one
dataset folder at once: a download holds the folder's lock (:mod:`lqv_d4rl.locks`). The moving tag
``format-v<N>`` is re-created at its old commit if it cannot be moved, so it never goes missing.

Configuration is read at call time: repository id from ``repo_id=`` / ``--repo-id``, else
``$LQV_D4RL_HUB_REPO``, else ``lqv-d4rl/lqv-d4rl``; endpoint from ``endpoint=``, else
``$LQV_D4RL_HUB_ENDPOINT``, else ``$HF_ENDPOINT``, else the public Hub; ``HF_HUB_OFFLINE=1`` (or
``local_files_only=True``) uses only what is already on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx2
import numpy as np
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import get_session
from tqdm.auto import tqdm

from . import __version__
from .errors import (
    ChecksumMismatchError,
    CorruptDatasetError,
    DatasetExistsError,
    DatasetNotFoundError,
    LQVError,
)
from .format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARD_PATTERN,
    read_episode_table,
    read_manifest,
    sha256_file,
    verify_dataset,
)
from .folders import HUB_RECORD_NAME, find_dataset_folder, read_hub_record
from .locks import dataset_lock
from .registry import check_dataset_id, dataset_path
from .stats import STATISTIC_KEYS, format_bytes, return_statistics

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "lqv-d4rl/lqv-d4rl"
REPO_ENV_VAR = "LQV_D4RL_HUB_REPO"
ENDPOINT_ENV_VAR = "LQV_D4RL_HUB_ENDPOINT"
REPO_TYPE = "dataset"
STATISTICS_NAME = "statistics.json"
CARD_NAME = "README.md"
FORMAT_TAG = f"format-v{FORMAT_VERSION}"
REACHABILITY_TIMEOUT = 5.0
"""Seconds the first request to the Hub may take before the Hub counts as unreachable."""
TAG_ATTEMPTS = 3
"""Tries at re-creating the moved format tag before it is put back on its old commit."""
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class HubError(LQVError):
    """The Hub could not do what was asked: repository missing, network down, server error."""


class UnknownRevisionError(HubError, LookupError):
    """A branch, tag or commit that does not exist in the repository."""


class HubUnavailableError(HubError, ConnectionError):
    """The Hub cannot be reached (or offline mode is on) and the files are not cached."""


class UnsafeManifestError(CorruptDatasetError):
    """A manifest that names files which are not plain shard names (could escape the folder)."""


@dataclasses.dataclass(frozen=True)
class HubSettings:
    """Where to talk to and where to cache, resolved once per call from arguments and environment."""

    repo_id: str
    endpoint: str
    cache_dir: Path
    token: str | bool | None
    offline: bool
    unreachable: str = ""
    """Why the Hub could not be reached ('' unless a reachability check failed)."""


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What :func:`upload_dataset` published."""

    repo_id: str
    branch: str
    commit: str
    """The sha of the new commit: pin downloads to it for reproducible results."""
    commit_url: str
    dataset_ids: tuple
    tags: tuple


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


def hub_settings(repo_id=None, *, endpoint=None, cache_dir=None, token=None,
                 local_files_only=False) -> HubSettings:
    """Resolve repository id, endpoint, cache folder and offline mode from arguments and environment.

    Read at call time (``huggingface_hub`` itself reads ``HF_ENDPOINT``, ``HF_HOME`` and
    ``HF_HUB_OFFLINE`` once, when it is imported).
    """
    repo_id = repo_id or os.environ.get(REPO_ENV_VAR) or DEFAULT_REPO_ID
    endpoint = (endpoint or os.environ.get(ENDPOINT_ENV_VAR) or os.environ.get("HF_ENDPOINT")
                or constants.ENDPOINT)
    offline = bool(local_files_only) or constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE")
    return HubSettings(repo_id, endpoint.rstrip("/"), _hub_cache_dir(cache_dir), token, offline)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache_dir(cache_dir) -> Path:
    """The Hugging Face cache folder, with the same precedence as ``huggingface_hub``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _api(settings: HubSettings):
    return HfApi(endpoint=settings.endpoint, token=settings.token, library_name="lqv-d4rl",
                 library_version=__version__)


def _where(settings: HubSettings, revision=None, commit=None) -> str:
    """``repo@revision (commit abc123def456)`` for messages."""
    text = f"{settings.repo_id}@{revision or 'main'}"
    if commit and commit != revision:
        text += f" (commit {commit[:12]})"
    return text


@contextmanager
def _hub_errors(settings: HubSettings, revision=None, *, doing: str, hint: str = ""):
    """Turn ``huggingface_hub`` / network exceptions raised while ``doing`` into our errors."""
    hint = f" {hint}" if hint else ""
    try:
        yield
    except LQVError:
        raise
    except hf_errors.RevisionNotFoundError as err:
        raise UnknownRevisionError(
            f"revision {revision or 'main'!r} does not exist in Hub repository {settings.repo_id!r} "
            f"({settings.endpoint}): pass a branch, a tag or a full commit sha of that repository."
        ) from err
    except hf_errors.RepositoryNotFoundError as err:
        raise HubError(
            f"Hub dataset repository {settings.repo_id!r} does not exist at {settings.endpoint} (or is "
            "private: log in with `hf auth login` or set HF_TOKEN). Check --repo-id / "
            f"${REPO_ENV_VAR}."
        ) from err
    except (hf_errors.LocalEntryNotFoundError, hf_errors.RevisionResolutionError,
            hf_errors.OfflineModeIsEnabled) as err:
        raise HubUnavailableError(_unavailable_message(settings, doing) + hint) from err
    except hf_errors.HFValidationError as err:
        raise HubError(f"{doing} failed: {_first_line(err)}") from err
    except hf_errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise HubError(
            f"{doing} failed: the Hub at {settings.endpoint} answered HTTP {status} "
            f"({_first_line(err)}).{hint}"
        ) from err
    except httpx2.TransportError as err:
        raise HubUnavailableError(
            f"{doing} failed: cannot reach the Hub at {settings.endpoint} ({type(err).__name__}: "
            f"{err}). Check your connection, or set HF_HUB_OFFLINE=1 to use what is cached.{hint}"
        ) from err
    except OSError as err:
        # e.g. the client's "Consistency check failed" when a transfer ends short
        raise HubError(f"{doing} failed: {_first_line(err)}.{hint}") from err


def _unavailable_message(settings: HubSettings, doing: str) -> str:
    if settings.unreachable:
        return (f"{doing} failed: {settings.unreachable}, and the files are not in the local cache "
                f"{settings.cache_dir}. Check your connection (or --repo-id / ${ENDPOINT_ENV_VAR}).")
    if settings.offline:
        return (f"{doing} failed: offline mode is on (HF_HUB_OFFLINE=1 or local_files_only) and the "
                f"files are not in the local cache {settings.cache_dir}. Go online once (unset "
                "HF_HUB_OFFLINE) to download them.")
    return (f"{doing} failed: the Hub at {settings.endpoint} cannot be reached and the files are not "
            f"in the local cache {settings.cache_dir}. Check your connection.")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def unreachable_reason(settings: HubSettings) -> str:
    """'' when the Hub endpoint answers one request (any HTTP status) within
    :data:`REACHABILITY_TIMEOUT` seconds, else why not ('cannot reach the Hub at URL (...)').

    One try, no retries: the client's own retries take ~24 s before they give up on a Hub that
    is down. Goes through the client's HTTP session, so proxies and certificates apply."""
    try:
        get_session().head(settings.endpoint, timeout=REACHABILITY_TIMEOUT, follow_redirects=False)
    except (httpx2.TransportError, httpx2.InvalidURL) as err:
        return f"cannot reach the Hub at {settings.endpoint} ({type(err).__name__}: {_first_line(err)})"
    return ""


def _require_hub(settings: HubSettings, doing: str) -> None:
    """Raise HubUnavailableError at once (one line) when the Hub cannot be reached."""
    reason = unreachable_reason(settings)
    if reason:
        raise HubUnavailableError(f"{doing} failed: {reason}. Check your connection (or "
                                  f"--repo-id / ${ENDPOINT_ENV_VAR}).")


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------


def download_dataset(dataset_id, *, repo_id=None, revision=None, root=None, force=False,
                     endpoint=None, cache_dir=None, token=None, local_files_only=False,
                     progress=True) -> Path:
    """Download dataset ``dataset_id`` from the Hub into ``<root>/<dataset_id>``; return that folder.

    ``revision`` (branch, tag or commit sha; default the main branch) is resolved to one commit,
    and every file comes from that commit, which is recorded in ``<folder>/.hub.json``. Each shard
    is checked against the manifest's sha256 (one re-fetch on mismatch, then
    :class:`ChecksumMismatchError` naming the file). An existing identical dataset is kept as is;
    a finished one that differs raises :class:`DatasetExistsError` unless ``force=True``.
    ``progress`` shows progress bars (on a terminal).

    When the Hub cannot be reached, the download goes on as in offline mode (local copy or cache).

    Raises UnknownDatasetError (bad id), DatasetNotFoundError (not in the repository),
    UnknownRevisionError, HubUnavailableError (offline or no network, and not cached),
    UnsafeManifestError / CorruptDatasetError (bad manifest), DatasetLockedError (another run is
    writing the folder), HubError (other Hub failures).
    """
    check_dataset_id(dataset_id)
    settings = hub_settings(repo_id, endpoint=endpoint, cache_dir=cache_dir, token=token,
                            local_files_only=local_files_only)
    target = dataset_path(dataset_id, root)
    with dataset_lock(target, "download"):
        if not settings.offline:
            reason = unreachable_reason(settings)
            if reason:
                settings = dataclasses.replace(settings, offline=True, unreachable=reason)
        _fetch_into(target, dataset_id, settings, revision, force, progress)
    if settings.unreachable:
        logger.warning("%s: %s; used the local copy or the cache (not compared with the Hub)",
                       dataset_id, settings.unreachable)
    return target


def _fetch_into(target: Path, dataset_id, settings: HubSettings, revision, force, progress) -> None:
    """Make ``target`` hold ``dataset_id`` at ``revision`` (download_dataset's work)."""
    local_manifest = _finished_manifest(target)
    if settings.offline and not force and _offline_copy_allowed(target, local_manifest, settings, revision):
        logger.info("%s: offline, using the local copy in %s", dataset_id, target)
        return
    pin = _Pin(settings, revision, _resolve_commit(settings, revision))
    if not force and _is_download_of(target, local_manifest, pin):
        return
    manifest_file = _fetch_manifest(pin, dataset_id)
    manifest = _checked_remote_manifest(manifest_file, dataset_id, pin)
    if not _keep_existing(target, local_manifest, manifest, pin, force):
        _materialize(target, manifest_file, manifest, pin, progress)


@dataclasses.dataclass(frozen=True)
class _Pin:
    """A repository revision resolved to one commit: where every file of a download comes from."""

    settings: HubSettings
    revision: str | None
    commit: str

    def __str__(self) -> str:
        return _where(self.settings, self.revision, self.commit)


def _finished_manifest(folder: Path) -> dict | None:
    """The manifest of a complete dataset in ``folder``, else None (missing, partial or unreadable)."""
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, NotADirectoryError, CorruptDatasetError):
        return None
    return manifest if manifest.get("complete") else None


def _offline_copy_allowed(target: Path, local: dict | None, settings: HubSettings, revision) -> bool:
    """Offline: may the finished local copy stand in for ``repo@revision``? Yes if all its shards
    are there and its ``.hub.json`` does not show that it came from another repository or revision
    (a copy with missing shards is rebuilt from the cache)."""
    if local is None or not _shards_present(target, local):
        return False
    record = read_hub_record(target)
    if record is None or revision is None:
        return True
    return (record.get("repo_id") == settings.repo_id
            and revision in (record.get("revision"), record.get("commit")))


def _is_download_of(target: Path, local: dict | None, pin: _Pin) -> bool:
    """True when ``target`` is an intact download of exactly the pinned commit."""
    record = read_hub_record(target) if local is not None else None
    return (record is not None and record.get("repo_id") == pin.settings.repo_id
            and record.get("commit") == pin.commit and _shards_present(target, local))


def _resolve_commit(settings: HubSettings, revision) -> str:
    """The commit sha ``revision`` names now (from the cache's refs when offline)."""
    with _hub_errors(settings, revision, doing=f"resolving {_where(settings, revision)}"):
        resolved = _api(settings).resolve_revision(
            settings.repo_id, repo_type=REPO_TYPE, revision=revision, cache_dir=settings.cache_dir,
            local_files_only=settings.offline)
    return resolved.resolved


def _download(settings: HubSettings, repo_path: str, commit: str, *, force_download=False,
              progress=True) -> Path:
    """Fetch one repository file at ``commit`` into the cache; return its cached path."""
    return Path(hf_hub_download(
        settings.repo_id, repo_path, repo_type=REPO_TYPE, revision=commit, endpoint=settings.endpoint,
        cache_dir=settings.cache_dir, token=settings.token, local_files_only=settings.offline,
        force_download=force_download, library_name="lqv-d4rl", library_version=__version__,
        tqdm_class=None if progress else _SilentTqdm))


def _fetch_manifest(pin: _Pin, dataset_id: str) -> Path:
    doing = f"downloading the manifest of {dataset_id} from {pin}"
    with _hub_errors(pin.settings, pin.revision, doing=doing):
        try:
            return _download(pin.settings, f"{dataset_id}/{MANIFEST_NAME}", pin.commit, progress=False)
        except hf_errors.RemoteEntryNotFoundError as err:
            raise DatasetNotFoundError(_absent_message(pin, dataset_id)) from err


def _absent_message(pin: _Pin, dataset_id: str) -> str:
    message = (f"dataset {dataset_id!r} is not in Hub repository {pin}: it has no "
               f"{dataset_id}/{MANIFEST_NAME}.")
    try:
        present = list_remote_datasets(pin.settings.repo_id, revision=pin.commit,
                                       endpoint=pin.settings.endpoint, token=pin.settings.token)
    except LQVError:
        return message
    return message + (f" Datasets there: {', '.join(present)}." if present else " It holds no datasets.")


def _checked_remote_manifest(path: Path, dataset_id: str, pin: _Pin) -> dict:
    """Read a downloaded manifest and make sure it is safe and complete before using it."""
    manifest = read_manifest(path.parent)  # also refuses names with '/', '..' or absolute paths
    name = f"{dataset_id}/{MANIFEST_NAME} in {pin}"
    if manifest["dataset_id"] != dataset_id:
        raise CorruptDatasetError(
            f"{name} describes dataset {manifest['dataset_id']!r}; refusing to download it.")
    if not manifest.get("complete"):
        raise CorruptDatasetError(f"{name} describes an unfinished dataset (not marked complete).")
    if not manifest["shards"]:
        raise CorruptDatasetError(f"{name} lists no shards.")
    for shard in manifest["shards"]:  # read_manifest checked the types and that no name repeats
        if not SHARD_PATTERN.fullmatch(shard["file"]):
            raise UnsafeManifestError(
                f"{name} lists shard file {shard['file']!r}: only plain names like 'shard-00000.h5' "
                "are allowed. Refusing to download (nothing was written).")
        if not _SHA256_HEX.fullmatch(shard["sha256"]):
            raise CorruptDatasetError(f"{name}: shard {shard['file']!r} has no valid sha256.")
    return manifest


def _same_shards(a: dict, b: dict) -> bool:
    def key(manifest):
        return [(s["file"], s["sha256"], s["bytes"]) for s in manifest["shards"]]

    return a["dataset_id"] == b["dataset_id"] and key(a) == key(b)


def _shards_present(folder: Path, manifest: dict) -> bool:
    """Cheap check that every shard is there with its recorded size (no hashing)."""
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return False
    return True


def _keep_existing(target: Path, local: dict | None, remote: dict, pin: _Pin, force: bool) -> bool:
    """Decide about an existing ``target``: True = it already is the requested dataset,
    False = (re)build it; raise DatasetExistsError for finished data that differs."""
    if not target.exists():
        return False
    identical = local is not None and _same_shards(local, remote)
    if identical and not force and _shards_present(target, local):
        logger.info("%s: %s already holds %s", remote["dataset_id"], target, pin)
        return True
    if force or identical or (target.is_dir() and not any(target.iterdir())):
        return False  # asked to, or repairing missing shards from verified files, or an empty folder
    record = read_hub_record(target)
    if record is not None:
        commit = str(record.get("commit"))[:12]
        origin = f"from {record.get('repo_id')}@{record.get('revision')} (commit {commit})"
    else:
        origin = "not downloaded from the Hub" if local is not None else "unfinished or not a dataset"
    raise DatasetExistsError(
        f"{target} already holds a different {remote['dataset_id']} ({origin}); the Hub has {pin}. "
        "Pass force=True (CLI: --force) to replace it, or download into another root.")


def _materialize(target: Path, manifest_file: Path, manifest: dict, pin: _Pin, progress: bool) -> None:
    """Fetch and verify every shard, assemble the folder in staging, then move it into place."""
    dataset_id = manifest["dataset_id"]
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_crash_leftovers(target)
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()  # (not tempfile.mkdtemp: its mode 0o700 would hide the dataset from other users)
    try:
        bar = tqdm(manifest["shards"], desc=f"{dataset_id} @ {pin.commit[:12]}", unit="shard",
                   disable=True if not progress else None)
        for shard in bar:
            cached = _fetch_verified_shard(pin, dataset_id, shard, progress)
            _link_or_copy(cached, staging / shard["file"])
        shutil.copyfile(manifest_file, staging / MANIFEST_NAME)
        _write_hub_record(staging, pin)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("%s: downloaded %s to %s", dataset_id, pin, target)


def _remove_crash_leftovers(target: Path, min_age_seconds: float = 3600) -> None:
    """Delete staging / replaced folders of ``target`` that a killed run left behind.

    They only hold links to cached files (or an old copy that was being replaced), so nothing is
    lost; folders younger than ``min_age_seconds`` may belong to a download running right now.
    """
    for pattern in (f".{target.name}.partial-*", f".{target.name}.replaced-*"):
        for leftover in target.parent.glob(pattern):
            try:
                age = time.time() - leftover.stat().st_mtime
            except OSError:
                continue
            if age > min_age_seconds:
                shutil.rmtree(leftover, ignore_errors=True)


def _fetch_verified_shard(pin: _Pin, dataset_id: str, shard: dict, progress: bool) -> Path:
    """Download one shard and check its sha256; on mismatch fetch it once more, then give up."""
    repo_path = f"{dataset_id}/{shard['file']}"
    expected = shard["sha256"]
    path = _download_shard(pin, repo_path, progress, force_download=False)
    digest = sha256_file(path)
    if digest == expected:
        return path
    if pin.settings.offline:
        raise ChecksumMismatchError(
            f"the cached copy of {repo_path} ({pin}) fails its checksum (sha256 {digest[:16]}..., the "
            f"manifest says {expected[:16]}...); go online to fetch it again.")
    logger.warning("%s failed its checksum (sha256 %s..., expected %s...); fetching it again",
                   repo_path, digest[:16], expected[:16])
    path = _download_shard(pin, repo_path, progress, force_download=True)
    digest = sha256_file(path)
    if digest != expected:
        raise ChecksumMismatchError(
            f"{repo_path} from {pin} fails its checksum twice (sha256 {digest[:16]}..., the manifest "
            f"says {expected[:16]}...): the file on the Hub does not match its manifest. Nothing was "
            "written to the dataset folder; tell the repository's maintainers.")
    return path


def _download_shard(pin: _Pin, repo_path: str, progress: bool, *, force_download: bool) -> Path:
    hint = (f"Run the download again: shards already fetched are kept in the cache "
            f"{pin.settings.cache_dir} and are not fetched again.")
    with _hub_errors(pin.settings, pin.revision, doing=f"downloading {repo_path} from {pin}", hint=hint):
        return _download(pin.settings, repo_path, pin.commit, force_download=force_download,
                         progress=progress)


def _link_or_copy(cached: Path, destination: Path) -> None:
    """Hard-link the cached blob (one copy on disk); copy when linking is impossible."""
    blob = Path(os.path.realpath(cached))
    try:
        os.link(blob, destination)
    except OSError:
        shutil.copyfile(blob, destination)


def _write_hub_record(folder: Path, pin: _Pin) -> None:
    record = {"repo_id": pin.settings.repo_id, "repo_type": REPO_TYPE, "revision": pin.revision or "main",
              "commit": pin.commit, "endpoint": pin.settings.endpoint,
              "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (folder / HUB_RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished staging folder to ``target``, replacing what was there."""
    if not target.exists():
        os.rename(staging, target)
        return
    retired = target.with_name(f".{target.name}.replaced-{uuid.uuid4().hex[:8]}")
    os.rename(target, retired)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(retired, target)  # put the old dataset back rather than leave no dataset
        raise
    shutil.rmtree(retired, ignore_errors=True)


class _SilentTqdm(tqdm):
    """A progress bar that never draws, handed to the client for ``progress=False``."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Listing
# ----------------------------------------------------------------------------------------------


def list_remote_datasets(repo_id=None, *, revision=None, endpoint=None, token=None) -> list[str]:
    """The dataset ids in a Hub repository at ``revision``: its folders that hold a manifest.json."""
    settings = hub_settings(repo_id, endpoint=endpoint, token=token)
    if settings.offline:
        raise HubUnavailableError(
            f"listing {settings.repo_id} needs the Hub, and offline mode is on (HF_HUB_OFFLINE=1).")
    _require_hub(settings, f"listing {_where(settings, revision)}")
    with _hub_errors(settings, revision, doing=f"listing {_where(settings, revision)}"):
        files = _api(settings).list_repo_files(settings.repo_id, revision=revision, repo_type=REPO_TYPE)
    return _dataset_ids_in(files)


def _dataset_ids_in(files) -> list[str]:
    ids = set()
    for path in files:
        folder, _, name = path.partition("/")
        if name == MANIFEST_NAME and _is_valid_id(folder):
            ids.add(folder)
    return sorted(ids)


def _is_valid_id(name: str) -> bool:
    try:
        check_dataset_id(name)
    except LQVError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Upload
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LocalDataset:
    dataset_id: str
    folder: Path
    manifest: dict
    statistics: dict


def upload_dataset(dataset_id_or_path, *, repo_id, root=None, revision=None, private=False, tag=None,
                   endpoint=None, token=None, commit_message=None) -> UploadResult:
    """Publish one or more finished local datasets to a Hub dataset repository in one commit.

    ``dataset_id_or_path``: a dataset id (looked up under ``root``), a dataset folder, or a list of
    them. Each is verified first (sha256 of every shard) and uploaded as ``<dataset_id>/...``; files
    of an earlier upload of that dataset that are no longer part of it are removed. The dataset
    card ``README.md`` is rewritten with a statistics row for every dataset in the repository.
    The repository is created if needed (``private`` applies then). ``revision`` is the branch to
    commit to (default main). The new commit gets the moving tag ``format-v<N>`` and, with
    ``tag=``, an immutable tag of that name (refused if it exists).
    """
    datasets = _local_datasets(dataset_id_or_path, root)
    settings = hub_settings(repo_id, endpoint=endpoint, token=token)
    if settings.offline:
        raise HubUnavailableError("uploading needs the Hub, and offline mode is on (HF_HUB_OFFLINE=1).")
    branch = revision or "main"
    api = _api(settings)
    ids = tuple(d.dataset_id for d in datasets)
    _require_hub(settings, f"uploading {', '.join(ids)} to {settings.repo_id}")
    with _hub_errors(settings, branch, doing=f"uploading {', '.join(ids)} to {settings.repo_id}@{branch}"):
        api.create_repo(settings.repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if tag is not None:
            _refuse_existing_tag(api, settings, tag)
        head = api.dataset_info(settings.repo_id, revision=branch).sha
        remote_files = api.list_repo_files(settings.repo_id, revision=head, repo_type=REPO_TYPE)
        operations = _commit_operations(datasets, remote_files, settings, head)
        info = api.create_commit(
            settings.repo_id, operations, repo_type=REPO_TYPE, revision=branch, parent_commit=head,
            commit_message=commit_message or f"Upload {', '.join(ids)} (lqv-d4rl format v{FORMAT_VERSION})")
        tags = [_move_format_tag(api, settings, info.oid)]
        if tag is not None:
            api.create_tag(settings.repo_id, tag=tag, revision=info.oid, repo_type=REPO_TYPE,
                           tag_message=f"lqv-d4rl datasets {', '.join(ids)}")
            tags.append(tag)
    return UploadResult(settings.repo_id, branch, info.oid, info.commit_url, ids, tuple(tags))


def _local_datasets(items, root) -> list[_LocalDataset]:
    items = items if isinstance(items, (list, tuple)) else [items]
    if not items:
        raise ValueError("give at least one dataset id or folder to upload")
    datasets = [_local_dataset(item, root) for item in items]
    ids = [d.dataset_id for d in datasets]
    if len(set(ids)) != len(ids):
        raise ValueError(f"each dataset can be uploaded once per commit; got {ids}")
    return datasets


def _local_dataset(item, root) -> _LocalDataset:
    """Find, read and verify one local dataset before anything is sent."""
    folder = find_dataset_folder(item, root)
    problems = verify_dataset(folder, require_complete=True)
    if problems:
        raise CorruptDatasetError(
            f"refusing to upload {folder}: {len(problems)} problem(s): " + "; ".join(problems[:3]))
    manifest = read_manifest(folder)
    dataset_id = check_dataset_id(manifest["dataset_id"])
    return _LocalDataset(dataset_id, folder, manifest, _dataset_statistics(folder, manifest))


def _dataset_statistics(folder: Path, manifest: dict) -> dict:
    """Episodic return statistics of a local dataset, plus its size, for the card."""
    shards = manifest["shards"]
    returns = np.concatenate([read_episode_table(folder / shard["file"])["return"] for shard in shards])
    return {"dataset_id": manifest["dataset_id"], "task": manifest.get("task"),
            "level": manifest.get("level"), "num_steps": manifest["num_steps"],
            "num_shards": len(shards), "bytes": sum(shard["bytes"] for shard in shards),
            "returns": return_statistics(returns)}


def _refuse_existing_tag(api, settings: HubSettings, tag: str) -> None:
    if tag == FORMAT_TAG:
        raise HubError(f"tag {tag!r} is managed by lqv-d4rl (it marks the newest format-v{FORMAT_VERSION} "
                       "upload); choose another tag name.")
    try:
        api.dataset_info(settings.repo_id, revision=tag)
    except hf_errors.RevisionNotFoundError:
        return
    raise HubError(f"{tag!r} already exists in {settings.repo_id}; tags are pins for reproducible "
                   "results and are never moved: choose a new tag name.")


def _commit_operations(datasets, remote_files, settings: HubSettings, head: str) -> list:
    """Additions for every dataset's files, deletions of stale files, and the new dataset card."""
    operations = []
    statistics = _remote_statistics(remote_files, settings, head)
    for dataset in datasets:
        prefix = f"{dataset.dataset_id}/"
        names = [MANIFEST_NAME] + [s["file"] for s in dataset.manifest["shards"]]
        operations += [CommitOperationAdd(prefix + name, dataset.folder / name) for name in names]
        stats_bytes = (json.dumps(dataset.statistics, indent=2) + "\n").encode()
        operations.append(CommitOperationAdd(prefix + STATISTICS_NAME, stats_bytes))
        keep = {prefix + name for name in names + [STATISTICS_NAME]}
        operations += [CommitOperationDelete(path) for path in remote_files
                       if path.startswith(prefix) and path not in keep]
        statistics[dataset.dataset_id] = dataset.statistics
    card = dataset_card(settings.repo_id, statistics)
    operations.append(CommitOperationAdd(CARD_NAME, card.encode()))
    return operations


def _remote_statistics(remote_files, settings: HubSettings, head: str) -> dict:
    """Statistics of the datasets already in the repository (None where a dataset has none)."""
    statistics = {}
    for dataset_id in _dataset_ids_in(remote_files):
        statistics[dataset_id] = None
        if f"{dataset_id}/{STATISTICS_NAME}" in remote_files:
            path = _download(settings, f"{dataset_id}/{STATISTICS_NAME}", head, progress=False)
            try:
                statistics[dataset_id] = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                logger.warning("ignoring unreadable %s/%s in %s", dataset_id, STATISTICS_NAME,
                               settings.repo_id)
    return statistics


def _move_format_tag(api, settings: HubSettings, commit: str) -> str:
    """Point the ``format-v<N>`` tag at ``commit``.

    The Hub cannot move a tag, so it is deleted and created again; if creating it at ``commit``
    fails :data:`TAG_ATTEMPTS` times, it is put back where it was and HubError says so.
    """
    try:
        old = api.dataset_info(settings.repo_id, revision=FORMAT_TAG).sha
    except hf_errors.RevisionNotFoundError:
        old = None
    if old == commit:
        return FORMAT_TAG
    if old is not None:
        api.delete_tag(settings.repo_id, tag=FORMAT_TAG, repo_type=REPO_TYPE)
    error = None
    for _ in range(TAG_ATTEMPTS):
        try:
            _create_format_tag(api, settings, commit)
            return FORMAT_TAG
        except (hf_errors.HfHubHTTPError, httpx2.TransportError) as err:
            error = err
    if old is not None:
        _create_format_tag(api, settings, old)
    where = f"still points at {old[:12]}" if old is not None else "was not created"
    raise HubError(f"commit {commit} was uploaded, but tag {FORMAT_TAG} could not be moved to it "
                   f"({_first_line(error)}); it {where}. Upload again to retry.") from error


def _create_format_tag(api, settings: HubSettings, commit: str) -> None:
    api.create_tag(settings.repo_id, tag=FORMAT_TAG, revision=commit, repo_type=REPO_TYPE,
                   tag_message=f"newest upload in lqv-d4rl format version {FORMAT_VERSION}")


# ----------------------------------------------------------------------------------------------
# Dataset card
# ----------------------------------------------------------------------------------------------

_CARD_HEADER = """---
pretty_name: LQV-D4RL
task_categories:
- reinforcement-learning
tags:
- offline-rl
- visual-rl
- lqv-d4rl
---

# LQV-D4RL datasets

Low-Quality Vision datasets for offline visual reinforcement learning (introduced with SeMOPO,
Wan et al., ICML 2024): 64x64 image observations with moving driving-video distractors, collected
by non-expert behaviour policies at three quality levels (random, medrep, medium). The files are
in the lqv-d4rl HDF5 format (version {format_version}); each `<dataset_id>/manifest.json` lists its
shards with their sha256.

Download and load with the `lqv-d4rl` toolkit (every shard is checked against its sha256):

```bash
lqv-d4rl download walker_walk-medrep --repo-id {repo_id} --revision <tag or commit>
```

```python
import lqv_d4rl
lqv_d4rl.download_dataset("walker_walk-medrep", repo_id="{repo_id}", revision="<tag or commit>")
data = lqv_d4rl.load_dataset("walker_walk-medrep")
```

Pin `--revision` to a tag or commit sha for reproducible results; the tag `{format_tag}` marks the
newest upload in this format version.

## Episodic return statistics

"""

def dataset_card(repo_id: str, statistics: dict) -> str:
    """The README.md of the repository: description, usage, and one statistics row per dataset."""
    header = _CARD_HEADER.format(repo_id=repo_id, format_version=FORMAT_VERSION, format_tag=FORMAT_TAG)
    lines = ["| dataset | " + " | ".join(STATISTIC_KEYS) + " | steps | shards | size |",
             "|---" + "|---:" * (len(STATISTIC_KEYS) + 3) + "|"]
    for dataset_id in sorted(statistics):
        lines.append(_card_row(dataset_id, statistics[dataset_id]))
    return header + "\n".join(lines) + "\n"


def _card_row(dataset_id: str, entry: dict | None) -> str:
    entry = entry if isinstance(entry, dict) else {}
    returns = entry.get("returns") if isinstance(entry.get("returns"), dict) else {}
    cells = [_cell(returns.get(key), integer=key == "episodes") for key in STATISTIC_KEYS]
    cells += [_cell(entry.get("num_steps"), integer=True), _cell(entry.get("num_shards"), integer=True),
              format_bytes(entry["bytes"]) if isinstance(entry.get("bytes"), (int, float)) else "-"]
    return f"| {dataset_id} | " + " | ".join(cells) + " |"


def _cell(value, *, integer=False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return str(int(value)) if integer else f"{value:.1f}"
