"""PyTorch adapters: ``torch.utils.data`` datasets, and the samplers of :mod:`lqv_d4rl.samplers`.

For ``torch.utils.data.DataLoader`` (shuffling, batching, worker processes), as PyTorch users
expect:

:class:`SequenceDataset`
    Every window of ``seq_len`` consecutive entries inside one episode, one item each.
:class:`EpisodeDataset`
    One whole episode per item.

::

    windows = SequenceDataset(lqv_d4rl.load_dataset("walker_walk-medrep"), seq_len=50)
    loader = DataLoader(windows, batch_size=64, shuffle=True, num_workers=4,
                        generator=torch.Generator().manual_seed(0))
    for batch in loader:        # batch["image"]: (64, 50, 64, 64, 3) uint8, batch["action"]: ...

The benchmark's own samplers (SeMOPO's conservative curriculum, return curriculum) depend on the
order of batches, so they do not fit a shuffling DataLoader; two ways to feed a training loop
from them:

:class:`TorchBatchIterator`
    Wraps any sampler (sequence or transition). A background thread draws batches in order,
    converts them to tensors (pinned host memory when the target is a CUDA device) and keeps a
    few ready, so sampling overlaps training. Only that one thread calls ``sampler.sample()``, so
    the batches are exactly those of calling ``sample()`` in a loop: same seed, same batches.
:class:`DeviceSequenceSampler`
    Uploads the dataset's flat arrays to the device once and gathers each batch there with torch
    indexing, from the windows a host sequence sampler chooses (so every mode and its curriculum
    work unchanged, and a seed gives the same batches as on the host). For when the whole dataset
    fits in device memory (one 200-episode DMC dataset is ~1.2 GB).

::

    sampler = make_sequence_sampler(dataset, mode="conservative", seed=0)
    for batch in TorchBatchIterator(sampler, device="cuda", num_batches=25_000):
        loss = model.loss(batch["image"], batch["action"], ...)
"""

import os
import queue
import threading

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from lqv_d4rl.errors import LQVError
from lqv_d4rl.samplers import SequenceSampler, make_sequence_sampler


class DeviceMemoryError(LQVError, MemoryError):
    """The dataset does not fit in the memory of the device it was asked to live on."""


class DeviceUnavailableError(LQVError, RuntimeError):
    """The device asked for is not on this machine (no CUDA GPU, no such GPU index, no device)."""


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, else DeviceUnavailableError: one line that
    says what is wrong and what to use instead.

    The one device check of the toolkit: every ``--device`` option of the command line goes through
    it, and so do ``generate``, ``Run.open`` (every training run), ``run_experiment``,
    ``evaluate_run``, the leaderboard and :class:`DeviceSequenceSampler`.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceUnavailableError(f"{device!r} is no torch device; use cpu, cuda or cuda:N "
                                     f"(--device cpu, or device='cpu' in Python)") from None
    use_cpu = "use --device cpu (device='cpu' in Python)"
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else ", a CPU-only build"
            raise DeviceUnavailableError(
                f"device {str(device)!r} was asked for but torch sees no CUDA GPU here (torch "
                f"{torch.__version__}{build}); {use_cpu} or a machine with a GPU")
        if (parsed.index or 0) >= count:
            raise DeviceUnavailableError(
                f"device {str(device)!r} was asked for but torch sees {count} CUDA GPU"
                f"{'s' if count > 1 else ''} here (cuda:0 to cuda:{count - 1}); use one of "
                f"those, or {use_cpu.removeprefix('use ')}")
    elif parsed.type != "cpu":
        try:
            torch.empty(0, device=parsed)
        except (RuntimeError, TypeError, AssertionError, NotImplementedError) as err:
            raise DeviceUnavailableError(f"device {str(device)!r} is not available here "
                                         f"({_first_line(err)}); {use_cpu}") from None
    return parsed


def _first_line(err) -> str:
    """The first sentence of an exception's message (torch's can run to pages)."""
    lines = str(err).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


class SequenceDataset(TorchDataset):
    """Every window of ``seq_len`` consecutive entries inside one episode, as a map-style
    ``torch.utils.data.Dataset`` (see the module docstring for a DataLoader).

    Item ``i`` is a dict of tensors: each step array of the dataset (``image`` (seq_len, 64, 64, 3)
    uint8, ``action`` (seq_len, A), ``reward``, ``discount``, ``is_first``, ``is_last``,
    ``is_terminal``, and ``state``/``physics`` where the dataset has them) plus ``episode`` and
    ``start`` (which window it is), the same keys as a sequence sampler's batch. Windows never
    cross an episode boundary; their starts are ``stride`` entries apart; an episode shorter than
    ``seq_len`` has none. Item ``i`` is always the same window, so a seeded DataLoader
    ``generator`` gives the same batches with any number of workers. Worker processes share the
    in-memory arrays (fork) or get a pickled copy (spawn: prefer a ``lazy=True`` dataset, which
    pickles without its images and reopens its shards in each worker).
    """

    def __init__(self, dataset, seq_len: int, *, stride: int = 1):
        for name, value in (("seq_len", seq_len), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dataset = dataset
        self.seq_len = int(seq_len)
        counts = np.maximum((np.asarray(dataset.episode_lengths) - seq_len) // stride + 1, 0)
        self._episodes = np.repeat(np.arange(len(dataset), dtype=np.int64), counts)
        first = np.cumsum(counts) - counts  # item index of each episode's first window
        self._starts = (np.arange(int(counts.sum()), dtype=np.int64)
                        - np.repeat(first, counts)) * int(stride)

    def __len__(self) -> int:
        return len(self._episodes)

    def __getitem__(self, index):
        index = range(len(self))[index]
        episode, start = int(self._episodes[index]), int(self._starts[index])
        row = int(self.dataset.episode_starts[episode]) + start
        item = _rows_as_tensors(self.dataset, row, self.seq_len)
        item["episode"], item["start"] = torch.tensor(episode), torch.tensor(start)
        return item


class EpisodeDataset(TorchDataset):
    """One whole episode per item, as a map-style ``torch.utils.data.Dataset``.

    Item ``i`` is episode ``i``'s step arrays as tensors (leading axis: its length) plus
    ``episode``. Episodes differ in length, so load them with ``DataLoader(..., batch_size=None)``
    (one episode at a time) or a ``collate_fn`` of your own.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        index = range(len(self))[index]
        start = int(self.dataset.episode_starts[index])
        item = _rows_as_tensors(self.dataset, start, int(self.dataset.episode_lengths[index]))
        item["episode"] = torch.tensor(index)
        return item


def _rows_as_tensors(dataset, row: int, count: int) -> dict:
    """The step arrays' rows ``row .. row + count - 1`` as new tensors (read if lazy)."""
    return {key: torch.from_numpy(np.array(array[row:row + count]))
            for key, array in dataset.steps.items()}


def numpy_batch_to_torch(batch, *, pin_memory=False):
    """Convert a dict of numpy arrays to a dict of CPU tensors (sharing memory unless pinned)."""
    tensors = {}
    for key, value in batch.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        tensors[key] = tensor.pin_memory() if pin_memory else tensor
    return tensors


class _Failure:
    """Carries an exception from the background thread to the consumer."""

    def __init__(self, error):
        self.error = error


_END = object()


class TorchBatchIterator:
    """Iterate a sampler's batches as torch tensors on ``device``, prefetched in a background thread.

    ``num_batches`` (None = endless) bounds the stream; ``prefetch`` batches are kept ready.
    ``pin_memory`` defaults to True when ``device`` is a CUDA device (allowing asynchronous
    copies). Do not call the sampler yourself while iterating: the thread is ahead by up to
    ``prefetch + 1`` batches (so a curriculum's ``step`` runs ahead by as much). Use as a context
    manager, or call ``close()``, to stop the thread early.
    """

    def __init__(self, sampler, *, device="cpu", prefetch=2, pin_memory=None, num_batches=None):
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if num_batches is not None and num_batches < 0:
            raise ValueError(f"num_batches must be >= 0 or None, got {num_batches}")
        self.sampler = sampler
        self.device = torch.device(device)
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.num_batches = num_batches
        self._queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = None
        self._finished = False

    def _produce(self):
        produced = 0
        try:
            while not self._stop.is_set():
                if self.num_batches is not None and produced >= self.num_batches:
                    break
                batch = numpy_batch_to_torch(self.sampler.sample(), pin_memory=self.pin_memory)
                produced += 1
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer, who re-raises it
            self._put(_Failure(error))

    def _put(self, item):
        """Queue ``item``, giving up (False) if the iterator is closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="lqv-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        non_blocking = self.pin_memory and self.device.type == "cuda"
        return {key: value.to(self.device, non_blocking=non_blocking) for key, value in item.items()}

    def close(self):
        """Stop the background thread and drop the prefetched batches."""
        self._stop.set()
        self._finished = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        stop = getattr(self, "_stop", None)  # None: __init__ never ran to the end
        if stop is not None:
            stop.set()


def free_device_bytes(device):
    """Bytes free on ``device`` (CUDA: free for the driver plus what PyTorch's caching allocator
    holds unused; CPU: available RAM; else None)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # blocks the caching allocator keeps after tensors were freed count as used for the driver
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return None
    return None


def _torch_dtype(numpy_dtype):
    return torch.from_numpy(np.zeros(1, dtype=numpy_dtype)).dtype


def _upload_episodes(array, starts, lengths, device, chunk_rows):
    """Copy the rows of the given episodes, back to back, into a new tensor on ``device``.

    Works on lazy array-likes too (reads slices of at most ``chunk_rows`` rows).
    """
    total = int(np.sum(lengths))
    tensor = torch.empty((total,) + tuple(array.shape[1:]), dtype=_torch_dtype(array.dtype), device=device)
    offset = 0
    for start, length in zip(starts.tolist(), lengths.tolist()):
        for begin in range(start, start + length, chunk_rows):
            chunk = np.ascontiguousarray(array[begin : min(begin + chunk_rows, start + length)])
            tensor[offset : offset + len(chunk)].copy_(torch.from_numpy(chunk))
            offset += len(chunk)
    return tensor


class DeviceSequenceSampler:
    """Sequence batches gathered on ``device`` from a copy of the dataset kept there.

    ``sampler`` is a host :class:`~lqv_d4rl.samplers.SequenceSampler` (any mode); it chooses the
    windows, this class gathers them from device tensors. ``sample()`` returns a dict of tensors on
    ``device`` with the same keys, shapes and values as ``sampler.sample()`` would. Only the rows
    of the dataset's episodes are uploaded (for a view, not its parent's other episodes); they
    and one batch must fit in ``memory_budget`` bytes (default: what the device reports free),
    else a DeviceMemoryError says so before anything is allocated. A device this machine does not
    have (``"cuda"`` without a CUDA GPU) raises DeviceUnavailableError.
    """

    def __init__(self, sampler, *, device="cuda", memory_budget=None, chunk_rows=4096):
        if not isinstance(sampler, SequenceSampler):
            raise TypeError(f"expected a SequenceSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.device = check_device(device)
        dataset = sampler.dataset
        starts = np.asarray(dataset.episode_starts, dtype=np.int64)
        lengths = np.asarray(dataset.episode_lengths, dtype=np.int64)
        self._check_room(dataset, int(lengths.sum()), memory_budget)
        # Only the rows of the dataset's episodes go up (a view's flat arrays may hold more).
        try:
            self.arrays = {
                key: _upload_episodes(getattr(dataset, attribute), starts, lengths, self.device, chunk_rows)
                for key, attribute in sampler.arrays.items()
            }
        except torch.cuda.OutOfMemoryError as error:
            raise DeviceMemoryError(
                f"ran out of memory on {self.device} while uploading the dataset ({error}); "
                "use TorchBatchIterator with a host sampler instead"
            ) from error
        device_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.episode_starts = torch.as_tensor(device_starts, device=self.device)
        self._offsets = torch.arange(sampler.seq_len, device=self.device)

    def _check_room(self, dataset, num_rows, memory_budget):
        row_bytes = sum(
            np.dtype(getattr(dataset, a).dtype).itemsize * int(np.prod(getattr(dataset, a).shape[1:]))
            for a in self.sampler.arrays.values()
        )
        needed = row_bytes * (num_rows + self.sampler.batch_size * self.sampler.seq_len)
        available = free_device_bytes(self.device) if memory_budget is None else memory_budget
        if available is not None and needed > available:
            raise DeviceMemoryError(
                f"the dataset needs {needed / 2**30:.2f} GiB on {self.device} but only "
                f"{available / 2**30:.2f} GiB is available; sample on the host with "
                "TorchBatchIterator, or use fewer episodes (dataset.select(...))"
            )

    @property
    def step(self):
        """The host sampler's batch counter."""
        return self.sampler.step

    def sample(self):
        """Draw the next batch as tensors on the device."""
        episodes, starts = self.sampler.choose_windows()
        # one small copy that does not wait for the device (a blocking one would, every batch)
        windows = torch.from_numpy(np.stack([episodes, starts]).astype(np.int64))
        if self.device.type == "cuda":
            windows = windows.pin_memory()
        episodes, starts = windows.to(self.device, non_blocking=True)
        rows = (self.episode_starts[episodes] + starts)[:, None] + self._offsets
        batch = {key: array[rows] for key, array in self.arrays.items()}
        batch["episode"] = episodes
        batch["start"] = starts
        return batch

    def __iter__(self):
        while True:
            yield self.sample()


def make_device_sampler(
    dataset, mode="random", *, device="cuda", batch_size=64, seq_len=50, seed=0, memory_budget=None, **options
):
    """A :class:`DeviceSequenceSampler` over ``make_sequence_sampler(dataset, mode, ...)``.

    Raises DeviceUnavailableError when this machine has no ``device`` (e.g. ``"cuda"`` without a
    CUDA GPU: sample on the host with :class:`TorchBatchIterator` instead) and DeviceMemoryError
    when the dataset does not fit in its memory.
    """
    sampler = make_sequence_sampler(
        dataset, mode, batch_size=batch_size, seq_len=seq_len, seed=seed, **options
    )
    return DeviceSequenceSampler(sampler, device=device, memory_budget=memory_budget)
