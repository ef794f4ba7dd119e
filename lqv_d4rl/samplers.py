"""Samplers that draw training batches from a dataset without ever crossing an episode boundary.

A sampler works on any object with the flat-array attributes of :class:`lqv_d4rl.dataset.Dataset`:
``images, actions, rewards, discounts, is_first, is_last, is_terminal`` (first axis = all steps of
all episodes, back to back) and ``episode_starts, episode_lengths, returns, policy_ids,
policy_steps`` (one entry per episode). Episode ``e`` occupies rows
``episode_starts[e] : episode_starts[e] + episode_lengths[e]``; every window a sampler draws lies
inside one such range.

Sequence samplers (world models: SeMOPO, Offline DV2, LOMPO) return windows of ``seq_len`` entries::

    sampler = make_sequence_sampler(dataset, mode="conservative", batch_size=64, seq_len=50, seed=0)
    batch = sampler.sample()     # batch["image"]: (64, 50, 64, 64, 3) uint8, ...

Five modes:

``random``
    Uniform over all valid windows: every (episode, start) pair with ``start + seq_len <= length``
    is equally likely, so an episode is drawn with probability proportional to its number of
    windows. With equal-length episodes this is exactly DreamerV2's replay (episode uniform, then
    start uniform); with unequal lengths it does not over-sample the steps of short episodes.
``conservative``
    SeMOPO's conservative sampling over the whole model phase, as the released code schedules it
    (Sec. 3.3): trajectories are put in order (``order="return"``: ascending return, as the
    released code sorts them; ``order="policy"``: behaviour policy, earliest / weakest first, then
    recording time) and each batch draws from a prefix of them that starts at
    ``initial_trajectories`` (10) and grows every ``update_every`` (100) batches, evenly, so that
    the last block of the ``curriculum_steps`` (the model phase) draws from all n. It is still
    growing at 90 % of the model updates.
``conservative_literal``
    The paper's sentence read literally: the batch of model update m draws from the first
    ``min(m * pace, n)`` trajectories (``pace`` 1), then from the whole dataset. With n <= 400
    trajectories it is over after at most 400 of 25,000 model updates, so for the rest SeMOPO
    samples uniformly: the paper's own random-sampling ablation. Kept for comparison.
``conservative_policy``
    A policy-level reading kept as an option: each batch from ONE behaviour policy drawn among the
    first ``min(m, n)`` policies in epoch m (``curriculum_steps / n`` batches per epoch).
``return_curriculum``
    The rule of SeMOPO's released code: episodes sorted by return (ascending); each sequence comes
    from an episode drawn uniformly from the lowest-return prefix, which starts at 10 episodes and
    grows by ``max(int(E / 250.01), 1)`` every 100 batches (options reproduce its off-by-one cap
    and its de-duplication of equal returns).

Sequence batches are large (39 MB of images for 64 x 50), and faulting fresh memory in costs as
much as filling it; so by default a sampler refills the arrays of an earlier batch once nothing
outside it refers to them any more (:class:`BatchRecycler`; ``recycle=False`` turns this off; on
free-threaded Python builds it is off), and ``sample(out=sampler.empty_batch())`` fills a batch of
your own in place.

:class:`TransitionSampler` serves model-free algorithms (DrQ+BC, CQL, BC) with frame-stacked
transitions, and :func:`action_entropy` measures how varied the sampled actions are (the effect of
conservative sampling in the paper's Fig. 6).

Why the two kinds of batch have different layouts (the one place this is written down): keys that
mean the same thing have the same name in both (``action``, ``reward``, ``discount``,
``is_terminal``), but the observations differ on purpose. A sequence batch keeps the dataset's
channels-last frames, ``image`` (B, T, 64, 64, 3), one per time step, because the world models
(DreamerV2-style RSSMs) read a sequence frame by frame and their encoders take one frame at a time.
A transition batch holds channels-first frame *stacks*, ``obs`` / ``next_obs`` (B, 3 * k, 64, 64):
the model-free conv nets (V-D4RL's DrQ+BC, CQL, BC encoders) see the last k frames at once, stacked
along the channel axis, which is the layout ``torch.nn.Conv2d`` takes without a transpose. The
transition's flags are those of its *next* entry (``is_terminal``: the episode truly ended there),
where a sequence batch has one flag per step (``is_first``, ``is_last``, ``is_terminal``).
"""

import inspect
import math
import sys
import sysconfig
from collections.abc import Mapping

import numpy as np

from lqv_d4rl.errors import LQVError

# batch key -> Dataset attribute holding that key's flat array
STEP_ARRAYS = {
    "image": "images",
    "action": "actions",
    "reward": "rewards",
    "discount": "discounts",
    "is_first": "is_first",
    "is_last": "is_last",
    "is_terminal": "is_terminal",
}
OPTIONAL_STEP_ARRAYS = {"state": "states"}
"""Step arrays a dataset may lack (``Dataset.states`` is None for format version 1 and imported
data): sequence batches carry them where the dataset has them."""
EPISODE_ARRAYS = ("episode_starts", "episode_lengths", "returns", "policy_ids", "policy_steps")

# Arrays whose rows are smaller than this are gathered with one fancy-indexing call; larger rows
# (images) are copied window by window, which reads contiguous memory and works on lazy arrays.
_FANCY_INDEX_MAX_ROW_BYTES = 1024


class SamplerError(LQVError, ValueError):
    """A sampler cannot be built or used as asked (bad mode, option, or too-short episodes)."""


# ----------------------------------------------------------------------------------------------
# Windows: which (episode, start) pairs are valid, and drawing them uniformly
# ----------------------------------------------------------------------------------------------


class WindowTable:
    """The valid windows of a set of episodes, with uniform draws over all of them.

    ``episodes[i]`` has ``num_windows[i]`` windows, starting at offsets ``0 .. num_windows[i]-1``.
    """

    def __init__(self, episodes, num_windows):
        self.episodes = np.asarray(episodes, dtype=np.int64)
        self.num_windows = np.asarray(num_windows, dtype=np.int64)
        self.cumulative = np.cumsum(self.num_windows)

    @classmethod
    def for_length(cls, episode_lengths, seq_len, episodes=None):
        """Windows of ``seq_len`` entries in ``episodes`` (default: all); short episodes are left out."""
        lengths = np.asarray(episode_lengths, dtype=np.int64)
        if episodes is None:
            episodes = np.arange(len(lengths))
        episodes = np.asarray(episodes, dtype=np.int64)
        long_enough = episodes[lengths[episodes] >= seq_len]
        return cls(long_enough, lengths[long_enough] - seq_len + 1)

    @property
    def total(self):
        """Number of windows in the table."""
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def draw(self, rng, size):
        """Draw ``size`` windows uniformly (with replacement); returns (episodes, starts)."""
        flat = rng.integers(0, self.total, size=size)
        position = np.searchsorted(self.cumulative, flat, side="right")
        before = np.where(position > 0, self.cumulative[position - 1], 0)
        return self.episodes[position], flat - before


def eligible_episodes(dataset, seq_len):
    """Indices of the episodes with at least ``seq_len`` entries, or a SamplerError if there are none."""
    lengths = np.asarray(dataset.episode_lengths, dtype=np.int64)
    episodes = np.flatnonzero(lengths >= seq_len)
    if len(episodes) == 0:
        longest = int(lengths.max()) if len(lengths) else 0
        raise SamplerError(
            f"no episode has at least seq_len={seq_len} entries (the dataset has {len(lengths)} "
            f"episodes, the longest has {longest}); choose seq_len <= {longest}"
        )
    return episodes


def check_dataset(dataset):
    """Raise a SamplerError naming the attributes a dataset-like object lacks."""
    required = list(STEP_ARRAYS.values()) + list(EPISODE_ARRAYS)
    missing = [name for name in required if not hasattr(dataset, name)]
    if missing:
        raise SamplerError(
            f"{type(dataset).__name__} lacks {', '.join(missing)}; samplers need an "
            "lqv_d4rl.Dataset (see load_dataset) or an object with the same flat arrays"
        )


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SamplerError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Gathering windows into a batch
# ----------------------------------------------------------------------------------------------


def _gather_windows(array, first_rows, length, out=None):
    """Stack ``array[r : r + length]`` for every r in ``first_rows`` into one (B, length, ...) array.

    Fills and returns ``out`` when given, else a new array.
    """
    if isinstance(array, np.ndarray):
        row_bytes = array.itemsize * math.prod(array.shape[1:])
        if row_bytes <= _FANCY_INDEX_MAX_ROW_BYTES:
            rows = first_rows[:, None] + np.arange(length)
            return array[rows] if out is None else np.take(array, rows, axis=0, out=out)
    done = 0
    if out is None:  # shape and dtype from the first window (works for lazy array-likes too)
        first = np.asarray(array[first_rows[0] : first_rows[0] + length])
        out = np.empty((len(first_rows),) + first.shape, dtype=first.dtype)
        out[0] = first
        done = 1
    for i in range(done, len(first_rows)):
        out[i] = array[first_rows[i] : first_rows[i] + length]
    return out


def sequence_arrays(dataset, keys=None):
    """``{batch key: Dataset attribute}`` of the step arrays a sequence batch of ``dataset`` holds:
    :data:`STEP_ARRAYS` plus the :data:`OPTIONAL_STEP_ARRAYS` the dataset has (``state``), or only
    ``keys`` of them (e.g. no ``image`` for a model of states, which then never reads a frame)."""
    arrays = dict(STEP_ARRAYS)
    arrays.update({key: attribute for key, attribute in OPTIONAL_STEP_ARRAYS.items()
                   if getattr(dataset, attribute, None) is not None})
    if keys is None:
        return arrays
    missing = [key for key in keys if key not in arrays]
    if missing:
        lacks = [key for key in missing if key in OPTIONAL_STEP_ARRAYS]
        hint = (f"; the dataset stores no {', '.join(lacks)} (format version 1 or imported "
                "data)" if lacks else "")
        raise SamplerError(f"sequence batches cannot hold {missing}: the keys are "
                           f"{sorted(arrays)}{hint}")
    return {key: arrays[key] for key in keys}


def gather_sequences(dataset, episodes, starts, seq_len, out=None, keys=None):
    """The batch of windows (episode ``episodes[i]``, offset ``starts[i]``, ``seq_len`` entries).

    Returns a dict with the step keys (:func:`sequence_arrays`; only ``keys`` when given), each
    (B, seq_len, ...), plus ``episode`` and ``start`` (B,). With ``out`` (a dict like
    :meth:`SequenceSampler.empty_batch` makes) the arrays are filled in place and ``out`` is
    returned.
    """
    episodes = np.asarray(episodes, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    first_rows = np.asarray(dataset.episode_starts, dtype=np.int64)[episodes] + starts
    batch = {} if out is None else out
    for key, attribute in sequence_arrays(dataset, keys).items():
        target = None if out is None else out[key]
        batch[key] = _gather_windows(getattr(dataset, attribute), first_rows, seq_len, target)
    if out is None:
        batch["episode"], batch["start"] = episodes, starts
    else:
        out["episode"][...], out["start"][...] = episodes, starts
    return batch


def _reference_counts(arrays):
    return [sys.getrefcount(array) for array in arrays]


def _free_threaded():
    """True on a free-threaded (no-GIL) CPython build, whose reference counts are not exact."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _single_owner_count():
    """What :func:`_reference_counts` reports for an array that only one dict refers to, or None
    where reference counts cannot tell whether a batch is still in use (then nothing is recycled).

    Measured, not assumed: the count includes the interpreter's own temporary references, which
    differ between Python versions. The measurement is checked before it is trusted: one more
    reference, or a view, must raise the count, and dropping them must bring it back. Counts are
    not used at all on free-threaded builds or on interpreters without ``sys.getrefcount``.
    """
    if _free_threaded() or not hasattr(sys, "getrefcount"):
        return None
    owner = {"probe": np.empty(1)}
    alone = _reference_counts(owner.values())[0]
    held = owner["probe"]
    with_reference = _reference_counts(owner.values())[0]
    view = held[:]
    del held
    with_view = _reference_counts(owner.values())[0]
    del view
    again = _reference_counts(owner.values())[0]
    if with_reference <= alone or with_view <= alone or again != alone:
        return None
    return alone


_SINGLE_OWNER_COUNT = _single_owner_count()


class BatchRecycler:
    """Hands out batch arrays, reusing those of earlier batches that nobody uses any more.

    Faulting a fresh 64x50 image batch (39 MB) into memory costs about as much as filling it, so
    reusing memory nearly doubles sampling throughput. A batch is reused only when the reference
    counts of all its arrays show that this recycler holds the only reference: a batch you keep,
    or any one of its arrays, or any view, slice or ``torch.from_numpy`` tensor of one of them, is
    never overwritten. (Memory reached only through a raw pointer, e.g. ``array.ctypes.data``, is
    not counted: copy what you keep that way.) The ``slots`` most recently allocated batches are
    candidates for reuse. Where reference counts are not reliable (free-threaded builds, or a
    calibration at import that did not behave as expected) every batch is newly allocated.
    """

    def __init__(self, make_batch, slots=2):
        self._make_batch = make_batch
        self._slots = slots
        self._batches = []

    @property
    def enabled(self):
        """True when batches are reused on this interpreter (see the class docstring)."""
        return _SINGLE_OWNER_COUNT is not None

    def get(self):
        """A batch dict to fill: recycled when one is free, else newly allocated."""
        if not self.enabled:
            return self._make_batch()
        for batch in self._batches:
            if max(_reference_counts(batch.values())) <= _SINGLE_OWNER_COUNT:
                return dict(batch)  # the caller gets its own dict; ours stays as it is
        batch = self._make_batch()
        self._batches.append(batch)
        if len(self._batches) > self._slots:
            self._batches.pop(0)  # forget the oldest (still in use) batch: it is the caller's now
        return dict(batch)


# ----------------------------------------------------------------------------------------------
# Sequence samplers
# ----------------------------------------------------------------------------------------------


class SequenceSampler:
    """Uniform sequence sampler (mode ``random``): every valid window is equally likely.

    ``sample()`` returns a dict of numpy arrays: ``image`` (B,T,64,64,3) uint8, ``action`` (B,T,A)
    float32, ``reward``/``discount`` (B,T) float32, ``is_first``/``is_last``/``is_terminal`` (B,T)
    bool, ``episode`` (B,) episode index in the dataset and ``start`` (B,) offset in the episode.
    Episodes shorter than ``seq_len`` are never sampled. ``step`` counts the batches drawn so far.
    The sampler is iterable (an endless stream of batches). With ``recycle=True`` the arrays of
    batches you no longer reference are reused (see :class:`BatchRecycler`).
    """

    mode = "random"
    keys = None
    """The step keys of a batch (None: every step array of the dataset, :func:`sequence_arrays`);
    ``make_sequence_sampler(..., keys=...)`` narrows it."""

    def __init__(self, dataset, *, batch_size=64, seq_len=50, seed=0, recycle=True):
        check_dataset(dataset)
        self.dataset = dataset
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.seq_len = _check_positive_int("seq_len", seq_len)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.episodes = eligible_episodes(dataset, self.seq_len)
        self.windows = WindowTable.for_length(dataset.episode_lengths, self.seq_len, self.episodes)
        self.recycler = BatchRecycler(self.empty_batch) if recycle else None

    def choose_windows(self):
        """Pick the next batch's windows and advance ``step``; returns (episodes, starts), each (B,)."""
        episodes, starts = self._choose()
        self.step += 1
        return episodes, starts

    def _choose(self):
        return self.windows.draw(self.rng, self.batch_size)

    def set_step(self, step):
        """Set the number of batches counted as drawn (curriculum modes read their state from it)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise SamplerError(f"step must be a non-negative integer, got {step!r}")
        self.step = int(step)

    def sample(self, out=None):
        """Draw the next batch (see the class docstring for its keys and shapes).

        ``out``: a batch from :meth:`empty_batch` to fill in place and return, overwriting it.
        """
        episodes, starts = self.choose_windows()
        if out is None and self.recycler is not None:
            out = self.recycler.get()
        return gather_sequences(self.dataset, episodes, starts, self.seq_len, out=out,
                                keys=self.keys)

    @property
    def arrays(self):
        """``{batch key: Dataset attribute}`` of the step arrays this sampler's batches hold."""
        return sequence_arrays(self.dataset, self.keys)

    def empty_batch(self):
        """Uninitialized arrays with the shapes and dtypes of one batch, for ``sample(out=...)``."""
        shape = (self.batch_size, self.seq_len)
        batch = {}
        for key, attribute in self.arrays.items():
            array = getattr(self.dataset, attribute)
            batch[key] = np.empty(shape + tuple(array.shape[1:]), dtype=array.dtype)
        batch["episode"] = np.empty(self.batch_size, np.int64)
        batch["start"] = np.empty(self.batch_size, np.int64)
        return batch

    def __iter__(self):
        while True:
            yield self.sample()

    def __repr__(self):
        return (
            f"{type(self).__name__}(mode={self.mode!r}, batch_size={self.batch_size}, "
            f"seq_len={self.seq_len}, seed={self.seed!r}, step={self.step}, "
            f"episodes={len(self.episodes)})"
        )


POLICY_ORDERS = ("auto", "policy_step", "return", "appearance")


def order_policies(dataset, episodes, order="auto"):
    """The behaviour policies of ``episodes`` in curriculum order, as a list of policy ids.

    ``policy_step``: ascending checkpoint step (a medrep training run: earliest policy first);
    ``return``: ascending mean episode return (weakest policy first); ``appearance``: order of first
    appearance in the dataset. ``auto`` uses ``policy_step`` when every episode of ``episodes`` has
    one (>= 0), else ``return``. Ties keep first-appearance order.
    """
    if order not in POLICY_ORDERS:
        raise SamplerError(f"policy_order must be one of {POLICY_ORDERS}, got {order!r}")
    policy_ids = np.asarray(dataset.policy_ids)[episodes]
    policy_steps = np.asarray(dataset.policy_steps, dtype=np.int64)[episodes]
    returns = np.asarray(dataset.returns, dtype=np.float64)[episodes]
    unique, first_seen, inverse = np.unique(policy_ids, return_index=True, return_inverse=True)
    appearance = np.argsort(first_seen, kind="stable")
    if order == "auto":
        order = "policy_step" if np.all(policy_steps >= 0) else "return"
    if order == "appearance":
        ranking = appearance
    else:
        if order == "policy_step":
            keys = np.array([policy_steps[inverse == i].min() for i in range(len(unique))])
        else:
            keys = np.array([returns[inverse == i].mean() for i in range(len(unique))])
        ranking = appearance[np.argsort(keys[appearance], kind="stable")]
    return [str(unique[i]) for i in ranking]


class _Curriculum:
    """Mixin of the curriculum samplers: the step their schedule reads, which ``frozen_step`` pins.

    SeMOPO's released code keeps sampling from the prefix the model phase ended with during the
    policy phase; a sampler built with ``frozen_step=model_steps`` does the same.
    """

    frozen_step = None

    @property
    def curriculum_step(self):
        """The batch count the schedule uses: ``step``, or ``frozen_step`` when set."""
        return self.step if self.frozen_step is None else self.frozen_step


def ordered_trajectories(dataset, episodes, policy_order="auto"):
    """``episodes`` in the order of SeMOPO's conservative sampling: behaviour policies in
    :func:`order_policies` order (earliest / weakest first), and within a policy in dataset order
    (the order they were recorded in)."""
    policy_ids = np.asarray(dataset.policy_ids)[episodes]
    rank = {pid: i for i, pid in enumerate(order_policies(dataset, episodes, policy_order))}
    keys = np.array([rank[pid] for pid in policy_ids.tolist()], dtype=np.int64)
    return episodes[np.argsort(keys, kind="stable")]


class _PrefixSampler(_Curriculum, SequenceSampler):
    """A curriculum over trajectories in a fixed order: the batch at a step draws every sequence
    uniformly from the valid windows of the first :meth:`allowed_count` trajectories (all of them
    once that reaches n, as mode ``random``). Subclasses set the order and the growth."""

    def _set_order(self, trajectories):
        self.trajectories = np.asarray(trajectories, dtype=np.int64)
        self.ordered_windows = WindowTable.for_length(self.dataset.episode_lengths, self.seq_len,
                                                      self.trajectories)

    @property
    def num_trajectories(self):
        """n: the number of trajectories with at least one valid window."""
        return len(self.trajectories)

    def allowed_count(self, step=None):
        """How many of the ordered trajectories the batch at ``step`` (default: next) draws from."""
        raise NotImplementedError

    @property
    def is_open(self):
        """True once batches come from the whole dataset."""
        return self.allowed_count() >= self.num_trajectories

    def allowed_trajectories(self):
        """The episode indices the next batch may come from, in curriculum order."""
        return self.trajectories[: self.allowed_count()]

    def _choose(self):
        if self.is_open:
            return self.windows.draw(self.rng, self.batch_size)
        count = self.allowed_count()
        limit = int(self.ordered_windows.cumulative[count - 1])
        flat = self.rng.integers(0, limit, size=self.batch_size)
        position = np.searchsorted(self.ordered_windows.cumulative, flat, side="right")
        before = np.where(position > 0, self.ordered_windows.cumulative[position - 1], 0)
        return self.ordered_windows.episodes[position], flat - before


CONSERVATIVE_ORDERS = ("return", "policy")


def returns_ascending(dataset, episodes):
    """``episodes`` sorted by episode return, lowest first (ties: dataset order), as SeMOPO's
    released code sorts them."""
    returns = np.asarray(dataset.returns, dtype=np.float64)[episodes]
    return episodes[np.argsort(returns, kind="stable")]


class ConservativeSampler(_PrefixSampler):
    """SeMOPO's conservative sampling spanning the model phase (the Table 1 protocol).

    The n eligible trajectories are ordered by ``order``: ``"return"`` (ascending episode return,
    as the released code sorts them) or ``"policy"`` (:func:`ordered_trajectories`: behaviour
    policy in ``policy_order``, then recording order). Batches are counted in blocks of
    ``update_every``; block b of the ``B = ceil(curriculum_steps / update_every)`` blocks draws
    from the first ``initial + ceil((n - initial) * b / (B - 1))`` trajectories, so the prefix
    grows evenly from ``initial_trajectories`` (the released code's 10) to all n in the last block
    of the curriculum, and stays there. This is the released schedule's shape (10 episodes, a few
    more every 100 updates, growing for the whole model phase) without its integer increment,
    which stops at 260 of 400 episodes, and without its off-by-one cap (mode
    ``return_curriculum`` keeps both).
    """

    mode = "conservative"

    def __init__(self, dataset, *, batch_size=64, seq_len=50, seed=0, recycle=True,
                 order="return", initial_trajectories=10, curriculum_steps=25_000,
                 update_every=100, policy_order="auto", frozen_step=None):
        super().__init__(dataset, batch_size=batch_size, seq_len=seq_len, seed=seed, recycle=recycle)
        if order not in CONSERVATIVE_ORDERS:
            raise SamplerError(f"order must be one of {CONSERVATIVE_ORDERS}, got {order!r}")
        if policy_order not in POLICY_ORDERS:
            raise SamplerError(f"policy_order must be one of {POLICY_ORDERS}, got {policy_order!r}")
        self.order = order
        self.frozen_step = frozen_step
        self.initial_trajectories = _check_positive_int("initial_trajectories",
                                                        initial_trajectories)
        self.curriculum_steps = _check_positive_int("curriculum_steps", curriculum_steps)
        self.update_every = _check_positive_int("update_every", update_every)
        if order == "return":
            self._set_order(returns_ascending(dataset, self.episodes))
        else:
            self._set_order(ordered_trajectories(dataset, self.episodes, policy_order))

    @property
    def blocks(self):
        """B: blocks of ``update_every`` batches in the curriculum."""
        return -(-self.curriculum_steps // self.update_every)

    def allowed_count(self, step=None):
        """The prefix size at ``step`` (default: the next batch)."""
        step = self.curriculum_step if step is None else step
        total = self.num_trajectories
        initial = min(self.initial_trajectories, total)
        last = self.blocks - 1
        block = min(step // self.update_every, last)
        if block == last:  # the last block of the curriculum (the only one of a short one)
            return total
        return initial + math.ceil((total - initial) * block / last)


class LiteralConservativeSampler(_PrefixSampler):
    """The paper's sentence on conservative sampling read literally (Sec. 3.3, Algorithm 1, one
    model update per epoch): an ablation, not the Table 1 protocol.

    Trajectories are ordered by :func:`ordered_trajectories` (behaviour policy, then recording
    order). The batch of model update m (1-based: ``m = step + 1``) draws from the first
    ``k_m = min(max(1, floor(m * pace)), n)`` trajectories; once ``k_m = n`` the whole dataset is
    used (as mode ``random``). With ``pace = 1`` a 200-episode dataset opens after 200 of the
    25,000 model updates, so SeMOPO then samples uniformly for more than 98 % of model training.
    """

    mode = "conservative_literal"

    def __init__(self, dataset, *, batch_size=64, seq_len=50, seed=0, recycle=True, pace=1.0,
                 policy_order="auto", frozen_step=None):
        super().__init__(dataset, batch_size=batch_size, seq_len=seq_len, seed=seed, recycle=recycle)
        if not pace > 0:
            raise SamplerError(f"pace must be > 0 trajectories per update, got {pace!r}")
        self.pace = float(pace)
        self.frozen_step = frozen_step
        self._set_order(ordered_trajectories(dataset, self.episodes, policy_order))

    def allowed_count(self, step=None):
        """k_m: how many of the ordered trajectories the batch at ``step`` (default: next) draws from."""
        step = self.curriculum_step if step is None else step
        return min(max(1, math.floor((step + 1) * self.pace)), self.num_trajectories)


class PolicyConservativeSampler(_Curriculum, SequenceSampler):
    """A policy-level reading of conservative sampling (this toolkit's first one, kept as an option).

    The n behaviour policies are ordered by :func:`order_policies` (``policy_order``). Epoch ``m``
    (1-based) covers batches ``(m-1)*epoch_length .. m*epoch_length-1``. While ``m <= n``, each
    batch comes from ONE policy, drawn uniformly from the first ``min(m, n)`` policies, and its
    windows are drawn uniformly from that policy's valid windows. From epoch ``n + 1`` on, batches
    are uniform over the whole dataset (mode ``random``). ``epoch_length`` defaults to
    ``max(1, curriculum_steps // n)``. A one-policy dataset is sampled uniformly throughout.
    """

    mode = "conservative_policy"

    def __init__(
        self,
        dataset,
        *,
        batch_size=64,
        seq_len=50,
        seed=0,
        recycle=True,
        epoch_length=None,
        curriculum_steps=25_000,
        policy_order="auto",
        frozen_step=None,
    ):
        super().__init__(dataset, batch_size=batch_size, seq_len=seq_len, seed=seed, recycle=recycle)
        self.frozen_step = frozen_step
        self.policy_order = order_policies(dataset, self.episodes, policy_order)
        policy_ids = np.asarray(dataset.policy_ids)
        self.policy_windows = [
            WindowTable.for_length(
                dataset.episode_lengths,
                self.seq_len,
                self.episodes[policy_ids[self.episodes] == pid],
            )
            for pid in self.policy_order
        ]
        if epoch_length is None:
            curriculum_steps = _check_positive_int("curriculum_steps", curriculum_steps)
            epoch_length = max(1, curriculum_steps // self.num_policies)
        self.epoch_length = _check_positive_int("epoch_length", epoch_length)

    @property
    def num_policies(self):
        """n: the number of behaviour policies with at least one valid window."""
        return len(self.policy_order)

    @property
    def epoch(self):
        """The 1-based epoch of the next batch."""
        return self.curriculum_step // self.epoch_length + 1

    @property
    def is_open(self):
        """True once batches come from the whole dataset (epoch > n)."""
        return self.epoch > self.num_policies

    def set_epoch(self, epoch):
        """Jump to the first batch of epoch ``epoch`` (1-based)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
            raise SamplerError(f"epoch must be an integer >= 1, got {epoch!r}")
        self.step = (int(epoch) - 1) * self.epoch_length

    def allowed_policies(self):
        """The policy ids the next batch may come from (all of them once the curriculum is open)."""
        return self.policy_order[: min(self.epoch, self.num_policies)]

    def _choose(self):
        if self.is_open:
            return self.windows.draw(self.rng, self.batch_size)
        policy = self.rng.integers(0, min(self.epoch, self.num_policies))
        return self.policy_windows[policy].draw(self.rng, self.batch_size)


class ReturnCurriculumSampler(_Curriculum, SequenceSampler):
    """The return curriculum of SeMOPO's released code (``OfflineReplay`` with ``incremental`` and
    ``sort_rewards``, grown by ``train_offline.py``).

    Eligible episodes (>= ``seq_len`` entries) are sorted by return, ascending (ties: dataset
    order). Each sequence comes from an episode drawn uniformly from the first ``prefix_size()`` of
    them, with a uniform start in it. The batch at step s draws from::

        prefix(s) = min(initial + (s // update_every) * increment, E)
        increment = max(int(E / (curriculum_steps / update_every)), 1)

    i.e. the released code's ``curr_idx``: 10 episodes first, ``max(int(E / 250.01), 1)`` more after
    every 100 model updates (``offline_model_train_steps`` 25,001 / ``model_train_steps`` 100). With
    400 episodes it reaches only 260 of them in 25,100 updates. ``replicate_off_by_one=True`` also
    applies its cap ``E - 1`` (indices are drawn from ``[0, curr_idx)``, so its best episode is never
    sampled), and ``unique_returns=True`` keeps one episode per distinct return, the last one in
    dataset order, as its ``dict(zip(returns, episodes))`` does.
    """

    mode = "return_curriculum"

    def __init__(
        self,
        dataset,
        *,
        batch_size=64,
        seq_len=50,
        seed=0,
        recycle=True,
        initial_episodes=10,
        curriculum_steps=25_001,
        update_every=100,
        replicate_off_by_one=False,
        unique_returns=False,
        frozen_step=None,
    ):
        super().__init__(dataset, batch_size=batch_size, seq_len=seq_len, seed=seed, recycle=recycle)
        self.frozen_step = frozen_step
        episodes = self.episodes
        if unique_returns:
            returns = np.asarray(dataset.returns, dtype=np.float64)[episodes]
            last_of_each = {value: index for index, value in enumerate(returns.tolist())}
            episodes = episodes[np.array(sorted(last_of_each.values()), dtype=np.int64)]
        self.sorted_episodes = returns_ascending(dataset, episodes)
        lengths = np.asarray(dataset.episode_lengths, dtype=np.int64)
        self.sorted_num_windows = lengths[self.sorted_episodes] - self.seq_len + 1
        self.initial_episodes = _check_positive_int("initial_episodes", initial_episodes)
        self.curriculum_steps = _check_positive_int("curriculum_steps", curriculum_steps)
        self.update_every = _check_positive_int("update_every", update_every)
        self.replicate_off_by_one = bool(replicate_off_by_one)

    @property
    def increment(self):
        """Episodes added after every ``update_every`` batches."""
        total = len(self.sorted_episodes)
        return max(int(total / (self.curriculum_steps / self.update_every)), 1)

    def prefix_size(self, step=None):
        """How many of the lowest-return episodes the batch at ``step`` (default: next) draws from."""
        step = self.curriculum_step if step is None else step
        total = len(self.sorted_episodes)
        cap = max(1, total - 1) if self.replicate_off_by_one else total
        return min(self.initial_episodes + (step // self.update_every) * self.increment, cap)

    def _choose(self):
        picks = self.rng.integers(0, self.prefix_size(), size=self.batch_size)
        starts = self.rng.integers(0, self.sorted_num_windows[picks])
        return self.sorted_episodes[picks], starts


SEQUENCE_SAMPLERS = {
    SequenceSampler.mode: SequenceSampler,
    ConservativeSampler.mode: ConservativeSampler,
    LiteralConservativeSampler.mode: LiteralConservativeSampler,
    PolicyConservativeSampler.mode: PolicyConservativeSampler,
    ReturnCurriculumSampler.mode: ReturnCurriculumSampler,
}


def mark_window_starts(batch):
    """Set ``is_first`` at the first entry of every window of a sequence batch (in place, numpy or
    torch; returns the batch), as DreamerV2's replay does: a world model then starts each window
    from its initial state with a zero action, instead of a zero state fed the stored action."""
    batch["is_first"][:, 0] = True
    return batch


def make_sequence_sampler(dataset, mode="random", *, batch_size=64, seq_len=50, seed=0, **options):
    """A sequence sampler of the given mode (``random``, ``conservative``, ``conservative_literal``,
    ``conservative_policy``, ``return_curriculum``).

    ``options`` go to the mode's class: every mode takes ``recycle``; the curriculum modes take
    ``frozen_step``; ``conservative`` takes ``order``, ``initial_trajectories``,
    ``curriculum_steps``, ``update_every`` and ``policy_order``; ``conservative_literal`` takes
    ``pace`` and ``policy_order``; ``conservative_policy``
    takes ``epoch_length``, ``curriculum_steps``, ``policy_order``; ``return_curriculum`` takes
    ``initial_episodes``, ``curriculum_steps``, ``update_every``, ``replicate_off_by_one``,
    ``unique_returns``. Every mode also takes ``keys``: the step keys its batches hold (default:
    all of the dataset's, ``state`` included where it has states; e.g. leave out ``image`` for a
    model of states).
    """
    keys = options.pop("keys", None)
    sampler_class = SEQUENCE_SAMPLERS.get(mode)
    if sampler_class is None:
        raise SamplerError(f"unknown sampling mode {mode!r}; choose one of {sorted(SEQUENCE_SAMPLERS)}")
    accepted = set(inspect.signature(sampler_class).parameters) - {
        "dataset",
        "batch_size",
        "seq_len",
        "seed",
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SamplerError(
            f"mode {mode!r} does not take option(s) {unknown}; it takes {sorted(accepted) or 'none'}"
        )
    sampler = sampler_class(dataset, batch_size=batch_size, seq_len=seq_len, seed=seed, **options)
    if keys is not None:
        sequence_arrays(dataset, keys)  # unknown or missing keys fail here, not at the first batch
        sampler.keys = tuple(keys)
    return sampler


# ----------------------------------------------------------------------------------------------
# Transitions with frame stacking
# ----------------------------------------------------------------------------------------------


def channels_first(images):
    """(N, H, W, C) images -> a new (N, C, H, W) array."""
    images = np.asarray(images)
    count, height, width, channels = images.shape
    out = np.empty((count, channels, height * width), dtype=images.dtype)
    # transposing (H*W, C) -> (C, H*W) is about twice as fast as the 4-D transpose
    np.copyto(out, images.reshape(count, height * width, channels).transpose(0, 2, 1))
    return out.reshape(count, channels, height, width)


class TransitionBatch(dict):
    """A :class:`TransitionSampler` batch: a dict whose deprecated key ``terminal`` still reads
    ``is_terminal`` (with a DeprecationWarning); it will be removed."""

    def __missing__(self, key):
        if key != "terminal":
            raise KeyError(key)
        import warnings

        warnings.warn("TransitionSampler batches call the flag 'is_terminal' (as sequence "
                      "batches and datasets do); 'terminal' is deprecated", DeprecationWarning,
                      stacklevel=2)
        return self["is_terminal"]


class TransitionSampler:
    """Frame-stacked transitions for model-free algorithms (DrQ+BC, CQL, BC).

    A transition at entry t of an episode (0 <= t <= length - 2) is returned as:
    ``obs`` (B, 3*frame_stack, H, W) uint8, channel-first frames o_{t-k+1} .. o_t, oldest first
    (frames before the episode start repeat its first frame); ``action`` (B, A), the action that
    follows o_t (stored in entry t+1); ``reward``, ``discount`` (B,) of entry t+1; ``next_obs``
    stacked likewise ending at o_{t+1}; ``is_terminal`` (B,) bool, is_terminal of entry t+1;
    ``episode`` (B,) and ``index`` (B,) = t. Transitions are drawn uniformly over all of them.
    (The module docstring says why these frames are stacked channels-first.) The old key
    ``terminal`` still reads ``is_terminal``, with a DeprecationWarning, for a while.
    """

    def __init__(self, dataset, *, batch_size=256, frame_stack=3, seed=0):
        check_dataset(dataset)
        self.dataset = dataset
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.frame_stack = _check_positive_int("frame_stack", frame_stack)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # a transition (t, t+1) is a window of two entries
        self.transitions = WindowTable.for_length(
            dataset.episode_lengths, 2, eligible_episodes(dataset, 2)
        )
        self.episode_starts = np.asarray(dataset.episode_starts, dtype=np.int64)

    def sample(self):
        """Draw the next batch of transitions (see the class docstring for the keys)."""
        episodes, t = self.transitions.draw(self.rng, self.batch_size)
        first_rows = self.episode_starts[episodes]
        # entries t-k+1 .. t+1, clamped at the episode's first entry
        offsets = np.maximum(t[:, None] + np.arange(1 - self.frame_stack, 2), 0)
        frames = channels_first(self.dataset.images[(first_rows[:, None] + offsets).ravel()])
        size, (channels, height, width) = len(t), frames.shape[1:]
        frames = frames.reshape(size, self.frame_stack + 1, channels, height, width)
        stacked_shape = (size, self.frame_stack * channels, height, width)
        next_rows = first_rows + t + 1
        return TransitionBatch({
            "obs": np.ascontiguousarray(frames[:, :-1]).reshape(stacked_shape),
            "action": np.asarray(self.dataset.actions[next_rows]),
            "reward": np.asarray(self.dataset.rewards[next_rows]),
            "discount": np.asarray(self.dataset.discounts[next_rows]),
            "next_obs": np.ascontiguousarray(frames[:, 1:]).reshape(stacked_shape),
            "is_terminal": np.asarray(self.dataset.is_terminal[next_rows]),
            "episode": episodes,
            "index": t,
        })

    def __iter__(self):
        while True:
            yield self.sample()

    def __repr__(self):
        return (
            f"TransitionSampler(batch_size={self.batch_size}, frame_stack={self.frame_stack}, "
            f"seed={self.seed!r}, transitions={self.transitions.total})"
        )


# ----------------------------------------------------------------------------------------------
# Action entropy
# ----------------------------------------------------------------------------------------------


def action_entropy(actions, is_first=None, *, bins=20, low=-1.0, high=1.0):
    """Mean over action dimensions of the histogram entropy of the actions, in nats.

    ``actions`` is an array (..., A) or a batch dict (its ``action`` key, and its ``is_first`` key
    unless ``is_first`` is given). Entries flagged ``is_first`` hold the placeholder zero action of
    an episode's first step and are left out. Each dimension is binned into ``bins`` equal bins
    over [low, high] (values outside are clipped into the end bins) and the plug-in entropy
    ``-sum p log p`` of the bin frequencies is computed; the result is the mean over dimensions,
    between 0 (all actions in one bin) and log(bins) (uniform spread). Fixed bins make values
    comparable across batches and datasets; adding log((high - low) / bins) gives an estimate of
    the differential entropy.
    """
    if isinstance(actions, Mapping):
        if is_first is None:
            is_first = actions.get("is_first")
        actions = actions["action"]
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim == 0:
        raise SamplerError("action_entropy needs an array of actions (..., action_dim)")
    actions = actions.reshape(-1, actions.shape[-1] if actions.ndim > 1 else 1)
    if is_first is not None:
        is_first = np.asarray(is_first, dtype=bool).reshape(-1)
        if len(is_first) != len(actions):
            raise SamplerError(
                f"is_first has {len(is_first)} entries but there are {len(actions)} actions"
            )
        actions = actions[~is_first]
    if len(actions) == 0:
        raise SamplerError("action_entropy got no actions (all entries empty or is_first)")
    bins = _check_positive_int("bins", bins)
    edges = np.linspace(low, high, bins + 1)
    clipped = np.clip(actions, low, high)
    entropies = []
    for dimension in clipped.T:
        counts, _ = np.histogram(dimension, bins=edges)
        p = counts[counts > 0] / len(dimension)
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))
