"""Run folders: what every algorithm writes while it trains, and how a killed run resumes.

A run folder holds::

    config.json      algorithm, config, seed, device, dataset fingerprint, versions (written at start)
    metrics.csv      phase,step,metric,value rows, flushed as they are written
    events.out.*     the same metrics as TensorBoard event files (when ``tensorboard`` is installed)
    checkpoint.pt    the algorithm's state, replaced atomically; loaded with ``weights_only=True``
    eval.json        evaluation of the finished run (written by :mod:`lqv_d4rl.experiment`)

:meth:`Run.open` creates or reopens a folder: it refuses to touch a finished run without
``overwrite``, refuses to continue a checkpoint without ``resume``, and refuses to resume with another
config (fields listed in ``Algorithm.resumable_fields`` excepted), seed or dataset.
:meth:`Run.phase` is the training loop every algorithm shares: it calls ``update()`` until a number
of updates is reached, logs means of the returned metrics, checkpoints, and stops early (with a
checkpoint) after ``stop_after`` updates so that long runs can be split over several sessions.
"""

import csv
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .errors import LQVError

RUN_FORMAT = "lqv-d4rl-run"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
CHECKPOINT_NAME = "checkpoint.pt"
EVAL_NAME = "eval.json"


class RunExistsError(LQVError, FileExistsError):
    """The folder holds a run that would be overwritten (or continued) without being asked to."""


class ResumeMismatchError(LQVError, ValueError):
    """The run in the folder was trained with another config, seed or dataset."""


class NotARunError(LQVError, FileNotFoundError):
    """A folder that holds no lqv-d4rl run (or not the files asked for)."""


def dataset_fingerprint(dataset):
    """What identifies the training data of a run: ids, sizes, a returns checksum, and the sha256 of
    the shard checksums of every source manifest (plus the Hub commit where it was downloaded)."""
    sources = dataset.metadata.get("sources", [dataset.metadata])
    shard_sums = [shard.get("sha256", "") for source in sources for shard in source.get("shards", [])]
    hub = [source.get("hub", {}).get("commit") for source in sources]
    return {
        "task": str(dataset.task),
        "dataset_ids": sorted(set(map(str, dataset.dataset_ids))),
        "episodes": len(dataset),
        "steps": int(dataset.num_steps),
        "return_sum": round(float(np.sum(dataset.returns)), 6),
        "manifest_sha256": hashlib.sha256("\n".join(shard_sums).encode()).hexdigest(),
        "hub_commits": [commit for commit in hub if commit],
    }


def config_hash(config_dict):
    """A short stable hash of a config dict (sorted JSON)."""
    return hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode()).hexdigest()[:16]


def same_device(a, b):
    """True when two device strings name the same device (``cuda`` is ``cuda:0``)."""
    def canonical(text):
        text = str(text)
        return "cuda:0" if text == "cuda" else text
    return canonical(a) == canonical(b)


def is_finished(path):
    """True when ``path`` holds a finished, evaluated run."""
    return (Path(path) / EVAL_NAME).is_file()


def read_run_config(path):
    """The ``config.json`` of a run folder (raises :class:`NotARunError` if there is none)."""
    file = Path(path) / CONFIG_NAME
    try:
        record = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        raise NotARunError(f"{path} holds no lqv-d4rl run ({CONFIG_NAME} missing or unreadable); "
                           "pass the --out folder of a `lqv-d4rl train` run") from None
    if record.get("format") != RUN_FORMAT:
        raise NotARunError(f"{file} is not an lqv-d4rl run config")
    return record


def run_dataset_source(record):
    """What :func:`lqv_d4rl.dataset.load_dataset` loads to get a run's training data back, from
    the run's ``config.json`` record: the id or folder it was trained on, or else the ids of its
    dataset."""
    return record.get("dataset_source") or record["dataset"]["dataset_ids"]


class Run:
    """One run folder. Make it with :meth:`open`; algorithms use :meth:`phase`, :meth:`log`,
    :meth:`save_checkpoint` and :meth:`load_checkpoint`.

    Attributes: ``path``, ``algorithm`` (name), ``config`` (the dataclass), ``seed``, ``device``,
    ``record`` (the ``config.json`` dict), ``stopped`` (True once ``stop_after`` ran out),
    ``train_seconds`` (wall time spent in :meth:`phase` over all sessions of this run).
    """

    def __init__(self, path, *, algorithm, config, seed, device, record, stop_after=None,
                 progress=False):
        self.path = Path(path)
        self.algorithm, self.config, self.seed, self.device = algorithm, config, seed, device
        self.record = record
        self.updates_left = math.inf if stop_after is None else int(stop_after)
        self.stopped = False
        self.progress = progress
        self.metrics = MetricsLog(self.path / METRICS_NAME)
        self.train_seconds = 0.0
        self._tensorboard = None

    # ------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path, algorithm, config, dataset, *, seed=0, device="cpu", resume=False,
             overwrite=False, stop_after=None, progress=False, extra=None):
        """Create the run folder ``path`` or reopen it.

        Args:
            algorithm: the :class:`lqv_d4rl.algorithms.Algorithm` (its name and resumable fields).
            config: the algorithm's config dataclass.
            dataset: the training :class:`lqv_d4rl.Dataset` (fingerprinted for resume checks).
            seed, device: recorded; resuming with another seed is refused, a device this
                machine lacks raises :class:`lqv_d4rl.torch_data.DeviceUnavailableError`.
            resume: continue a checkpointed run (a fresh folder starts from scratch).
            overwrite: delete a previous run in ``path`` first (only a folder that holds a run).
            stop_after: stop after this many updates (checkpointed); continue later with ``resume``.
            extra: further JSON-able facts to record in ``config.json`` (preset, eval settings).
        """
        from .algorithms import config_to_dict
        from .torch_data import check_device

        path = Path(path)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise LQVError(f"seed must be a non-negative integer, got {seed!r}")
        check_device(device)  # a GPU this machine lacks: one line now, not a traceback later
        if overwrite:
            _remove_run(path)
        record = {
            "format": RUN_FORMAT, "algorithm": algorithm.name, "config": config_to_dict(config),
            "config_hash": config_hash(config_to_dict(config)), "seed": int(seed),
            "device": str(device), "dataset": dataset_fingerprint(dataset),
            "code_version": __version__, "created": _now(), **(extra or {}),
        }
        if (path / CONFIG_NAME).exists():
            previous = read_run_config(path)
            _check_can_continue(path, previous, record, algorithm, resume)
            record["created"] = previous.get("created", record["created"])
        path.mkdir(parents=True, exist_ok=True)
        if not (path / CHECKPOINT_NAME).exists():
            record.pop("resumed", None)
            MetricsLog(path / METRICS_NAME).truncate_after(None)
        _write_json(path / CONFIG_NAME, record)
        return cls(path, algorithm=algorithm.name, config=config, seed=int(seed), device=str(device),
                   record=record, stop_after=stop_after, progress=progress)

    # ------------------------------------------------------------------------------ training loop

    def phase(self, name, *, total, done, update, checkpoint, log_every=100,
              checkpoint_every=5000, description=None, postfix=()):
        """Call ``update()`` until ``done()`` reaches ``total``; returns True when it did.

        ``update()`` does one update and returns a dict of scalar metrics (tensors are fine; they
        are averaged and converted only every ``log_every`` updates). Every ``log_every`` updates a
        row of means goes to ``metrics.csv`` as phase ``name``; every ``checkpoint_every`` updates,
        at the end, and when ``stop_after`` runs out, ``checkpoint()`` is called (it should call
        :meth:`save_checkpoint`). ``postfix`` names metrics shown in the tqdm bar.
        """
        from tqdm.auto import tqdm

        if done() >= total:
            return True
        if self.updates_left <= 0:
            self.stopped = True
            return False
        bar = tqdm(total=total, initial=done(), desc=description or name, dynamic_ncols=True,
                   disable=not self.progress)
        meter = MetricMeter()
        started = time.perf_counter()
        try:
            while done() < total and self.updates_left > 0:
                meter.add(update())
                self.updates_left -= 1
                step = done()
                bar.update(1)
                if step % log_every == 0 or step == total:
                    row = meter.flush()
                    self.log(name, step, row)
                    bar.set_postfix({key: f"{row[key]:.3g}" for key in postfix if key in row},
                                    refresh=False)
                if step % checkpoint_every == 0 or step == total or self.updates_left <= 0:
                    self.train_seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    checkpoint()
        finally:
            bar.close()
        self.stopped = done() < total
        return not self.stopped

    # ------------------------------------------------------------------------------ files

    def log(self, phase, step, metrics):
        """Append ``metrics`` (name -> number) at ``step`` of ``phase`` to metrics.csv and TensorBoard."""
        self.metrics.write(phase, step, metrics)
        writer = self._tensorboard_writer()
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"{phase}/{key}", float(value), int(step))
            writer.flush()

    def _tensorboard_writer(self):
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tensorboard = False
            else:
                self._tensorboard = SummaryWriter(str(self.path))
        return self._tensorboard or None

    def save_checkpoint(self, state):
        """Write ``state`` (tensors, numbers, strings, lists and dicts only) to checkpoint.pt
        atomically, with the run's wall time; a crash leaves the previous checkpoint intact."""
        import torch

        state = dict(state, _run={"train_seconds": float(self.train_seconds)})
        path = self.path / CHECKPOINT_NAME
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def load_checkpoint(self):
        """The saved state (on the CPU, loaded with ``weights_only=True``), or None for a fresh run.
        Metrics logged after the checkpoint are dropped, since they will be logged again."""
        state = load_checkpoint_file(self.path)
        if state is None:
            return None
        self.train_seconds = float(state.pop("_run", {}).get("train_seconds", 0.0))
        return state

    def truncate_metrics(self, phase, step):
        """Drop metric rows logged after ``(phase, step)`` (call after restoring a checkpoint)."""
        self.metrics.truncate_after((phase, step))

    def write_json(self, name, value):
        """Write ``value`` as JSON to ``name`` in the run folder, atomically."""
        _write_json(self.path / name, value)

    def close(self):
        """Close the TensorBoard writer (metrics.csv needs no closing)."""
        if self._tensorboard:
            self._tensorboard.close()
        self._tensorboard = None


def load_checkpoint_file(path):
    """``checkpoint.pt`` of run folder ``path`` loaded on the CPU with ``weights_only=True``, or None.

    Loading to the CPU keeps RNG states as the CPU byte tensors ``set_rng_state`` wants and lets
    ``load_state_dict`` place every tensor on its module's device.
    """
    import torch

    file = Path(path) / CHECKPOINT_NAME
    if not file.exists():
        return None
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        import pickle

        why = ("it holds objects other than tensors and plain data, so it was not written by this "
               "toolkit" if isinstance(err, pickle.UnpicklingError)
               else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'truncated?'}")
        raise LQVError(f"cannot read the checkpoint {file} ({why}); delete it to start the run "
                       "again, or pass --overwrite") from None


def _check_can_continue(path, previous, record, algorithm, resume):
    if is_finished(path):
        raise RunExistsError(f"{path} holds a finished {previous.get('algorithm')} run; pass "
                             "--overwrite to train again there, or choose another --out")
    if previous.get("algorithm") != algorithm.name:
        raise RunExistsError(f"{path} holds a {previous.get('algorithm')} run, not "
                             f"{algorithm.name}; choose another --out or pass --overwrite")
    if not (path / CHECKPOINT_NAME).exists():
        return  # the earlier attempt died before its first checkpoint: start afresh
    if not resume:
        raise RunExistsError(f"{path} holds an unfinished {algorithm.name} run; pass --resume to "
                             "continue it, or --overwrite to start again")
    changed = sorted(key for key in record["config"]
                     if record["config"][key] != previous["config"].get(key)
                     and key not in algorithm.resumable_fields)
    if changed:
        raise ResumeMismatchError(f"the run in {path} was trained with other values of "
                                  f"{', '.join(changed)}; resume with the same config, or start "
                                  "a new run in another folder")
    if previous["seed"] != record["seed"]:
        raise ResumeMismatchError(f"the run in {path} was trained with seed {previous['seed']}, "
                                  f"not {record['seed']}; resume with --seed {previous['seed']}")
    if _identity(previous["dataset"]) != _identity(record["dataset"]):
        raise ResumeMismatchError(f"the run in {path} was trained on another dataset "
                                  f"({previous['dataset']['dataset_ids']}, "
                                  f"{previous['dataset']['episodes']} episodes); this one is "
                                  f"{record['dataset']['dataset_ids']}, "
                                  f"{record['dataset']['episodes']} episodes")
    if not same_device(previous.get("device", "cpu"), record["device"]):
        record["resumed_on"] = record["device"]
        record["device"] = previous["device"]


def _identity(fingerprint):
    """The parts of a dataset fingerprint that identify its data (not where it was fetched from)."""
    return {key: value for key, value in fingerprint.items() if key != "hub_commits"}


def _remove_run(path):
    """Delete the run in ``path`` (refusing folders that hold something else)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise RunExistsError(f"{path} is a file, not a run folder")
    if any(path.iterdir()):
        read_run_config(path)  # raises NotARunError for a folder that is not a run: never delete it
        shutil.rmtree(path)


def _write_json(path, value):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------- metrics


class MetricMeter:
    """Running means of metric values (tensors stay on their device until :meth:`flush`, so that
    logging costs one host sync per logged row, not one per update)."""

    def __init__(self):
        self.sums, self.count, self.start = {}, 0, time.perf_counter()

    def add(self, metrics):
        """Add one update's ``{name: value}``."""
        for key, value in (metrics or {}).items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def flush(self):
        """Means since the last flush, plus ``updates_per_second``; then start over."""
        # reading the values waits for the device, so the time includes all the queued work
        row = {key: value / self.count for key, value in _as_floats(self.sums).items()}
        elapsed = time.perf_counter() - self.start
        row["updates_per_second"] = self.count / elapsed if elapsed > 0 else math.nan
        self.sums, self.count, self.start = {}, 0, time.perf_counter()
        return row


def _as_floats(values):
    """``{name: float}`` of numbers and scalar tensors, reading the tensors of each device back in
    one transfer (one host sync per logged row, not one per metric)."""
    torch = sys.modules.get("torch")  # no torch imported: no tensors
    tensors = [key for key, value in values.items() if torch is not None and torch.is_tensor(value)]
    floats = {key: float(value) for key, value in values.items() if key not in tensors}
    by_device = {}
    for key in tensors:
        by_device.setdefault(values[key].device, []).append(key)
    for keys in by_device.values():
        numbers = torch.stack([values[key].detach().double().reshape(()) for key in keys]).tolist()
        floats.update(zip(keys, numbers))
    return {key: floats[key] for key in values}


class MetricsLog:
    """``phase,step,metric,value`` rows in a CSV file, each row flushed as it is written."""

    FIELDS = ("phase", "step", "metric", "value")

    def __init__(self, path):
        self.path = Path(path)

    def write(self, phase, step, values):
        """Append one row per ``metric: value`` of ``values``."""
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(self.FIELDS)
            for metric, value in values.items():
                writer.writerow((phase, int(step), metric, repr(float(value))))

    def truncate_after(self, position):
        """Keep the rows logged up to ``(phase, step)`` in the order phases were logged (``None``
        keeps none); later phases and ``eval`` rows go."""
        if not self.path.exists():
            return
        kept = []
        if position is not None:
            phase_order = list(dict.fromkeys(row["phase"] for row in read_metrics(self.path)))
            limit = (phase_order.index(position[0]) if position[0] in phase_order
                     else len(phase_order), position[1])
            kept = [row for row in read_metrics(self.path) if row["phase"] != "eval"
                    and (phase_order.index(row["phase"]), row["step"]) <= limit]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.FIELDS)
            for row in kept:
                writer.writerow((row["phase"], row["step"], row["metric"], repr(row["value"])))
        tmp.replace(self.path)


def read_metrics(path):
    """Rows of a ``metrics.csv`` (or of the one in run folder ``path``) as dicts with ``phase``,
    ``step`` (int), ``metric`` and ``value`` (float)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    with path.open(newline="") as handle:
        return [{"phase": row["phase"], "step": int(row["step"]), "metric": row["metric"],
                 "value": float(row["value"])} for row in csv.DictReader(handle)]


def metric_series(rows, phase, metric):
    """``(steps, values)`` arrays of one metric of one phase, from :func:`read_metrics` rows."""
    picked = [(row["step"], row["value"]) for row in rows
              if row["phase"] == phase and row["metric"] == metric]
    return (np.array([step for step, _ in picked], dtype=np.int64),
            np.array([value for _, value in picked], dtype=np.float64))


# ---------------------------------------------------------------------------------- RNG states


def rng_state(generators=()):
    """The global torch RNG states (CPU, and every CUDA device) and those of ``generators``
    (``torch.Generator`` or ``numpy.random.Generator``), as checkpoint-safe values."""
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": [state.cpu() for state in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available() else [],
        "generators": [_generator_state(generator) for generator in generators],
    }


def set_rng_state(state, generators=()):
    """Restore what :func:`rng_state` returned (states are moved to the CPU first, which is what
    ``set_rng_state`` accepts wherever the checkpoint was loaded)."""
    import torch

    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([item.cpu() for item in state["cuda"]])
    for generator, saved in zip(generators, state["generators"], strict=True):
        _set_generator_state(generator, saved)


def _generator_state(generator):
    if isinstance(generator, np.random.Generator):
        return {"numpy": json.dumps(generator.bit_generator.state)}
    return {"torch": generator.get_state()}


def _set_generator_state(generator, saved):
    if "numpy" in saved:
        generator.bit_generator.state = json.loads(saved["numpy"])
    else:
        generator.set_state(saved["torch"].cpu())
