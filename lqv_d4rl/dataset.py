"""Loading datasets into a :class:`Dataset`, and per-policy, selected and combined views of it.

A Dataset keeps the step arrays of all its episodes flat (``images``, ``actions``, ...) and an
episode table (``episode_starts``, ``episode_lengths``, ``returns``, ``policy_ids``, ...). Views
made with :meth:`Dataset.select` or :meth:`Dataset.by_policy` share the flat arrays of the dataset
they come from and only narrow the episode table, so they cost no image copies. A view's flat
arrays may therefore hold rows of episodes that are not in the view: always go through the episode
table (``episode_starts``/``episode_lengths``, :meth:`Dataset.episode`,
:meth:`Dataset.row_indices`).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptDatasetError, DatasetNotFoundError, UnknownDatasetError
from .format import (
    IMAGE_CHUNK_FRAMES, IMAGE_SHAPE, MANIFEST_NAME, STATE_DTYPES, STATE_KEYS, STEP_KEYS,
    read_manifest, read_shard_table, state_dims_of,
    verify_shard,
)
from .folders import find_dataset_folder, read_hub_record

PROGRESS_MIN_BYTES = 512 * 2**20
"""Loads of more image bytes than this show a tqdm progress bar."""

_STEP_DTYPES = {"image": np.uint8, "action": np.float32, "reward": np.float32,
                "discount": np.float32, "is_first": np.bool_, "is_last": np.bool_,
                "is_terminal": np.bool_, **STATE_DTYPES}
_EPISODE_FIELDS = ("episode_starts", "episode_lengths", "returns", "policy_ids", "policy_steps",
                   "episode_seeds", "video_ids", "dataset_ids")


def _step_array(key: str, doc: str) -> property:
    return property(lambda self: self._steps[key], doc=doc)


def _episode_field(key: str, doc: str) -> property:
    return property(lambda self: self._episodes[key], doc=doc)


class Dataset:
    """Episodes of one or more LQV-D4RL datasets: flat step arrays plus an episode table.

    Step arrays (flat over steps; views share them): ``images`` (N, 64, 64, 3) uint8 (a
    :class:`LazyImages` in lazy mode), ``actions`` (N, A) float32, ``rewards``, ``discounts`` (N,)
    float32, ``is_first``, ``is_last``, ``is_terminal`` (N,) bool.

    Episode table, one row per episode of this dataset or view: ``episode_starts`` (row of entry 0
    in the flat arrays), ``episode_lengths``, ``returns`` (float64), ``policy_ids`` (str),
    ``policy_steps`` (-1 if not applicable), ``episode_seeds``, ``video_ids`` (object array of int32
    arrays), ``dataset_ids`` (the source dataset of each episode).

    ``task`` names the task (tasks joined by '+' for a multi-task combination); ``metadata`` is
    the manifest, or ``{"sources": [manifest, ...]}`` for a combination.
    """

    def __init__(self, steps: dict, episodes: dict, *, task: str, metadata: dict,
                 lazy: bool = False):
        """Wrap flat ``steps`` (step key -> array) and ``episodes`` (episode-table field -> array);
        normally made by :func:`load_dataset`, :meth:`select` or :func:`combine`."""
        self._steps = steps
        self._episodes = episodes
        self.task = task
        self.metadata = metadata
        self.lazy = lazy

    # -- step arrays -----------------------------------------------------------------------------

    images = _step_array("image", "(N, 64, 64, 3) uint8 frames (LazyImages if lazy).")
    actions = _step_array("action", "(N, A) float32; entry t holds the action a_{t-1}.")
    rewards = _step_array("reward", "(N,) float32 rewards.")
    discounts = _step_array("discount", "(N,) float32 discounts.")
    is_first = _step_array("is_first", "(N,) bool: entry 0 of an episode.")
    is_last = _step_array("is_last", "(N,) bool: last entry of an episode.")
    is_terminal = _step_array("is_terminal", "(N,) bool: the episode truly terminated here.")
    states = property(lambda self: self._steps.get("state"),
                      doc="(N, S) float32 low-dimensional states (DATASETS.md), or None when the "
                          "dataset stores none (format version 1, imported data).")
    physics = property(lambda self: self._steps.get("physics"),
                       doc="(N, P) float64 simulator states (dm_control physics.get_state()), "
                           "or None when the dataset stores none (car_racing, version 1).")

    @property
    def steps(self) -> dict:
        """The flat step arrays keyed by step name (``image``, ``action``, ...); not copies."""
        return dict(self._steps)

    # -- episode table ---------------------------------------------------------------------------

    episode_starts = _episode_field("episode_starts", "(E,) int64 flat row of each entry 0.")
    episode_lengths = _episode_field("episode_lengths", "(E,) int64 entries per episode.")
    returns = _episode_field("returns", "(E,) float64 episodic returns.")
    policy_ids = _episode_field("policy_ids", "(E,) str behaviour policy of each episode.")
    policy_steps = _episode_field("policy_steps", "(E,) int64 checkpoint step, -1 if n/a.")
    episode_seeds = _episode_field("episode_seeds", "(E,) int64 environment seeds, -1 if unknown.")
    video_ids = _episode_field("video_ids", "(E,) object array of int32 background clip ids.")
    dataset_ids = _episode_field("dataset_ids", "(E,) str dataset each episode comes from.")

    def __len__(self) -> int:
        """Number of episodes."""
        return len(self._episodes["episode_starts"])

    @property
    def num_steps(self) -> int:
        """Number of step entries in this dataset's (or view's) episodes."""
        return int(self.episode_lengths.sum())

    @property
    def action_dim(self) -> int:
        """Size of the action vector."""
        return int(self.actions.shape[1])

    def episode(self, index: int) -> dict:
        """The step dict of episode ``index``: slices of the flat arrays (read if lazy)."""
        index = range(len(self))[index]
        start = int(self.episode_starts[index])
        stop = start + int(self.episode_lengths[index])
        return {key: array[start:stop] for key, array in self._steps.items()}

    def episode_info(self, index: int) -> dict:
        """The episode-table row of episode ``index`` as plain Python values."""
        index = range(len(self))[index]
        return {
            "policy_id": str(self.policy_ids[index]), "policy_step": int(self.policy_steps[index]),
            "seed": int(self.episode_seeds[index]), "return": float(self.returns[index]),
            "length": int(self.episode_lengths[index]), "dataset_id": str(self.dataset_ids[index]),
            "video_ids": self.video_ids[index].tolist(),
        }

    def eval_env_kwargs(self, *, video_dir=None, rgb_background: bool = False) -> dict:
        """The environment this dataset was recorded in, for ``lqv_d4rl.evaluation.evaluate``:
        task, background video (procedural seed and length, or the video folder), compositing and
        render quality, read from the manifest. ``video_dir`` points at the videos when they are
        not where the manifest says; ``rgb_background`` gives the paper's Table 2 colour variant."""
        from .eval_env import env_kwargs_from_manifest

        return env_kwargs_from_manifest(self.metadata, video_dir=video_dir,
                                        rgb_background=rgb_background)

    def iterate_episodes(self, episode_indices=None):
        """Yield the step dict of every episode (or of ``episode_indices``), one at a time.

        ``for episode in data.iterate_episodes(): episode["image"], episode["action"], ...``;
        the episode table row of the i-th is ``episode_info(i)``. Lazy datasets read each
        episode's images when it is reached.
        """
        indices = range(len(self)) if episode_indices is None else episode_indices
        for index in indices:
            yield self.episode(int(index))

    def sample_episodes(self, n: int, seed=None) -> list:
        """``n`` different episodes drawn uniformly at random, as step dicts.

        ``seed``: an int (the same seed gives the same episodes), a ``numpy.random.Generator`` to
        draw from, or None for fresh randomness. The draw is
        ``numpy.random.default_rng(seed).choice(len(self), n, replace=False)``: pass those indices
        to :meth:`select` for a view that keeps the episode table too.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= len(self):
            raise ValueError(f"n must be an integer between 0 and the {len(self)} episodes of "
                             f"this dataset, got {n!r}")
        chosen = np.random.default_rng(seed).choice(len(self), size=int(n), replace=False)
        return list(self.iterate_episodes(chosen))

    def row_indices(self) -> np.ndarray:
        """The flat-array rows of all this dataset's episodes, episode after episode (int64)."""
        if len(self) == 0:
            return np.zeros(0, np.int64)
        offsets = np.repeat(self.episode_starts - np.cumsum(np.r_[0, self.episode_lengths[:-1]]),
                            self.episode_lengths)
        return np.arange(self.num_steps, dtype=np.int64) + offsets

    # -- views -----------------------------------------------------------------------------------

    def policies(self) -> list[str]:
        """The behaviour policy ids, in order of first appearance."""
        return list(dict.fromkeys(self.policy_ids.tolist()))

    def by_policy(self, policy_id: str) -> "Dataset":
        """A view of the episodes of one behaviour policy."""
        mask = self.policy_ids == policy_id
        if not mask.any():
            known = self.policies()
            shown = ", ".join(map(repr, known[:10])) + (" ..." if len(known) > 10 else "")
            raise KeyError(f"no episodes of policy {policy_id!r}; the policies are {shown}")
        return self.select(np.flatnonzero(mask))

    def select(self, episode_indices) -> "Dataset":
        """A view of the given episodes (integer indices or a boolean mask), in the given order."""
        indices = np.asarray(episode_indices)
        if indices.dtype == np.bool_:
            if indices.shape != (len(self),):
                raise ValueError(f"a boolean mask needs shape ({len(self)},), got {indices.shape}")
            indices = np.flatnonzero(indices)
        elif indices.size == 0:
            indices = indices.astype(np.int64)
        elif not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
            raise ValueError("select() takes a 1-D array of episode indices or a boolean mask")
        if indices.size and (indices.max() >= len(self) or indices.min() < -len(self)):
            raise IndexError(f"episode index out of range for a dataset of {len(self)} episodes")
        episodes = {key: value[indices] for key, value in self._episodes.items()}
        return Dataset(self._steps, episodes, task=self.task, metadata=self.metadata,
                       lazy=self.lazy)

    def close(self) -> None:
        """Close the shard files a lazy dataset keeps open (they reopen when read again)."""
        if isinstance(self.images, LazyImages):
            self.images.close()

    def __repr__(self) -> str:
        sources = sorted(set(self.dataset_ids.tolist()))
        mode = "lazy" if self.lazy else "in memory"
        return (f"Dataset({', '.join(sources) or self.task}: {len(self)} episodes, "
                f"{self.num_steps} steps, {len(self.policies())} policies, {mode})")


# ----------------------------------------------------------------------------------------------
# Lazy images
# ----------------------------------------------------------------------------------------------


class LazyImages:
    """The images of a dataset left in their HDF5 shards, indexed like a (N, 64, 64, 3) array.

    Supports an integer, a slice, a 1-D integer array (any order, repeats allowed) or a boolean
    mask as first index, optionally followed by more indices applied to the result, and returns
    numpy arrays. Files are opened on first use and reopened in a new process (after pickling, or
    in a forked DataLoader worker: HDF5 handles must not be shared between processes). A shard
    that cannot be read raises CorruptDatasetError naming it.
    """

    def __init__(self, segments: list):
        """``segments``: (shard path, first flat row, number of rows) in flat-row order."""
        self._paths = [str(path) for path, _, _ in segments]
        self._starts = np.array([start for _, start, _ in segments], dtype=np.int64)
        self._counts = np.array([count for _, _, count in segments], dtype=np.int64)
        if len(segments) and np.any(self._starts != np.r_[0, np.cumsum(self._counts)[:-1]]):
            raise ValueError("lazy image segments must tile the flat rows in order")
        self._files = {}
        self._files_pid = os.getpid()

    shape = property(lambda self: (int(self._counts.sum()),) + IMAGE_SHAPE, doc="(N, 64, 64, 3)")
    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyImages(shape={self.shape}, shards={len(self._paths)})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            result = self._read_rows(np.array([range(len(self))[key]]))[0]
        elif isinstance(key, slice):
            result = self._read_slice(key)
        else:
            result = self._read_rows(self._row_array(key))
        return result[(slice(None),) * (result.ndim - 3) + rest] if rest else result

    def segments(self) -> list:
        """(shard path, first flat row, number of rows) of each shard, in flat-row order."""
        return list(zip(self._paths, self._starts.tolist(), self._counts.tolist()))

    def close(self) -> None:
        """Close the open shard files (they reopen on the next read)."""
        for handle in self._files.values():
            handle.close()
        self._files = {}

    # -- internals -------------------------------------------------------------------------------

    def _row_array(self, key) -> np.ndarray:
        rows = np.asarray(key)
        if rows.dtype == np.bool_:
            if rows.shape != (len(self),):
                raise IndexError(f"a boolean index needs shape ({len(self)},), got {rows.shape}")
            return np.flatnonzero(rows)
        if rows.size == 0 and rows.ndim == 1:
            return np.zeros(0, np.int64)  # an empty list is float64 to numpy
        if not np.issubdtype(rows.dtype, np.integer) or rows.ndim != 1:
            raise IndexError("LazyImages takes an int, a slice, or a 1-D integer/boolean array")
        if rows.size and (rows.max() >= len(self) or rows.min() < -len(self)):
            raise IndexError(f"row index out of range for {len(self)} images")
        return np.where(rows < 0, rows + len(self), rows)

    def _dataset(self, segment: int):
        if self._files_pid != os.getpid():  # a forked child: drop (do not close) the parent's
            self._files, self._files_pid = {}, os.getpid()
        if segment not in self._files:
            import h5py

            self._files[segment] = h5py.File(self._paths[segment], "r")
        return self._files[segment]["steps"]["image"]

    def _read(self, segment: int, read):
        """Run ``read(image_dataset)``; an unreadable shard raises CorruptDatasetError naming it."""
        try:
            return read(self._dataset(segment))
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            raise CorruptDatasetError(
                f"cannot read the images of shard {self._paths[segment]}: {err}. Re-download or "
                "re-generate the dataset."
            ) from err

    def _read_slice(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        if step != 1:
            return self._read_rows(np.arange(start, stop, step))
        out = np.empty((max(stop - start, 0),) + IMAGE_SHAPE, np.uint8)
        for segment in range(len(self._paths)):
            seg_start = self._starts[segment]
            lo, hi = max(start, seg_start), min(stop, seg_start + self._counts[segment])
            if lo < hi:
                self._read(segment, lambda images: images.read_direct(
                    out, np.s_[lo - seg_start:hi - seg_start], np.s_[lo - start:hi - start]))
        return out

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(rows, return_inverse=True)
        gathered = np.empty((len(unique),) + IMAGE_SHAPE, np.uint8)
        segment_of = np.searchsorted(self._starts, unique, side="right") - 1
        for segment in np.unique(segment_of):
            where = np.flatnonzero(segment_of == segment)
            local = unique[where] - self._starts[segment]
            for run in _runs(local):
                # One slice per run of nearby rows: every compressed chunk is decompressed once,
                # and h5py's point selection (very slow for thousands of rows) is avoided.
                first, last = local[run[0]], local[run[-1]]
                block = self._read(segment, lambda images: images[first:last + 1])
                gathered[where[run]] = block[local[run] - first]
        return gathered[inverse.reshape(-1)]


def _runs(sorted_rows: np.ndarray, max_gap: int = IMAGE_CHUNK_FRAMES, max_span: int = 4096) -> list:
    """Split sorted row numbers into index runs whose rows lie close together (gaps under a chunk,
    spans of at most ``max_span`` rows), so that each run is read with one slice."""
    runs, first = [], 0
    for i in range(1, len(sorted_rows) + 1):
        if (i == len(sorted_rows) or sorted_rows[i] - sorted_rows[i - 1] >= max_gap
                or sorted_rows[i] - sorted_rows[first] >= max_span):
            runs.append(np.arange(first, i))
            first = i
    return runs


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """One dataset folder to load: its manifest and the episode tables of its shards."""

    folder: Path
    manifest: dict
    tables: list


def load_dataset(source, *, root=None, download: bool = False, lazy: bool = False,
                 verify: bool = True, allow_partial: bool = False,
                 progress: bool | None = None) -> Dataset:
    """Load a dataset (an id such as ``"walker_walk-medrep"`` or a folder) or a list of them.

    Ids are looked up under the dataset root (``root`` > ``$LQV_D4RL_ROOT`` > ``~/.lqv_d4rl``).
    ``download=True`` fetches a missing benchmark dataset from the Hugging Face Hub first. Images
    are read into RAM (uint8) unless ``lazy=True``, which leaves them in the shards behind a
    :class:`LazyImages`. ``verify`` checks every shard's size and sha256 before reading it.
    ``allow_partial`` loads the finished shards of a dataset whose generation was interrupted.
    ``progress`` shows a tqdm bar (default: only for loads over 512 MiB of images).
    A list of datasets is loaded into one :class:`Dataset` (one allocation, no double copy).
    """
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise ValueError("load_dataset() needs at least one dataset id or folder")
    sources = [_open_source(item, root, download, verify, allow_partial) for item in items]
    return _assemble(sources, lazy=lazy, progress=progress)


def resolve_dataset_folder(source, root=None, download: bool = False) -> Path:
    """The folder of ``source`` (a dataset id or a folder), downloading it if asked to.

    See :func:`lqv_d4rl.folders.find_dataset_folder` for how ``source`` is looked up. Raises
    UnknownDatasetError for a mistyped benchmark id and DatasetNotFoundError, saying how to
    generate or download it, for a dataset that is not on disk.
    """
    try:
        return find_dataset_folder(source, root)
    except DatasetNotFoundError as err:
        if not (download and getattr(err, "downloadable_id", None)):
            raise
        from .hub import download_dataset

        return Path(download_dataset(err.downloadable_id, root=root))


def _open_source(item, root, download, verify, allow_partial) -> _Source:
    folder = resolve_dataset_folder(item, root, download)
    manifest = read_manifest(folder)
    hub = read_hub_record(folder)
    if hub is not None:  # where a downloaded dataset came from (its Hub commit) travels with it
        manifest = dict(manifest, hub=hub)
    if not manifest.get("complete") and not allow_partial:
        raise CorruptDatasetError(
            f"dataset {manifest['dataset_id']!r} in {folder} is incomplete: its generation did "
            f"not finish ({manifest['num_episodes']} episodes in {len(manifest['shards'])} "
            "finished shards). Finish it by rerunning the command that produced it (`lqv-d4rl "
            "generate` resumes by itself, `lqv-d4rl import-npz` needs --resume), or pass "
            "allow_partial=True to load the finished episodes."
        )
    tables = []
    for record in manifest["shards"]:
        if verify:
            verify_shard(folder, record, check_contents=False)
        tables.append(read_shard_table(folder, record, state_dims_of(manifest)))
    return _Source(folder, manifest, tables)


def _assemble(sources: list, *, lazy: bool, progress) -> Dataset:
    action_dims = {s.manifest["spaces"]["action"]["shape"][0] for s in sources}
    if len(action_dims) > 1:
        raise ValueError(
            f"cannot load datasets with different action sizes {sorted(action_dims)} together"
        )
    action_dim = action_dims.pop()
    shards = [(s.folder / r["file"], r["num_steps"]) for s in sources for r in s.manifest["shards"]]
    total = sum(count for _, count in shards)
    state_dims = _common_state_dims([state_dims_of(s.manifest) for s in sources])
    steps = _allocate_steps(total, action_dim, skip_images=lazy, state_dims=state_dims)
    _read_steps_into(steps, shards, read_images=not lazy, progress=progress)
    offsets = np.cumsum([0] + [count for _, count in shards])
    if lazy:
        steps["image"] = LazyImages(
            [(path, int(start), count) for (path, count), start in zip(shards, offsets)]
        )
    tables = [(table, s.manifest["dataset_id"]) for s in sources for table in s.tables]
    episodes = _concat_tables(tables, offsets[:-1])
    if len(sources) == 1:
        metadata = sources[0].manifest
    else:
        metadata = {"sources": [s.manifest for s in sources]}
    return Dataset(steps, episodes, task=_joint_task([s.manifest["task"] for s in sources]),
                   metadata=metadata, lazy=lazy)


def _allocate_steps(total: int, action_dim: int, *, skip_images: bool = False,
                    state_dims: dict | None = None) -> dict:
    shapes = {"image": IMAGE_SHAPE, "action": (action_dim,),
              **{key: (size,) for key, size in (state_dims or {}).items()}}
    keys = STEP_KEYS + tuple(key for key in STATE_KEYS if key in (state_dims or {}))
    return {key: np.empty((total,) + shapes.get(key, ()), _STEP_DTYPES[key])
            for key in keys if not (skip_images and key == "image")}


def _common_state_dims(per_source: list) -> dict:
    """The optional state arrays every source has with the same size (others are left out)."""
    return {key: size for key, size in per_source[0].items()
            if all(dims.get(key) == size for dims in per_source)}


def _read_steps_into(steps: dict, shards: list, *, read_images: bool, progress) -> None:
    """Read each shard's step arrays straight into the preallocated flat arrays."""
    import h5py

    image_bytes = sum(count for _, count in shards) * int(np.prod(IMAGE_SHAPE))
    show = progress if progress is not None else read_images and image_bytes > PROGRESS_MIN_BYTES
    bar = _progress_bar(len(shards), show)
    row = 0
    for path, count in shards:
        try:
            with h5py.File(path, "r") as handle:
                for key, array in steps.items():
                    handle["steps"][key].read_direct(array, np.s_[0:count], np.s_[row:row + count])
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CorruptDatasetError(
                f"cannot read the steps of shard {path}: {err}. Re-download or re-generate the "
                "dataset."
            ) from err
        row += count
        bar.update(1)
    bar.close()


def _progress_bar(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="loading shards", unit="shard", disable=not show)


def _concat_tables(tables: list, row_offsets) -> dict:
    def column(key, dtype=None):
        parts = [table[key] for table, _ in tables]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    starts = [table["start"] + offset for (table, _), offset in zip(tables, row_offsets)]
    video_ids = _object_array([ids for table, _ in tables for ids in table["video_ids"]])
    return {
        "episode_starts": np.concatenate(starts or [np.zeros(0)]).astype(np.int64),
        "episode_lengths": column("length", np.int64),
        "returns": column("return", np.float64),
        "policy_ids": column("policy_id", str),
        "policy_steps": column("policy_step", np.int64),
        "episode_seeds": column("seed", np.int64),
        "video_ids": video_ids,
        "dataset_ids": np.array([dataset_id for table, dataset_id in tables
                                 for _ in range(len(table["start"]))], dtype=str),
    }


def _object_array(items: list) -> np.ndarray:
    # Filled one by one: numpy would turn equal-length arrays into a 2-D array.
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


def _joint_task(tasks: list) -> str:
    return "+".join(dict.fromkeys(tasks))


# ----------------------------------------------------------------------------------------------
# Combining
# ----------------------------------------------------------------------------------------------


def combine(datasets: list) -> Dataset:
    """Combine datasets or views into one Dataset holding all their episodes, in order.

    In-memory inputs are copied once into new preallocated arrays (only the rows of their
    episodes). If every input is lazy, the result is lazy too and copies no images: it keeps the
    inputs' flat arrays side by side. Inputs must share the action size.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("combine() needs at least one Dataset")
    action_dims = sorted({data.action_dim for data in datasets})
    if len(action_dims) > 1:
        raise ValueError(f"cannot combine datasets with different action sizes {action_dims}")
    if all(d.lazy for d in datasets):
        steps, starts = _stack_lazy_steps(datasets)
    else:
        steps, starts = _copy_episode_rows(datasets)
    episodes = {key: np.concatenate([data._episodes[key] for data in datasets])
                for key in _EPISODE_FIELDS}
    episodes["episode_starts"] = starts
    sources = [manifest for data in datasets for manifest in _sources_of(data.metadata)]
    tasks = [task for data in datasets for task in data.task.split("+")]
    return Dataset(steps, episodes, task=_joint_task(tasks), metadata={"sources": sources},
                   lazy=all(data.lazy for data in datasets))


def _sources_of(metadata: dict) -> list:
    return metadata["sources"] if "sources" in metadata else [metadata]


def _shared_state_dims(datasets: list) -> dict:
    return _common_state_dims([{key: d._steps[key].shape[1] for key in STATE_KEYS
                                if key in d._steps} for d in datasets])


def _copy_episode_rows(datasets: list) -> tuple:
    total = sum(d.num_steps for d in datasets)
    steps = _allocate_steps(total, datasets[0].action_dim, state_dims=_shared_state_dims(datasets))
    starts, row = [], 0
    for data in datasets:
        for start, length in zip(data.episode_starts.tolist(), data.episode_lengths.tolist()):
            for key, array in steps.items():
                array[row:row + length] = data._steps[key][start:start + length]
            starts.append(row)
            row += length
    return steps, np.array(starts, dtype=np.int64)


def _stack_lazy_steps(datasets: list) -> tuple:
    keys = STEP_KEYS[1:] + tuple(_shared_state_dims(datasets))
    segments, small, starts, offset = [], {key: [] for key in keys}, [], 0
    for data in datasets:
        segments += [(path, start + offset, count) for path, start, count in data.images.segments()]
        for key in small:
            small[key].append(data._steps[key])
        starts.append(data.episode_starts + offset)
        offset += len(data.images)
    steps = {key: np.concatenate(parts) for key, parts in small.items()}
    steps["image"] = LazyImages(segments)
    return steps, np.concatenate(starts).astype(np.int64)
