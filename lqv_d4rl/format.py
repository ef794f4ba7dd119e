"""The on-disk dataset format: HDF5 shards plus ``manifest.json``, written by :class:`ShardWriter`.

A dataset folder holds ``manifest.json`` and shards ``shard-00000.h5``, ``shard-00001.h5``, ...
Each shard holds whole episodes (never part of one): group ``/steps`` with the flat step arrays and
group ``/episodes`` with one row per episode. DATASETS.md specifies the format in full.

Writing is crash-safe: a shard is written under a temporary name, flushed, fsynced and renamed, and
only then recorded in the manifest (itself replaced atomically). A run that dies keeps every
finished shard, and ``ShardWriter(..., resume=True)`` continues after the last one, with the shard
boundaries (hence the bytes) of a run that never stopped.
"""

import hashlib
import json
import operator
import os
import re
import time
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import ChecksumMismatchError, CorruptDatasetError, DatasetExistsError
from .registry import check_dataset_id, looks_like_registry_id, parse_dataset_id
from .tasks import TASKS

FORMAT_NAME = "lqv-d4rl"
FORMAT_VERSION = 2
"""The version written. Version 2 added the optional per-step ``state`` and ``physics`` arrays."""
READABLE_VERSIONS = (1, 2)
"""Versions this code reads (a version-1 dataset is one without states)."""
MANIFEST_NAME = "manifest.json"
TMP_SUFFIX = ".tmp"
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.h5$")

IMAGE_SHAPE = (64, 64, 3)
IMAGE_CHUNK_FRAMES = 64
"""Images are chunked by this many frames: small enough that reading one episode decompresses
little more than the episode itself, large enough for good gzip ratios."""
STEP_CHUNK_ROWS = 4096
GZIP_LEVEL = 4
DEFAULT_MAX_SHARD_BYTES = 256 * 2**20
"""Rotate to a new shard once the buffered episodes reach this many uncompressed bytes
(about 40 full DMC episodes; a shard is then ~60-75 MB on disk)."""

STEP_KEYS = ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal")
"""The step arrays every dataset has."""
STATE_KEYS = ("state", "physics")
"""Optional step arrays (format version 2), declared in the manifest's ``spaces`` when present:
``state`` float32 (n, S), the low-dimensional observation, and ``physics`` float64 (n, P), the
exact simulator state (``lqv_d4rl.states``)."""
STATE_DTYPES = {"state": np.float32, "physics": np.float64}
FLOAT_KEYS = ("action", "reward", "discount")
FLAG_KEYS = ("is_first", "is_last", "is_terminal")
EPISODE_KEYS = ("start", "length", "return", "policy_id", "policy_step", "seed", "video_ids")


def step_bytes(action_dim: int, state_dims: dict | None = None) -> int:
    """Uncompressed bytes of one step entry: image, float32 action/reward/discount, three flags,
    and the declared state arrays (``state_dims``: key of :data:`STATE_KEYS` -> size)."""
    extra = sum(np.dtype(STATE_DTYPES[key]).itemsize * size
                for key, size in (state_dims or {}).items())
    return int(np.prod(IMAGE_SHAPE)) + 4 * int(action_dim) + 4 + 4 + 3 + int(extra)


def state_dims_of(manifest: dict) -> dict:
    """key -> size of the optional step arrays a manifest declares (empty for version 1)."""
    spaces = manifest.get("spaces", {})
    return {key: spaces[key]["shape"][0] for key in STATE_KEYS if key in spaces}


# ----------------------------------------------------------------------------------------------
# Small file helpers
# ----------------------------------------------------------------------------------------------


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_file_name(index: int) -> str:
    """The file name of shard number ``index``: ``shard-00000.h5``, ..."""
    return f"shard-{index:05d}.h5"


def _fsync_file(path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder) -> None:
    # Makes a rename durable. Some filesystems do not allow opening a directory; then skip.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_atomically(tmp_path: Path, final_path: Path) -> None:
    _fsync_file(tmp_path)
    os.replace(tmp_path, final_path)
    _fsync_dir(final_path.parent)


def write_json_atomically(path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    tmp_path = path.with_name(path.name + TMP_SUFFIX)
    tmp_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    _replace_atomically(tmp_path, path)


# ----------------------------------------------------------------------------------------------
# Episode validation
# ----------------------------------------------------------------------------------------------


def validate_episode(steps: dict, action_dim: int, state_dims: dict | None = None) -> dict:
    """Check one episode's step dict and return it with the format's dtypes.

    ``steps`` needs exactly the keys of :data:`STEP_KEYS` plus those of ``state_dims`` (key of
    :data:`STATE_KEYS` -> size: the optional arrays the dataset declares), all of the same length
    L >= 2, with ``image`` uint8 (L, 64, 64, 3), ``action`` (L, action_dim) in [-1, 1] (the action
    space the manifest declares), ``reward``/``discount`` (L,) floats (stored as float32), flags
    (L,) bool (or integers 0/1), ``state`` (L, S) finite floats (stored as float32) and
    ``physics`` (L, P) finite floats (stored as float64). The entry convention is checked too:
    ``is_first`` only at entry 0, ``is_last`` only at the last entry, ``is_terminal`` only at the
    last entry (with discount 0), entry 0 with zero action, zero reward, discount 1.
    Raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(steps, dict):
        raise ValueError(f"an episode must be a dict of step arrays, got {type(steps).__name__}")
    state_dims = dict(state_dims or {})
    keys = STEP_KEYS + tuple(key for key in STATE_KEYS if key in state_dims)
    missing = [k for k in keys if k not in steps]
    extra = [k for k in steps if k not in keys]
    if missing or extra:
        hint = ""
        if any(key in STATE_KEYS for key in extra):
            hint = (" (this dataset declares no such array: give the writer state_fields / "
                    "physics_fields to store states)")
        raise ValueError(
            f"episode keys must be exactly {list(keys)}; missing {missing}, unexpected "
            f"{extra}{hint}"
        )
    arrays = {key: np.asarray(steps[key]) for key in keys}
    length = _check_lengths(arrays)
    out = {"image": _check_image(arrays["image"])}
    for key in FLOAT_KEYS:
        shape = (length, action_dim) if key == "action" else (length,)
        out[key] = _check_float(key, arrays[key], shape)
    if np.any(np.abs(out["action"]) > 1):
        raise ValueError(
            f"'action' must lie in [-1, 1] (the format's action space), got values from "
            f"{out['action'].min()} to {out['action'].max()}; clip or rescale the actions"
        )
    for key in FLAG_KEYS:
        out[key] = _check_flag(key, arrays[key], length)
    for key, size in state_dims.items():
        out[key] = _check_float(key, arrays[key], (length, size), STATE_DTYPES[key])
    _check_entry_convention(out, length)
    return out


def _check_lengths(arrays: dict) -> int:
    lengths = {key: (arr.shape[0] if arr.ndim else None) for key, arr in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"all step arrays of an episode must have the same length; got {lengths}")
    length = lengths["image"]
    if length < 2:
        raise ValueError(
            f"an episode needs at least 2 entries (first observation + one step), got {length}"
        )
    return length


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"'image' must be uint8 with shape (L, {', '.join(map(str, IMAGE_SHAPE))}), "
            f"got {image.dtype} {image.shape}"
        )
    return image


def _check_float(key: str, array: np.ndarray, shape: tuple, dtype=np.float32) -> np.ndarray:
    if array.shape != shape:
        raise ValueError(f"'{key}' must have shape {shape}, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"'{key}' must hold numbers (stored as {np.dtype(dtype).name}), got "
                         f"dtype {array.dtype}")
    array = array.astype(dtype, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"'{key}' contains NaN or infinite values")
    return array


def _check_flag(key: str, array: np.ndarray, length: int) -> np.ndarray:
    if array.shape != (length,):
        raise ValueError(f"'{key}' must have shape ({length},), got {array.shape}")
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.integer) or not np.all((array == 0) | (array == 1)):
            raise ValueError(f"'{key}' must be bool (or integers 0/1), got {array.dtype}")
        array = array.astype(np.bool_)
    return array


def _check_entry_convention(steps: dict, length: int) -> None:
    expected_first = np.zeros(length, bool)
    expected_first[0] = True
    expected_last = expected_first[::-1]
    if not np.array_equal(steps["is_first"], expected_first):
        raise ValueError("'is_first' must be True at entry 0 and False everywhere else")
    if not np.array_equal(steps["is_last"], expected_last):
        raise ValueError(
            "'is_last' must be True at the last entry and False everywhere else "
            "(one episode per add_episode call)"
        )
    if steps["is_terminal"][:-1].any():
        raise ValueError("'is_terminal' may only be True at the last entry of an episode")
    if steps["is_terminal"][-1] and steps["discount"][-1] != 0:
        raise ValueError(
            "a terminal last entry needs discount 0 (an episode cut by a time limit is not "
            "terminal)"
        )
    if np.any(steps["action"][0] != 0) or steps["reward"][0] != 0 or steps["discount"][0] != 1:
        raise ValueError(
            "entry 0 holds the first observation only: it needs a zero action, zero reward and "
            "discount 1 (dm_env / DreamerV2 convention; entry t holds a_{t-1} and r_t)"
        )


# ----------------------------------------------------------------------------------------------
# Shard files
# ----------------------------------------------------------------------------------------------


def _create_group(h5file, name: str):
    """Create a group without a modification time, so that equal inputs give equal bytes."""
    import h5py

    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(h5file.id, name.encode(), gcpl=gcpl))


def _step_chunks(key: str, array: np.ndarray) -> tuple:
    rows = IMAGE_CHUNK_FRAMES if key == "image" else STEP_CHUNK_ROWS
    return (min(rows, len(array)),) + array.shape[1:]


def write_shard(path, episodes: list, *, dataset_id: str, shard_index: int, first_episode: int):
    """Write one shard file holding ``episodes`` (a list of ``(steps, info)`` pairs).

    ``steps`` is a validated step dict (the optional state arrays included when the dataset
    declares them); ``info`` has policy_id, policy_step, seed, video_ids. Step arrays are chunked
    and gzip-compressed; no timestamps are stored, so the same episodes give the same bytes.
    """
    import h5py

    keys = _step_keys_in(episodes[0][0])
    lengths = np.array([len(steps["image"]) for steps, _ in episodes], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = FORMAT_NAME
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["dataset_id"] = dataset_id
        handle.attrs["shard_index"] = shard_index
        handle.attrs["first_episode"] = first_episode
        step_group = _create_group(handle, "steps")
        for key in keys:
            array = np.concatenate([steps[key] for steps, _ in episodes])
            step_group.create_dataset(
                key, data=array, chunks=_step_chunks(key, array), compression="gzip",
                compression_opts=GZIP_LEVEL, track_times=False,
            )
            del array
        _write_episode_table(_create_group(handle, "episodes"), episodes, starts, lengths)


def _write_episode_table(group, episodes: list, starts: np.ndarray, lengths: np.ndarray) -> None:
    import h5py

    infos = [info for _, info in episodes]
    returns = np.array([steps["reward"].sum(dtype=np.float64) for steps, _ in episodes])
    columns = {
        "start": starts,
        "length": lengths,
        "return": returns,
        "policy_id": np.array([i["policy_id"] for i in infos], dtype=h5py.string_dtype("utf-8")),
        "policy_step": np.array([i["policy_step"] for i in infos], dtype=np.int64),
        "seed": np.array([i["seed"] for i in infos], dtype=np.int64),
    }
    for key, column in columns.items():
        group.create_dataset(key, data=column, track_times=False)
    video_ids = group.create_dataset(
        "video_ids", shape=(len(infos),), dtype=h5py.vlen_dtype(np.int32), track_times=False
    )
    for row, info in enumerate(infos):
        video_ids[row] = info["video_ids"]


def read_episode_table(path) -> dict:
    """Read a shard's ``/episodes`` table as numpy arrays (``policy_id`` as str, ``video_ids`` as an
    object array of int32 arrays), plus ``dataset_id`` (root attribute) and ``step_array_lengths``
    (first-axis length of each ``/steps`` array). Raise CorruptDatasetError if the shard is
    unreadable or its episode table does not tile its step arrays."""
    import h5py

    if not Path(path).is_file():
        raise CorruptDatasetError(
            f"shard {path} is missing. Re-download or re-generate the dataset."
        )
    try:
        with h5py.File(path, "r") as handle:
            group = handle["episodes"]
            numeric = ("start", "length", "return", "policy_step", "seed")
            table = {key: group[key][()] for key in numeric}
            table["policy_id"] = np.array(group["policy_id"].asstr()[()], dtype=str)
            video_ids = np.empty(len(table["start"]), dtype=object)
            for row, ids in enumerate(group["video_ids"][()]):
                video_ids[row] = np.asarray(ids, dtype=np.int32)
            table["video_ids"] = video_ids
            steps = handle["steps"]
            table["step_array_shapes"] = {key: steps[key].shape for key in _step_keys_in(steps)}
            table["step_array_lengths"] = {key: shape[0]
                                           for key, shape in table["step_array_shapes"].items()}
            table["dataset_id"] = str(handle.attrs["dataset_id"])
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CorruptDatasetError(
            f"cannot read shard {path}: {err}. The file is damaged or truncated; re-download or "
            "re-generate the dataset."
        ) from err
    _check_episode_table(path, table)
    return table


def _read_shard_episodes(path) -> list:
    """The episodes of a shard as ``(steps, info)`` pairs, in the form :func:`write_shard` takes
    (used to reopen a short last shard on resume). Raises CorruptDatasetError naming the file."""
    import h5py

    table = read_episode_table(path)
    try:
        with h5py.File(path, "r") as handle:
            flat = {key: handle["steps"][key][()] for key in table["step_array_shapes"]}
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CorruptDatasetError(f"cannot read the steps of shard {path}: {err}") from err
    episodes = []
    for row, (start, length) in enumerate(zip(table["start"].tolist(), table["length"].tolist())):
        steps = {key: array[start:start + length] for key, array in flat.items()}
        info = {"policy_id": str(table["policy_id"][row]),
                "policy_step": int(table["policy_step"][row]), "seed": int(table["seed"][row]),
                "video_ids": table["video_ids"][row]}
        episodes.append((steps, info))
    return episodes


def _step_keys_in(steps) -> tuple:
    """The step keys of a step dict or an HDF5 ``/steps`` group: :data:`STEP_KEYS` and the
    optional :data:`STATE_KEYS` present."""
    return STEP_KEYS + tuple(key for key in STATE_KEYS if key in steps)


def _check_episode_table(path, table: dict) -> None:
    if len({len(table[key]) for key in EPISODE_KEYS}) != 1:
        raise CorruptDatasetError(
            f"shard {path} is inconsistent: its /episodes columns differ in length. Re-download "
            "or re-generate the dataset."
        )
    counts = set(table["step_array_lengths"].values())
    starts, lengths = table["start"], table["length"]
    expected_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    total = int(lengths.sum())
    if counts != {total} or not np.array_equal(starts, expected_starts) or np.any(lengths < 2):
        raise CorruptDatasetError(
            f"shard {path} is inconsistent: its episode table does not tile its step arrays "
            f"(step array lengths {sorted(counts)}, episode lengths sum {total}). Re-download or "
            "re-generate the dataset."
        )


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------


def read_manifest(folder) -> dict:
    """Read and check ``<folder>/manifest.json``.

    Raises FileNotFoundError if there is none and CorruptDatasetError if it is unreadable, of
    another format or version, malformed, or names files outside the folder.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise CorruptDatasetError(
            f"cannot read {path}: {err}; re-download or re-generate the dataset"
        ) from err
    _check_manifest(path, manifest)
    return manifest




def refuse_complete_target(folder, *, overwrite: bool, action: str) -> None:
    """Raise :class:`DatasetExistsError` when ``folder`` holds a complete dataset and
    ``overwrite`` is False (``action``, e.g. ``"render it again"``, says what --overwrite does)."""
    if overwrite:
        return
    try:
        manifest = read_manifest(folder)
    except FileNotFoundError:
        return
    if manifest.get("complete"):
        raise DatasetExistsError(
            f"dataset {manifest['dataset_id']!r} in {folder} is already complete "
            f"({manifest['num_episodes']} episodes); pass --overwrite to {action}")

def _check_manifest(path: Path, manifest) -> None:
    def fail(what):
        raise CorruptDatasetError(f"{path}: {what}. Re-download or re-generate the dataset.")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        fail(f"not an {FORMAT_NAME} manifest (missing \"format\": \"{FORMAT_NAME}\")")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        fail(
            f"format_version {manifest.get('format_version')!r} is not supported by this version "
            f"of lqv-d4rl (it reads versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade "
            "lqv-d4rl"
        )
    expected_types = {"dataset_id": str, "task": str, "shards": list, "spaces": dict,
                      "num_episodes": int, "num_steps": int}
    for key, kind in expected_types.items():
        if not isinstance(manifest.get(key), kind):
            fail(f"field {key!r} is missing or not of type {kind.__name__}")
    action_space = manifest["spaces"].get("action")
    action_shape = action_space.get("shape") if isinstance(action_space, dict) else None
    if not (isinstance(action_shape, list) and len(action_shape) == 1
            and isinstance(action_shape[0], int)):
        fail("spaces.action.shape must be a list of one integer")
    for key in STATE_KEYS:
        if key in manifest["spaces"]:
            _check_state_space(key, manifest["spaces"][key], fail)
    for record in manifest["shards"]:
        _check_shard_record(record, fail)
    names = [record["file"] for record in manifest["shards"]]
    if len(set(names)) != len(names):
        fail("a shard file is listed twice")
    if sum(r["num_episodes"] for r in manifest["shards"]) != manifest["num_episodes"]:
        fail("num_episodes does not match the sum over its shards")
    if sum(r["num_steps"] for r in manifest["shards"]) != manifest["num_steps"]:
        fail("num_steps does not match the sum over its shards")


def _check_state_space(key: str, space, fail) -> None:
    shape = space.get("shape") if isinstance(space, dict) else None
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)
            and shape[0] >= 0):
        fail(f"spaces.{key}.shape must be a list of one non-negative integer")
    if space.get("dtype") != np.dtype(STATE_DTYPES[key]).name:
        fail(f"spaces.{key}.dtype must be {np.dtype(STATE_DTYPES[key]).name!r}")


def _check_shard_record(record, fail) -> None:
    expected_types = {"file": str, "sha256": str, "bytes": int, "num_episodes": int,
                      "num_steps": int}
    if not isinstance(record, dict):
        fail(f"a shard record must be an object, got {record!r}")
    for key, kind in expected_types.items():
        if not isinstance(record.get(key), kind):
            fail(f"a shard record's {key!r} is missing or not of type {kind.__name__}")
    if not is_safe_file_name(record["file"]):
        fail(f"refusing shard file name {record['file']!r}: it points outside the dataset folder")


def is_safe_file_name(name) -> bool:
    """True for a plain relative file name inside the folder (no absolute path, no '..')."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    pure = PurePosixPath(name)
    return not pure.is_absolute() and ".." not in pure.parts and pure.parts == (name,)


def state_space(key: str, fields) -> dict:
    """The manifest's ``spaces`` entry of optional array ``key`` with parts ``fields``
    (``((name, size), ...)`` in order)."""
    fields = [[str(name), int(size)] for name, size in fields]
    return {"shape": [sum(size for _, size in fields)], "dtype": np.dtype(STATE_DTYPES[key]).name,
            "fields": fields}


def _new_manifest(dataset_id, task, level, action_dim, provenance, state_spaces=None) -> dict:
    from . import __version__
    from .paper import PAPER_REFERENCES

    provenance = dict(provenance or {})
    provenance.setdefault("code_version", __version__)
    provenance.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    normalization = {}
    if task in PAPER_REFERENCES:
        low, high = PAPER_REFERENCES[task]
        normalization["paper"] = {"min": low, "max": high}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dataset_id": dataset_id,
        "task": task,
        "level": level,
        "complete": False,
        "spaces": {
            "image": {"shape": list(IMAGE_SHAPE), "dtype": "uint8"},
            "action": {"shape": [action_dim], "dtype": "float32", "low": -1.0, "high": 1.0},
            **(state_spaces or {}),
        },
        "num_episodes": 0,
        "num_steps": 0,
        "shards": [],
        "normalization": normalization,
        "provenance": provenance,
    }


# ----------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------


def verify_shard(folder, record: dict, *, check_contents: bool = True,
                 state_dims: dict | None = None) -> None:
    """Check one shard against its manifest record: present, right size, right sha256, and (with
    ``check_contents``) readable with the recorded episode and step counts and the declared state
    arrays (``state_dims``, see :func:`read_shard_table`). Raises CorruptDatasetError /
    ChecksumMismatchError naming the file."""
    path = Path(folder) / record["file"]
    advice = "Re-download or re-generate the dataset."
    if not path.is_file():
        raise CorruptDatasetError(f"shard {path} is missing. {advice}")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise CorruptDatasetError(
            f"shard {path} has {size} bytes, the manifest says {record['bytes']} (truncated or "
            f"replaced). {advice}"
        )
    digest = sha256_file(path)
    if digest != record["sha256"]:
        raise ChecksumMismatchError(
            f"shard {path} fails its checksum (sha256 {digest[:16]}..., the manifest says "
            f"{record['sha256'][:16]}...). {advice}"
        )
    if check_contents:
        read_shard_table(folder, record, state_dims)


def read_shard_table(folder, record: dict, state_dims: dict | None = None) -> dict:
    """:func:`read_episode_table` of the shard of a manifest record, checked against the record's
    episode and step counts and, when ``state_dims`` (the manifest's :func:`state_dims_of`) is
    given, against the optional state arrays the manifest declares (CorruptDatasetError naming
    the file if they differ)."""
    path = Path(folder) / record["file"]
    table = read_episode_table(path)
    counts = (len(table["start"]), int(table["length"].sum()))
    if counts != (record["num_episodes"], record["num_steps"]):
        raise CorruptDatasetError(
            f"shard {path} does not hold the episodes its manifest records. Re-download or "
            "re-generate the dataset."
        )
    if state_dims is not None:
        found = {key: shape[1:] for key, shape in table["step_array_shapes"].items()
                 if key in STATE_KEYS}
        if found != {key: (size,) for key, size in state_dims.items()}:
            raise CorruptDatasetError(
                f"shard {path} holds the state arrays {found}, the manifest declares "
                f"{state_dims}. Re-download or re-generate the dataset."
            )
    return table


def verify_dataset(folder, *, require_complete: bool = False,
                   check_contents: bool = True) -> list[str]:
    """Check a dataset folder; return a list of problems, each naming the bad file (empty = ok).

    Checks the manifest, then every shard's size and sha256 and (``check_contents``) that it opens
    and holds the recorded episodes. A dataset whose generation has not finished is fine unless
    ``require_complete``: its finished shards are checked like any others.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except FileNotFoundError:
        return [f"{folder / MANIFEST_NAME} is missing: {folder} is not an lqv-d4rl dataset"]
    except CorruptDatasetError as err:
        return [str(err)]
    problems = []
    if require_complete and not manifest.get("complete"):
        problems.append(
            f"{folder / MANIFEST_NAME}: the dataset is incomplete (its generation did not finish)"
        )
    for record in manifest["shards"]:
        try:
            verify_shard(folder, record, check_contents=check_contents,
                         state_dims=state_dims_of(manifest))
        except CorruptDatasetError as err:
            problems.append(str(err))
    return problems


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------


class ShardWriter:
    """Writes a dataset folder episode by episode; every producer (recorders, importers) uses it.

    Episodes are buffered in memory and written as a shard when they reach ``max_shard_bytes``
    (uncompressed). Each finished shard is written atomically and recorded in ``manifest.json`` at
    once; :meth:`close` writes the last shard and marks the dataset complete. Use it as a context
    manager; on an exception the buffered episodes are still saved but the dataset stays incomplete.

    An existing dataset is never overwritten unless ``overwrite=True``. With ``resume=True`` a
    partial dataset is continued after its last finished shard: :attr:`num_episodes` tells how many
    episodes are already stored, so the producer can skip them. A last shard cut short by an
    interruption (an exception saves the buffer early) is reopened when the next episode would
    still have fitted into it, and rewritten with that episode; so the shards of a resumed run,
    given the same episodes, are byte for byte those of a run that never stopped.

    ``state_fields`` / ``physics_fields`` (``((name, size), ...)``, e.g. from
    :func:`lqv_d4rl.states.state_fields`) declare the optional ``state`` / ``physics`` step arrays;
    every episode must then carry them. Without them the dataset has no states.
    """

    def __init__(self, folder, *, dataset_id: str, task: str, level: str, action_dim: int,
                 provenance: dict | None = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                 overwrite: bool = False, resume: bool = False, state_fields=None,
                 physics_fields=None):
        if overwrite and resume:
            raise ValueError("pass either overwrite=True or resume=True, not both")
        _check_identity(dataset_id, task, level, action_dim)
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.folder = Path(folder)
        self.dataset_id, self.task, self.level = dataset_id, task, level
        self.action_dim = int(action_dim)
        self.max_shard_bytes = int(max_shard_bytes)
        self._state_spaces = {key: state_space(key, fields) for key, fields in
                              (("state", state_fields), ("physics", physics_fields))
                              if fields is not None}
        self.state_dims = {key: space["shape"][0] for key, space in self._state_spaces.items()}
        """key -> size of the optional step arrays this dataset stores."""
        self._buffer: list = []
        self._buffered_bytes = 0
        self._reopened = 0  # episodes at the head of the buffer that the last shard also holds
        self._may_reopen_last_shard = False
        self._closed = False
        self._open_folder(provenance, overwrite=overwrite, resume=resume)

    # -- public ------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Episodes stored so far: in finished shards plus those buffered for the next shard."""
        return self._manifest["num_episodes"] + len(self._buffer) - self._reopened

    @property
    def num_finished_episodes(self) -> int:
        """Episodes in finished shards (what survives if the process dies now)."""
        return self._manifest["num_episodes"]

    @property
    def manifest(self) -> dict:
        """A copy of the manifest as last written."""
        return json.loads(json.dumps(self._manifest))

    def add_episode(self, steps: dict, *, policy_id: str, policy_step: int = -1, seed: int = -1,
                    video_ids=()) -> None:
        """Validate one episode (see :func:`validate_episode`) and add it to the dataset.

        ``policy_id`` names the behaviour policy (non-empty str); ``policy_step`` is its training
        step (-1 if not applicable); ``seed`` the episode's environment seed (-1 if unknown);
        ``video_ids`` the background clip ids seen in the episode.
        """
        if self._closed:
            raise ValueError(
                "this ShardWriter is closed; open a new one with resume=True to add more episodes"
            )
        arrays = validate_episode(steps, self.action_dim, self.state_dims)
        info = _episode_info(policy_id, policy_step, seed, video_ids)
        size = sum(array.nbytes for array in arrays.values())
        if self._may_reopen_last_shard:
            self._may_reopen_last_shard = False
            self._reopen_last_shard_if_it_fits(size)
        if self._buffer and self._buffered_bytes + size > self.max_shard_bytes:
            self._finish_shard()
        self._buffer.append((arrays, info))
        self._buffered_bytes += size
        if self._buffered_bytes >= self.max_shard_bytes:
            self._finish_shard()

    def close(self) -> None:
        """Write the buffered episodes as the last shard and mark the dataset complete."""
        if self._closed:
            return
        if self._has_unsaved_episodes():
            self._finish_shard()
        self._manifest["complete"] = True
        self._write_manifest()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
            return
        # Keep what was recorded, but leave the dataset incomplete so that it can be resumed.
        self._closed = True
        if self._has_unsaved_episodes():
            try:
                self._finish_shard()
            except Exception as err:  # the original exception matters more; do not mask it
                warnings.warn(f"could not save the buffered episodes after an error: {err}")

    # -- internals -----------------------------------------------------------------------------

    def _has_unsaved_episodes(self) -> bool:
        return len(self._buffer) > self._reopened

    def _reopen_last_shard_if_it_fits(self, next_episode_bytes: int) -> None:
        # Called with the first episode after a resume. A run that never stopped rotates a shard
        # only when the next episode does not fit (or it is full); if it would have fitted, the
        # last shard was cut short by an interruption: take its episodes back into the buffer.
        record = self._manifest["shards"][-1]
        last_bytes = record["num_steps"] * self._step_bytes()
        if last_bytes + next_episode_bytes > self.max_shard_bytes:
            return
        self._buffer = _read_shard_episodes(self.folder / record["file"])
        self._buffered_bytes = last_bytes
        self._reopened = len(self._buffer)

    def _unrecord_reopened_shard(self) -> None:
        # Before a reopened shard is rewritten, drop it from the manifest. A crash at any later
        # point leaves the old or the new shard file unrecorded, which a resume adopts.
        record = self._manifest["shards"].pop()
        self._manifest["num_episodes"] -= record["num_episodes"]
        self._manifest["num_steps"] -= record["num_steps"]
        self._manifest["complete"] = False
        self._write_manifest()
        self._reopened = 0

    def _finish_shard(self) -> None:
        if self._reopened:
            self._unrecord_reopened_shard()
        index = len(self._manifest["shards"])
        name = shard_file_name(index)
        final_path = self.folder / name
        tmp_path = self.folder / (name + TMP_SUFFIX)
        write_shard(tmp_path, self._buffer, dataset_id=self.dataset_id, shard_index=index,
                    first_episode=self._manifest["num_episodes"])
        record = {
            "file": name,
            "sha256": sha256_file(tmp_path),
            "bytes": tmp_path.stat().st_size,
            "num_episodes": len(self._buffer),
            "num_steps": sum(len(steps["image"]) for steps, _ in self._buffer),
        }
        _replace_atomically(tmp_path, final_path)
        self._record_shard(record)
        self._buffer, self._buffered_bytes = [], 0

    def _record_shard(self, record: dict) -> None:
        self._manifest["shards"].append(record)
        self._manifest["num_episodes"] += record["num_episodes"]
        self._manifest["num_steps"] += record["num_steps"]
        self._manifest["complete"] = False
        self._write_manifest()

    def _write_manifest(self) -> None:
        write_json_atomically(self.folder / MANIFEST_NAME, self._manifest)

    def _step_bytes(self) -> int:
        return step_bytes(self.action_dim, self.state_dims)

    def _open_folder(self, provenance: dict | None, *, overwrite: bool, resume: bool) -> None:
        # The one place where a dataset folder is opened for writing (a new, replaced or resumed
        # dataset): every producer (generate, import-npz, rerender) comes through here.
        existing = _existing_manifest(self.folder) if resume else None
        if existing is not None:
            self._manifest = self._resume(existing, provenance)
        else:
            self._start_new_dataset(provenance, overwrite=overwrite)

    def _start_new_dataset(self, provenance: dict | None, *, overwrite: bool) -> None:
        _remove_temporary_files(self.folder)  # left by a run that died before its first manifest
        if _our_files(self.folder):
            if not overwrite:
                existing = _existing_manifest(self.folder, corrupt_ok=True)
                raise DatasetExistsError(_exists_message(self.folder, existing))
            _remove_our_files(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._manifest = _new_manifest(self.dataset_id, self.task, self.level, self.action_dim,
                                       provenance, self._state_spaces)
        self._write_manifest()

    def _resume(self, manifest: dict, provenance: dict | None) -> dict:
        stored = (manifest["dataset_id"], manifest["task"], manifest.get("level"),
                  manifest["spaces"]["action"]["shape"][0])
        wanted = (self.dataset_id, self.task, self.level, self.action_dim)
        if stored != wanted:
            raise ValueError(
                f"cannot resume {self.folder}: it holds (dataset_id, task, level, action_dim) = "
                f"{stored}, not {wanted}. Pass overwrite=True to replace it."
            )
        if manifest["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"cannot resume {self.folder}: it was started in format version "
                f"{manifest['format_version']} (an older lqv-d4rl); finish it with that version, "
                "or pass overwrite=True to start over"
            )
        stored_spaces = {key: manifest["spaces"][key] for key in STATE_KEYS
                         if key in manifest["spaces"]}
        if stored_spaces != self._state_spaces:
            raise ValueError(
                f"cannot resume {self.folder}: it stores the state arrays {stored_spaces}, not "
                f"{self._state_spaces}. Pass overwrite=True to replace it."
            )
        _check_same_provenance(self.folder, manifest.get("provenance", {}), provenance or {})
        for record in manifest["shards"]:
            verify_shard(self.folder, record, check_contents=False)
        _remove_temporary_files(self.folder)  # a shard or manifest being written when the run died
        self._manifest = manifest
        self._adopt_unrecorded_shards()
        last = manifest["shards"][-1] if manifest["shards"] else None
        self._may_reopen_last_shard = (
            last is not None and last["num_steps"] * self._step_bytes() < self.max_shard_bytes
        )
        return self._manifest

    def _adopt_unrecorded_shards(self) -> None:
        # A run can die between renaming a finished shard and recording it in the manifest. Such a
        # shard is complete (it was fsynced before the rename), so record it instead of redoing it.
        while (self.folder / shard_file_name(len(self._manifest["shards"]))).is_file():
            path = self.folder / shard_file_name(len(self._manifest["shards"]))
            try:
                table = read_episode_table(path)
            except CorruptDatasetError as err:
                raise CorruptDatasetError(
                    f"cannot resume {self.folder}: {path.name} is not recorded in the manifest and "
                    f"cannot be read ({err}). Delete {path} and resume again."
                ) from err
            if table["dataset_id"] != self.dataset_id:
                raise CorruptDatasetError(
                    f"{path} belongs to dataset {table['dataset_id']!r}, not {self.dataset_id!r}"
                )
            self._record_shard({
                "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                "num_episodes": len(table["start"]), "num_steps": int(table["length"].sum()),
            })


def _check_identity(dataset_id, task, level, action_dim) -> None:
    check_dataset_id(dataset_id)
    if looks_like_registry_id(dataset_id) and parse_dataset_id(dataset_id) != (task, level):
        raise ValueError(
            f"dataset id {dataset_id!r} is task {parse_dataset_id(dataset_id)[0]!r}, level "
            f"{parse_dataset_id(dataset_id)[1]!r}, but task={task!r}, level={level!r} were given"
        )
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a non-empty string, got {task!r}")
    if task in TASKS and int(action_dim) != TASKS[task].action_dim:
        raise ValueError(f"task {task!r} has action_dim {TASKS[task].action_dim}, got {action_dim}")
    if int(action_dim) < 1:
        raise ValueError(f"action_dim must be at least 1, got {action_dim}")


def _episode_info(policy_id, policy_step, seed, video_ids) -> dict:
    if not isinstance(policy_id, str) or not policy_id:
        raise ValueError(f"policy_id must be a non-empty string, got {policy_id!r}")
    video_ids = np.asarray(video_ids)
    int32 = np.iinfo(np.int32)
    if video_ids.ndim != 1 or (video_ids.size and (
            not np.issubdtype(video_ids.dtype, np.integer)
            or video_ids.min() < int32.min or video_ids.max() > int32.max)):
        raise ValueError(f"video_ids must be a 1-D sequence of int32 integers, got {video_ids!r}")
    return {"policy_id": policy_id, "policy_step": _integer("policy_step", policy_step),
            "seed": _integer("seed", seed), "video_ids": video_ids.astype(np.int32)}


def _integer(name: str, value) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _check_same_provenance(folder: Path, stored: dict, given: dict) -> None:
    # Resuming with another seed or distractor source would mix two different datasets.
    given = json.loads(json.dumps(given))
    differing = [key for key in given if key != "created" and key in stored
                 and stored[key] != given[key]]
    if differing:
        raise ValueError(
            f"cannot resume {folder}: its provenance differs in {differing} (stored "
            f"{ {k: stored[k] for k in differing} }, given { {k: given[k] for k in differing} }). "
            "Resume with the same settings, or pass overwrite=True to start over."
        )


def _existing_manifest(folder: Path, *, corrupt_ok: bool = False) -> dict | None:
    """The folder's manifest, None if it has none (or, with ``corrupt_ok``, an unreadable one)."""
    try:
        return read_manifest(folder)
    except FileNotFoundError:
        return None
    except CorruptDatasetError:
        if corrupt_ok:
            return None
        raise


def _our_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that this format writes (manifest, shards, their temporary files)."""
    if not folder.is_dir():
        return []
    names = {MANIFEST_NAME, MANIFEST_NAME + TMP_SUFFIX}
    return [
        path for path in folder.iterdir()
        if path.name in names or SHARD_PATTERN.match(path.name.removesuffix(TMP_SUFFIX))
    ]


def _remove_temporary_files(folder: Path) -> None:
    for path in _our_files(folder):
        if path.name.endswith(TMP_SUFFIX):
            path.unlink()


def _remove_our_files(folder: Path) -> None:
    # Only the format's own files are removed: a folder given by mistake keeps everything else.
    for path in _our_files(folder):
        path.unlink()


def _exists_message(folder: Path, manifest: dict | None) -> str:
    if manifest is None:
        return (
            f"{folder} already holds lqv-d4rl files but no readable manifest; pass "
            "overwrite=True (CLI: --overwrite) to start over"
        )
    if manifest.get("complete"):
        return (
            f"dataset {manifest['dataset_id']!r} in {folder} is already complete "
            f"({manifest['num_episodes']} episodes); pass overwrite=True (CLI: --overwrite) to "
            "replace it"
        )
    return (
        f"{folder} holds a partial dataset {manifest['dataset_id']!r} ({manifest['num_episodes']} "
        f"episodes in {len(manifest['shards'])} finished shards); pass resume=True to continue it "
        "(CLI: rerun the command that produced it: `lqv-d4rl generate` resumes by itself, "
        "`lqv-d4rl import-npz` needs --resume), or overwrite=True (CLI: --overwrite) to start over"
    )
