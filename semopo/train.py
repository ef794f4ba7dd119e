"""Training SeMOPO on an offline dataset: ``model_steps`` world-model updates, then ``policy_steps``
actor-critic updates, with a metrics log and checkpoints that resume.

Files in ``log_dir`` (all optional; without ``log_dir`` nothing is written):

* ``config.json`` - the run's config, seed and dataset;
* ``metrics.csv`` - one row per logged value: ``phase,step,metric,value`` (phase ``model``,
  ``policy`` or ``eval``; values are means over the ``log_every`` updates up to ``step``);
* ``checkpoint.pt`` - agent, optimizers, sampler and RNG states, written atomically every
  ``checkpoint_every`` updates and at the end of each phase. ``resume=True`` continues from it and
  gives the same result as an uninterrupted run on CPU.
"""

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lqv_d4rl.errors import LQVError
from lqv_d4rl.samplers import make_sequence_sampler

from .agent import SeMOPOAgent
from .config import ConfigError, SeMOPOConfig

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "config.json"
PHASES = ("model", "policy", "eval")
# Fields that may differ when a run is resumed: they do not change what has been trained so far.
RESUMABLE_CHANGES = ("policy_steps", "log_every", "checkpoint_every", "eval_episodes",
                     "eval_max_steps", "extra")


class RunExistsError(LQVError, FileExistsError):
    """``log_dir`` already holds a checkpoint and ``resume`` was not asked for."""


class ResumeMismatchError(LQVError, ValueError):
    """The checkpoint in ``log_dir`` belongs to a different config, seed or dataset."""


def train(dataset, config=None, *, device="cpu", seed=0, log_dir=None, resume=False,
          progress=False, root=None, stop_after=None):
    """Train SeMOPO on ``dataset`` and return the :class:`SeMOPOAgent`.

    Args:
        dataset: a ``lqv_d4rl.Dataset``, or a dataset id / folder for ``lqv_d4rl.load_dataset``.
        config: a :class:`SeMOPOConfig` (default: the paper's settings).
        device: torch device for the networks (``"cuda"`` for full-size runs).
        seed: seeds parameter initialization, the samplers, the ensemble-head draws and latent samples.
        log_dir: folder for ``metrics.csv``, ``config.json`` and ``checkpoint.pt`` (None: no files).
        resume: continue from ``log_dir/checkpoint.pt`` if there is one (else start afresh).
        progress: show tqdm progress bars.
        root: dataset root used when ``dataset`` is an id.
        stop_after: stop after this many updates (both phases counted) in this call, writing a
            checkpoint: for runs split over several sessions; continue with ``resume=True``.
    """
    config = config or SeMOPOConfig()
    dataset = _as_dataset(dataset, root)
    run = _Run(dataset, config, device=device, seed=seed, log_dir=log_dir, resume=resume,
               progress=progress, stop_after=stop_after)
    run.train_model()
    run.train_policy()
    return run.agent


def _as_dataset(dataset, root):
    if hasattr(dataset, "episode_lengths"):
        return dataset
    from lqv_d4rl.dataset import load_dataset

    return load_dataset(dataset, root=root)


def dataset_fingerprint(dataset):
    """What identifies a dataset for resuming: ids, episode count, steps, returns checksum."""
    return {
        "task": str(dataset.task),
        "dataset_ids": sorted(set(map(str, dataset.dataset_ids))),
        "episodes": len(dataset),
        "steps": int(dataset.num_steps),
        "return_sum": round(float(np.sum(dataset.returns)), 6),
    }


class _Run:
    """One training run: the agent, its two samplers, the log and the checkpoint."""

    def __init__(self, dataset, config, *, device, seed, log_dir, resume, progress, stop_after):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.config, self.seed, self.progress = config, int(seed), progress
        self.updates_left = math.inf if stop_after is None else int(stop_after)
        self.fingerprint = dataset_fingerprint(dataset)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        torch.manual_seed(self.seed)
        self.agent = SeMOPOAgent(dataset.action_dim, config, task=dataset.task, device=device,
                                 seed=self.seed)
        model_seed, policy_seed = np.random.SeedSequence(self.seed).generate_state(2)
        self.model_sampler = make_sampler(dataset, config.sampling, config, model_seed)
        self.policy_sampler = make_sampler(dataset, config.policy_sampling, config, policy_seed)
        self.log = MetricsLog(self.log_dir / METRICS_NAME if self.log_dir else None)
        if self.log_dir is not None:
            self._open_log_dir(resume)

    # ----------------------------------------------------------------------------- phases

    def train_model(self):
        """World-model updates until ``config.model_steps``."""
        self._phase("model", self.model_sampler, self.agent.train_model_step,
                    lambda: self.agent.model_updates, self.config.model_steps, "world model")

    def train_policy(self):
        """Actor-critic updates until ``config.policy_steps``."""
        self._phase("policy", self.policy_sampler, self.agent.train_policy_step,
                    lambda: self.agent.policy_updates, self.config.policy_steps, "policy")

    def _phase(self, phase, sampler, update, done, total, description):
        from tqdm.auto import tqdm

        if done() >= total:
            return
        bar = tqdm(total=total, initial=done(), desc=description, disable=not self.progress,
                   dynamic_ncols=True)
        meter = _Meter()
        while done() < total and self.updates_left > 0:
            meter.add(update(sampler.sample()))
            self.updates_left -= 1
            step = done()
            bar.update(1)
            if step % self.config.log_every == 0 or step == total:
                row = meter.flush()
                self.log.write(phase, step, row)
                bar.set_postfix(_postfix(phase, row), refresh=False)
            if step % self.config.checkpoint_every == 0 or step == total or self.updates_left == 0:
                self.save_checkpoint()
        bar.close()

    # ----------------------------------------------------------------------------- files

    def _open_log_dir(self, resume):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self.log_dir / CHECKPOINT_NAME
        if checkpoint.exists() and not resume:
            raise RunExistsError(
                f"{self.log_dir} already holds a SeMOPO run ({CHECKPOINT_NAME}); pass resume=True "
                "(CLI: --resume) to continue it, or choose another output folder"
            )
        if checkpoint.exists():
            self._load_checkpoint(checkpoint)
        else:
            self.log.truncate_after(None)
        config_file = self.log_dir / CONFIG_NAME
        config_file.write_text(json.dumps(
            {"config": self.config.to_dict(), "seed": self.seed, "dataset": self.fingerprint},
            indent=2) + "\n")

    def save_checkpoint(self):
        """Write ``checkpoint.pt`` (no-op without a log_dir)."""
        if self.log_dir is None:
            return
        state = {
            "agent": self.agent.state_dict(),
            "seed": self.seed,
            "dataset": self.fingerprint,
            "samplers": {"model": _sampler_state(self.model_sampler),
                         "policy": _sampler_state(self.policy_sampler)},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        path = self.log_dir / CHECKPOINT_NAME
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _load_checkpoint(self, path):
        state = torch.load(path, map_location=self.agent.device, weights_only=False)
        self._check_resumable(state)
        self.agent.load_state_dict(state["agent"])
        _set_sampler_state(self.model_sampler, state["samplers"]["model"])
        _set_sampler_state(self.policy_sampler, state["samplers"]["policy"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.log.truncate_after(("policy", self.agent.policy_updates) if self.agent.policy_updates
                                else ("model", self.agent.model_updates))

    def _check_resumable(self, state):
        stored = SeMOPOConfig.from_dict(state["agent"]["config"]).to_dict()
        given = self.config.to_dict()
        changed = sorted(key for key in given
                         if given[key] != stored[key] and key not in RESUMABLE_CHANGES)
        if changed:
            raise ResumeMismatchError(
                f"the checkpoint in {self.log_dir} was trained with other values of {changed}; "
                "resume with the same config, or start a new run in another folder"
            )
        if state["seed"] != self.seed:
            raise ResumeMismatchError(f"the checkpoint was trained with seed {state['seed']}, "
                                      f"not {self.seed}; resume with --seed {state['seed']}")
        if state["dataset"] != self.fingerprint:
            raise ResumeMismatchError(
                f"the checkpoint was trained on another dataset ({state['dataset']}); this one is "
                f"{self.fingerprint}"
            )


def make_sampler(dataset, mode, config, seed, **options):
    """A sequence sampler of ``mode`` with the config's batch shape and curriculum settings
    (``options`` such as ``recycle`` go to ``lqv_d4rl.samplers.make_sequence_sampler``)."""
    if mode in ("conservative", "return_curriculum"):
        options["curriculum_steps"] = config.effective_curriculum_steps
    if mode == "return_curriculum":
        options["replicate_off_by_one"] = config.replicate_off_by_one
    return make_sequence_sampler(dataset, mode, batch_size=config.batch_size,
                                 seq_len=config.seq_len, seed=int(seed), **options)


def _sampler_state(sampler):
    return {"step": sampler.step, "rng": sampler.rng.bit_generator.state}


def _set_sampler_state(sampler, state):
    sampler.set_step(int(state["step"]))
    sampler.rng.bit_generator.state = state["rng"]


def _postfix(phase, row):
    keys = ("model_loss", "image_log_prob") if phase == "model" else ("imagined_return", "penalty")
    return {key: f"{row[key]:.3g}" for key in keys if key in row}


class _Meter:
    """Running means of metric tensors, converted to floats only when flushed."""

    def __init__(self):
        self.sums, self.count, self.start = {}, 0, time.perf_counter()

    def add(self, metrics):
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def flush(self):
        elapsed = time.perf_counter() - self.start
        row = {key: float(value) / self.count for key, value in self.sums.items()}
        row["updates_per_second"] = self.count / elapsed if elapsed > 0 else math.nan
        self.sums, self.count, self.start = {}, 0, time.perf_counter()
        return row


class MetricsLog:
    """Appends ``phase,step,metric,value`` rows to a CSV file (or nothing, with ``path=None``).

    Every row is flushed to disk at once, so a crash loses nothing logged before it.
    """

    FIELDS = ("phase", "step", "metric", "value")

    def __init__(self, path):
        self.path = Path(path) if path is not None else None

    def write(self, phase, step, values):
        """Append one row per ``metric: value`` of ``values``."""
        if self.path is None:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(self.FIELDS)
            for metric, value in values.items():
                writer.writerow((phase, int(step), metric, repr(float(value))))

    def truncate_after(self, position):
        """Drop rows logged after ``(phase, step)`` (the checkpoint a resumed run restarts from);
        ``None`` drops every row (a fresh run in a folder with a stale log)."""
        if self.path is None or not self.path.exists():
            return
        rows = read_metrics(self.path) if position is not None else []
        if position is not None:
            limit = (PHASES.index(position[0]), position[1])
            rows = [row for row in rows if (PHASES.index(row["phase"]), row["step"]) <= limit
                    and row["phase"] != "eval"]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.FIELDS)
            for row in rows:
                writer.writerow((row["phase"], row["step"], row["metric"], repr(row["value"])))
        tmp.replace(self.path)


def read_metrics(path):
    """The rows of a ``metrics.csv`` as dicts with ``phase``, ``step`` (int), ``metric``, ``value`` (float)."""
    with Path(path).open(newline="") as handle:
        return [{"phase": row["phase"], "step": int(row["step"]), "metric": row["metric"],
                 "value": float(row["value"])} for row in csv.DictReader(handle)]


def metric_series(rows, phase, metric):
    """``(steps, values)`` arrays of one metric of one phase, from :func:`read_metrics` rows."""
    picked = [(row["step"], row["value"]) for row in rows
              if row["phase"] == phase and row["metric"] == metric]
    steps = np.array([step for step, _ in picked], dtype=np.int64)
    return steps, np.array([value for _, value in picked], dtype=np.float64)
