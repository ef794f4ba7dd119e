"""GPU throughput of every installed algorithm at paper size: updates per second, peak memory, GPU
utilisation and host syncs per update, with float32 / bfloat16 and with / without ``torch.compile``,
and the projected hours of a paper-length run.

    python benchmarks/bench_gpu.py                                  # every algorithm, every variant
    python benchmarks/bench_gpu.py --algorithms semopo,bc --compile off --steps 50
    python benchmarks/bench_gpu.py --json > gpu.jsonl
    python benchmarks/bench_gpu.py --device cpu --quick             # every code path, tiny, on a CPU

On a machine without a CUDA GPU ``--device cuda`` (the default) says so and exits 0.

Each algorithm of ``lqv_d4rl.algorithms.names()`` trains through the platform exactly as
``lqv-d4rl train`` does (``Run.open`` + ``ALGORITHM.train``, the algorithm's own samplers, batch
streams and update functions) with its ``paper`` preset, on a synthetic in-memory dataset of paper
size (``--episodes`` x 501 entries of noise images, ten behaviour policies). The run folder is
a :class:`BenchRun`: in every training phase it makes ``--warmup`` untimed updates (the first one
timed alone: it holds the compilation), then ``--steps`` timed ones, logs their mean metrics and
``updates_per_second`` to ``metrics.csv`` like any run, and ends the phase, so the next phase of the
algorithm starts. Per phase:

* ``updates_per_second`` (from ``metrics.csv``): the timed updates, data loading included, once the
  device has finished them;
* ``peak_memory_gib`` (``metrics.csv``): ``torch.cuda.max_memory_allocated`` over the timed updates
  (reset after the warm-up; the dataset counts when it lives on the GPU); on a CPU the process's
  peak resident memory so far;
* ``gpu_utilisation`` (``metrics.csv``): mean of the GPU's utilisation counter (NVML through
  ``torch.cuda.utilization``, else ``nvidia-smi``) sampled every 0.1 s during the timed updates;
* ``first_update_s``: the first warm-up update (with ``torch.compile``: the compilation);
* ``host_syncs`` (GPU only): host syncs of one more update, counted by :mod:`lqv_d4rl.host_syncs`;
* ``projected_hours``: sum over phases of the preset's updates of that phase divided by its
  updates per second (evaluation and checkpoints not included).

``--compile on`` compiles, in place, the networks each phase's update uses (:func:`compile_networks`:
conv encoders and decoders, MLPs, GRU cells, prior heads); what runs around them (the RSSM's time
loop, distributions, losses, the optimizer) stays eager, as the algorithms' configs have no compile
switch of their own. ``--quick`` runs the ``smoke`` presets on a tiny dataset with 1 warm-up and 2 timed updates, and
compiles with the ``eager`` backend (traced, not code-generated), so a CPU runs every code path in
minutes.
"""

import argparse
import dataclasses
import functools
import gc
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from lqv_d4rl import algorithms
from lqv_d4rl.dataset import Dataset
from lqv_d4rl.host_syncs import count_host_syncs
from lqv_d4rl.runs import MetricMeter, Run, read_metrics
from lqv_d4rl.tasks import TASKS

PRECISIONS = ("float32", "bfloat16")
NOISE_FRAMES = 512  # distinct noise frames, tiled over the dataset
POLICIES = 10


# ---------------------------------------------------------------------------------- dataset


def synthetic_dataset(task="walker_walk", episodes=200, length=501, seed=0):
    """An in-memory :class:`lqv_d4rl.Dataset` of ``episodes`` noise episodes of ``length`` entries
    (200 x 501 is the size of a ``random`` or ``medium`` level: 1.2 GB of images), in ten behaviour
    policies of ascending return, with the task's action size."""
    rng = np.random.default_rng(seed)
    rows = episodes * length
    frames = rng.integers(0, 256, (NOISE_FRAMES, 64, 64, 3), dtype=np.uint8)
    is_first = np.zeros(rows, bool)
    is_first[::length] = True
    is_last = np.roll(is_first, -1)
    action = rng.uniform(-1, 1, (rows, TASKS[task].action_dim)).astype(np.float32)
    reward = rng.random(rows).astype(np.float32)
    action[is_first], reward[is_first] = 0.0, 0.0
    steps = {"image": frames[np.arange(rows) % NOISE_FRAMES], "action": action, "reward": reward,
             "discount": np.ones(rows, np.float32), "is_first": is_first, "is_last": is_last,
             "is_terminal": np.zeros(rows, bool)}
    policy = np.arange(episodes) * POLICIES // episodes
    dataset_id = f"{task}-synthetic"
    table = {
        "episode_starts": np.arange(episodes, dtype=np.int64) * length,
        "episode_lengths": np.full(episodes, length, np.int64),
        "returns": reward.reshape(episodes, length).sum(1, dtype=np.float64) + 10.0 * policy,
        "policy_ids": np.array([f"synthetic-{index:02d}" for index in policy]),
        "policy_steps": policy.astype(np.int64) * 10_000,
        "episode_seeds": np.arange(episodes, dtype=np.int64),
        "video_ids": _object_array([np.zeros(1, np.int32)] * episodes),
        "dataset_ids": np.array([dataset_id] * episodes),
    }
    metadata = {"dataset_id": dataset_id, "task": task, "level": "synthetic", "shards": []}
    return Dataset(steps, table, task=task, metadata=metadata)


def _object_array(items):
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


# ---------------------------------------------------------------------------------- the run


class BenchRun(Run):
    """A run folder whose :meth:`phase` times a few updates of each phase instead of training it.

    Set :attr:`warmup`, :attr:`steps` and :attr:`compile_backend` (``None``: eager) before
    calling the algorithm's ``train``; :attr:`phases` then lists ``{"phase", "total",
    "first_update_s", "host_syncs", ...}`` per phase, and ``metrics.csv`` holds the timed row.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.warmup, self.steps, self.compile_backend, self.phases = 1, 5, None, []

    def phase(self, name, *, total, done, update, checkpoint, description=None, **options):
        """Time ``update`` (see the class docstring); returns True so the next phase starts."""
        device = torch.device(self.device)
        record = {"phase": name, "total": int(total)}
        if self.compile_backend is not None:
            record["compiled_modules"] = compile_networks(update, self.compile_backend)
        started = time.perf_counter()
        for index in range(self.warmup):
            _wait_for(update(), device)
            if index == 0:
                record["first_update_s"] = time.perf_counter() - started
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        meter = MetricMeter()
        with UtilisationSampler(device) as utilisation:
            for _ in range(self.steps):
                meter.add(update())
            row = meter.flush()  # reads the values back: waits for the device
        row.update(utilisation.figures())
        row["peak_memory_gib"] = peak_memory_gib(device)
        self.log(name, done(), row)
        with count_host_syncs(device.type) as syncs:
            _wait_for(update(), device)
        if device.type != "cpu":  # on a CPU every read is a host read: no figure
            record["host_syncs"] = syncs.total
            record["host_sync_sites"] = [f"{kind} {where}" for (kind, where), _ in
                                         syncs.where.most_common(3)]
        self.phases.append(record)
        return True

    def save_checkpoint(self, state):
        """Benchmarks keep no checkpoints."""


PROJECT_PACKAGES = ("lqv_d4rl", "semopo", "baselines", "collectors")


def compile_networks(update, backend):
    """Compile, in place, the networks that ``update`` (a training loop's update function) works
    with (those compiled for an earlier phase stay so); returns how many of them are compiled.

    The modules are found among the objects the function refers to (closure variables and their
    attributes, a few levels deep). Compiled are the largest submodules that hold no network class of
    this project but themselves (a conv encoder, an MLP, a GRU cell, a prior head) and have a
    ``forward``: they take and return tensors, while the project's composite modules (heads that
    return distributions, the RSSM whose methods are called directly) run eagerly around them.
    """
    count = 0
    for root in _reachable_modules(update):
        for module in _compile_units(root):
            if getattr(module, "_compiled_call_impl", None) is None:
                module.compile(backend=backend)
            count += 1
    return count


def _reachable_modules(function, depth=3):
    found, seen = [], set()

    def visit(value, level):
        if id(value) in seen or level > depth or isinstance(value, (np.ndarray, torch.Tensor)):
            return
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            found.append(value)
            return
        if callable(value) and hasattr(value, "__closure__"):
            for cell in value.__closure__ or ():
                visit(cell.cell_contents, level + 1)
        if hasattr(value, "__self__"):
            visit(value.__self__, level + 1)
        if type(value).__module__.split(".")[0] in PROJECT_PACKAGES and hasattr(value, "__dict__"):
            for item in vars(value).values():
                visit(item, level + 1)
        elif isinstance(value, (list, tuple, dict)):
            for item in (value.values() if isinstance(value, dict) else value):
                visit(item, level + 1)

    visit(function, 0)
    return found


def _is_project_module(module):
    return type(module).__module__.split(".")[0] in PROJECT_PACKAGES


def _compile_units(module):
    inner = [m for m in module.modules() if m is not module and _is_project_module(m)]
    has_forward = type(module).forward is not torch.nn.Module.forward
    if not inner and has_forward and any(True for _ in module.parameters()):
        return [module]
    return [unit for child in module.children() for unit in _compile_units(child)]


def _wait_for(metrics, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return metrics


def peak_memory_gib(device):
    """Peak device memory allocated by tensors since the last reset (CUDA), else the process's
    peak resident memory (ru_maxrss), in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


class UtilisationSampler:
    """Mean GPU utilisation (percent of time a kernel ran) while the block runs, sampled every
    ``interval`` seconds with NVML (``torch.cuda.utilization``) or ``nvidia-smi``; no figure on a
    CPU or where neither works."""

    def __init__(self, device, interval=0.1):
        self.device, self.interval = device, interval
        self.samples, self._stop, self._thread = [], threading.Event(), None

    def __enter__(self):
        if self.device.type == "cuda":
            self._read = self._reader()
            if self._read is not None:
                self._thread = threading.Thread(target=self._poll, daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def figures(self):
        """``{"gpu_utilisation": percent}`` (empty without samples)."""
        return {"gpu_utilisation": float(np.mean(self.samples))} if self.samples else {}

    def _poll(self):
        while not self._stop.wait(self.interval):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def _reader(self):
        try:
            torch.cuda.utilization(self.device)
            return lambda: torch.cuda.utilization(self.device)
        except Exception:  # no pynvml: ask nvidia-smi
            pass
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        # the GPU by its UUID (right under CUDA_VISIBLE_DEVICES), else by torch's index
        for selector in ([f"GPU-{uuid}"] if uuid is not None else []) + [str(self.device.index or 0)]:
            read = functools.partial(_nvidia_smi, [*query, "-i", selector])
            if read() is not None:
                return read
        return None


def _nvidia_smi(command):
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------- measuring


def variants(algorithm, precisions, compile_modes):
    """``(precision, compiled)`` pairs to measure; precision None where the config has no
    ``precision`` field (it is then measured once per compile mode)."""
    has_precision = "precision" in {item.name for item in dataclasses.fields(algorithm.config_class)}
    return [(precision if has_precision else None, compiled)
            for precision in (precisions if has_precision else (None,))
            for compiled in compile_modes]


def measure(algorithm, dataset, *, preset, precision, compile_backend, device, warmup, steps,
            settings=(), seed=0):
    """Train ``algorithm`` through a :class:`BenchRun` and return one row per phase; ``settings``
    are ``--set``-style ``KEY=VALUE`` changes of the preset."""
    overrides = {"precision": precision} if precision else {}
    config = algorithm.config(preset, task=dataset.task, **overrides)
    config = algorithms.apply_settings(config, list(settings), algorithm.name)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-gpu-{algorithm.name}-"))
    try:
        run = BenchRun.open(folder, algorithm, config, dataset, seed=seed, device=str(device))
        run.warmup, run.steps, run.compile_backend = warmup, steps, compile_backend
        torch.manual_seed(seed)
        try:
            algorithm.train(dataset, config, run, str(device))
        finally:
            run.close()
        logged = {row["phase"]: {} for row in read_metrics(folder)}
        for row in read_metrics(folder):
            logged[row["phase"]][row["metric"]] = row["value"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for record in run.phases:
        metrics = logged.get(record["phase"], {})
        rows.append({**record, **{key: metrics.get(key) for key in (
            "updates_per_second", "peak_memory_gib", "gpu_utilisation")}})
    return rows


def projected_hours(rows):
    """Hours of a paper-length run: every phase's updates at its measured speed."""
    return sum(row["total"] / row["updates_per_second"] for row in rows) / 3600


# ---------------------------------------------------------------------------------- main


def release_memory(device):
    """Free what the last variant left: compiled graphs, and cached GPU memory."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_label(device):
    """The GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()})"


def parse_args(argv=None):
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated names (default: every installed algorithm)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="comma-separated precisions to measure (float32, bfloat16, float16)")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="both",
                        help="measure without torch.compile, with it, or both")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; eager with --quick)")
    parser.add_argument("--task", default="walker_walk", help="task of the synthetic dataset")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes of 501 entries (default 200, the size of a level)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed updates per phase")
    parser.add_argument("--steps", type=int, default=None, help="timed updates per phase")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config field of every algorithm (repeatable), e.g. "
                             "--set batch_size=16 to fit a smaller GPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke presets, tiny dataset, 1 + 2 updates: every code path, fast")
    parser.add_argument("--json", action="store_true", help="one JSON line per measured phase")
    return parser.parse_args(argv)


def main(argv=None):
    """Measure and print; returns the rows."""
    args = parse_args(argv)
    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 0):
        raise SystemExit("--steps must be at least 1 and --warmup at least 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA GPU here (torch {torch.__version__}): nothing to measure. Run this on a GPU "
              "machine, or `--device cpu --quick` to exercise the code.")
        return []
    torch.set_num_threads(args.threads)
    # one update holds several variants of a frame (with and without gradients, one per ensemble
    # head): let dynamo keep them all instead of falling back to eager after 8
    torch._dynamo.config.recompile_limit = 64
    quick = args.quick
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    steps = args.steps if args.steps is not None else (2 if quick else 20)
    backend = args.compile_backend or ("eager" if quick else "inductor")
    compile_modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    names = args.algorithms.split(",") if args.algorithms else algorithms.names()
    dataset = synthetic_dataset(args.task, episodes=args.episodes or (10 if quick else 200),
                                length=60 if quick else 501)
    label = device_label(device)
    print(f"{label}; dataset {len(dataset)} x {dataset.episode_lengths[0]} entries; "
          f"{'smoke' if quick else 'paper'} presets; {warmup} warm-up + {steps} timed updates "
          f"per phase", file=sys.stderr)
    results, baselines = [], {}
    for name in names:
        algorithm = algorithms.get(name)
        for precision, compiled in variants(algorithm, args.precisions.split(","), compile_modes):
            variant = {"algorithm": name, "precision": precision or "-",
                       "compile": backend if compiled else "off", "device": label}
            try:
                rows = measure(algorithm, dataset, preset="smoke" if quick else "paper",
                               precision=precision, compile_backend=backend if compiled else None,
                               device=device, warmup=warmup, steps=steps, settings=args.settings)
            except Exception as err:  # one failing variant does not stop the others
                rows = [{"phase": "-", "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}]
            release_memory(device)
            failed = "error" in rows[0]
            results.append({**variant, "phases": rows,
                            "projected_hours": None if failed else projected_hours(rows)})
            baseline = baselines.setdefault(name, None if failed else results[-1])
            if args.json:
                print(json.dumps(results[-1]))
            else:
                print_result(results[-1], baseline)
    return results


def print_result(result, baseline):
    """One block per measured variant; speeds relative to ``baseline`` (the algorithm's first
    variant, float32 without compile by default), measured in the same run."""
    hours = result["projected_hours"]
    print(f"{result['algorithm']} precision {result['precision']}, compile {result['compile']}: "
          + (f"projected run {hours:.2f} h" if hours is not None else "failed"))
    base = {row["phase"]: row for row in baseline["phases"]} if baseline else {}
    for row in result["phases"]:
        if "error" in row:
            print(f"  {row['error']}")
            continue
        speed = row["updates_per_second"]
        ratio = (f" ({speed / base[row['phase']]['updates_per_second']:.2f}x the first variant)"
                 if row["phase"] in base and baseline is not result else "")
        utilisation = row.get("gpu_utilisation")
        syncs = row.get("host_syncs")
        first = row.get("first_update_s")
        print(f"  {row['phase']:<8} {speed:8.2f} updates/s{ratio} x {row['total']} updates; first "
              f"update {'n/a' if first is None else f'{first:.2f} s'}; peak memory "
              f"{row['peak_memory_gib']:.2f} "
              f"GiB; GPU {'n/a' if utilisation is None else f'{utilisation:.0f} %'}; host "
              f"syncs/update {'n/a' if syncs is None else syncs}"
              + (f"; {row['compiled_modules']} modules compiled" if "compiled_modules" in row else ""))


if __name__ == "__main__":
    main()
