"""Leaderboard throughput: per-update times of every installed method, runs per hour with K runs
sharing a device, and the projected cost of the paper's whole Table 1 grid (7 methods x 15 datasets
x 4 seeds = 420 runs).

    python benchmarks/bench_leaderboard.py --root /tmp/lqv-smoke                 # CPU
    python benchmarks/bench_leaderboard.py --root R --device cuda --ks 1,2,4,8   # a GPU machine

1. **Per-update times.** Each method trains through the platform (``Run.phase``) with its
   ``paper`` preset on ``--dataset``; in every training phase one warm-up update is followed by
   ``--updates`` timed ones (the phase is then cut short), and the FLOPs of one update are counted
   with ``torch.utils.flop_counter``. On a CPU the batch is ``--batch-fraction`` of the paper's
   (default 1/8: a paper-size world-model update holds 10-15 GB of activations) and times are
   scaled up by its inverse (compute grows linearly with the batch: an assumption, stated in the
   output). Evaluation cost: agent steps per second of the method's policy in the dataset's
   environment. A run = sum over phases of (updates x seconds per update) + 10 episodes x 500 steps.
2. **K runs at once** (``--ks``): K processes train the first method's first phase side by side on
   the device; their mean seconds per update against K = 1, measured in the same run, gives the
   slowdown and runs per hour = K x 3600 / (run time x slowdown). On CUDA, ``nvidia-smi`` samples
   GPU utilisation and memory meanwhile. On a CPU the same measurement shows what worker
   processes gain there.
3. **Projection** of the 420-run grid: device-hours per method from step 1 (the walker_walk time
   for every dataset), and, when measured on a CPU, an estimate of H100 hours from the counted
   FLOPs at an assumed achieved throughput (``--assumed-tflops``; stated, not measured).

Methods that fail (e.g. still being written) are reported and skipped.
"""

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from lqv_d4rl import algorithms
from lqv_d4rl.runs import Run

PAPER_GRID = {"methods": 7, "datasets": 15, "seeds": 4}
EPISODE_STEPS = 500
EVAL_EPISODES = 10


def synchronize(device):
    """Wait for queued CUDA work (no-op on CPU), so that timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def paper_config(algorithm, task, batch_fraction):
    """The paper config, its batch cut to ``batch_fraction`` (returns config and the fraction used)."""
    config = algorithm.config("paper", task=task)
    batch = getattr(config, "batch_size", None)
    if batch_fraction >= 1 or batch is None:
        return config, 1.0
    smaller = max(1, round(batch * batch_fraction))
    return algorithm.config("paper", task=task, batch_size=smaller), smaller / batch


class PhaseTimer:
    """Stands in for ``Run.phase``: times a few updates of each phase, then moves on."""

    def __init__(self, device, updates, fraction, only_first=False):
        self.device, self.updates, self.fraction = device, updates, fraction
        self.only_first = only_first
        self.phases = []

    def __call__(self, run, name, *, total, done, update, checkpoint, **_):
        from torch.utils.flop_counter import FlopCounterMode

        if self.only_first and self.phases:
            return False
        update()  # warm-up (lazy initialisation, allocator)
        synchronize(self.device)
        counter = FlopCounterMode(display=False)
        with counter:
            update()
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(self.updates):
            update()
        synchronize(self.device)
        seconds = (time.perf_counter() - started) / self.updates
        self.phases.append({"phase": name, "updates": int(total),
                            "seconds_per_update": seconds / self.fraction,
                            "flops_per_update": counter.get_total_flops() / self.fraction})
        checkpoint()
        return not self.only_first


def train_timed(name, data, device, folder, updates, batch_fraction, only_first=False):
    """Run ``name``'s training with :class:`PhaseTimer` in place of ``Run.phase``."""
    algorithm = algorithms.get(name)
    config, fraction = paper_config(algorithm, data.task, batch_fraction)
    timer = PhaseTimer(device, updates, fraction, only_first)
    original = Run.phase
    Run.phase = lambda run, phase, **kwargs: timer(run, phase, **kwargs)
    try:
        torch.manual_seed(0)
        run = Run.open(folder, algorithm, config, data, seed=0, device=device, overwrite=True)
        algorithm.train(data, config, run, device)
        run.close()
    finally:
        Run.phase = original
    return algorithm, config, fraction, timer.phases


def measure_method(name, data, device, updates, batch_fraction, eval_steps, scratch):
    """Per-update times, FLOPs and evaluation speed of one method; the seconds of a full run."""
    from lqv_d4rl.evaluation import make_eval_env, play_episode

    folder = Path(scratch) / name
    algorithm, config, fraction, phases = train_timed(name, data, device, folder, updates,
                                                      batch_fraction)
    policy = algorithm.load(folder, device=device)
    env = make_eval_env(data.eval_env_kwargs(), seed=0)
    try:
        play_episode(policy, env, seed=0, max_steps=5)  # warm-up: renderer, policy buffers
        started = time.perf_counter()
        _, steps = play_episode(policy, env, seed=1, max_steps=eval_steps)
        step_seconds = (time.perf_counter() - started) / max(1, steps)
    finally:
        env.close()
    train_seconds = sum(p["updates"] * p["seconds_per_update"] for p in phases)
    eval_seconds = EVAL_EPISODES * EPISODE_STEPS * step_seconds
    return {"method": name, "batch_fraction": fraction, "phases": phases,
            "eval_step_seconds": step_seconds, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "run_seconds": train_seconds + eval_seconds,
            "flops_per_run": sum(p["updates"] * p["flops_per_update"] for p in phases)}


# ---------------------------------------------------------------------------------- K at once


def _concurrent_worker(name, root, dataset, device, updates, batch_fraction, threads, scratch,
                       start, queue):
    torch.set_num_threads(threads)
    from lqv_d4rl.dataset import load_dataset

    data = load_dataset(dataset, root=root)
    start.wait()
    _, _, _, phases = train_timed(name, data, device, scratch, updates, batch_fraction,
                                  only_first=True)
    queue.put(phases[0]["seconds_per_update"])


def gpu_sampler(stop, samples):
    """Append (utilisation %, memory MiB) of GPU 0 from nvidia-smi every 0.5 s until ``stop``."""
    while not stop.is_set():
        try:
            line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                   "--format=csv,noheader,nounits", "-i", "0"], check=True,
                                  capture_output=True, text=True, timeout=5).stdout
            utilisation, memory = (float(value) for value in line.split(",")[:2])
            samples.append((utilisation, memory))
        except (OSError, subprocess.SubprocessError, ValueError):
            return
        stop.wait(0.5)


def measure_concurrency(name, root, dataset, device, ks, updates, batch_fraction, threads,
                        scratch):
    """Mean seconds per update of ``name``'s first phase with K processes at once, for each K."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for k in ks:
        queue, start = context.Queue(), context.Event()
        workers = [context.Process(target=_concurrent_worker, args=(
            name, root, dataset, device, updates, batch_fraction, threads,
            str(Path(scratch) / f"k{k}-{index}"), start, queue)) for index in range(k)]
        for worker in workers:
            worker.start()
        samples, stop = [], threading.Event()
        sampler = threading.Thread(target=gpu_sampler, args=(stop, samples), daemon=True)
        if device.startswith("cuda"):
            sampler.start()
        time.sleep(2.0)  # let every worker load the dataset before the start signal
        start.set()
        seconds = [queue.get(timeout=3600) for _ in workers]
        stop.set()
        for worker in workers:
            worker.join()
        rows.append({"k": k, "seconds_per_update": sum(seconds) / k,
                     "gpu_utilisation": (sum(s[0] for s in samples) / len(samples)
                                         if samples else None),
                     "gpu_memory_mib": max((s[1] for s in samples), default=None)})
    return rows


# ---------------------------------------------------------------------------------- report


def print_methods(rows, device):
    print(f"\nPer-update times on {device} (paper presets; phases: updates x seconds):")
    for row in rows:
        if "error" in row:
            print(f"  {row['method']:12s} failed: {row['error']}")
            continue
        phases = ", ".join(f"{p['phase']} {p['updates']:,} x {p['seconds_per_update']:.3f} s "
                           f"({p['flops_per_update'] / 1e9:.0f} GFLOP)" for p in row["phases"])
        scaled = "" if row["batch_fraction"] >= 1 else \
            f" [measured at {row['batch_fraction']:.3g} of the batch, scaled]"
        print(f"  {row['method']:12s} {phases}; eval {1 / row['eval_step_seconds']:.0f} steps/s"
              f" -> one run {row['run_seconds'] / 3600:.1f} h{scaled}")


def print_concurrency(rows, run_seconds, device):
    base = rows[0]["seconds_per_update"]
    print(f"\nK runs at once on {device} (baseline K = {rows[0]['k']} in the same run):")
    print("   K  s/update  slowdown  runs/hour  GPU util  GPU MiB")
    for row in rows:
        slowdown = row["seconds_per_update"] / base
        runs_per_hour = row["k"] * 3600 / (run_seconds * slowdown)
        util = "n/a" if row["gpu_utilisation"] is None else f"{row['gpu_utilisation']:.0f}%"
        memory = "n/a" if row["gpu_memory_mib"] is None else f"{row['gpu_memory_mib']:.0f}"
        print(f"  {row['k']:2d}  {row['seconds_per_update']:8.3f}  {slowdown:8.2f}  "
              f"{runs_per_hour:9.3f}  {util:>8s}  {memory:>7s}")


def print_projection(rows, device, assumed_tflops):
    measured = [row for row in rows if "error" not in row]
    runs_per_method = PAPER_GRID["datasets"] * PAPER_GRID["seeds"]
    installed = {row["method"] for row in measured}
    print(f"\nProjected Table 1 grid ({PAPER_GRID['methods']} methods x {PAPER_GRID['datasets']} "
          f"datasets x {PAPER_GRID['seeds']} seeds; walker_walk times for every dataset):")
    total_hours, total_flops = 0.0, 0.0
    for row in measured:
        hours = runs_per_method * row["run_seconds"] / 3600
        train_hours = runs_per_method * row["train_seconds"] / 3600
        total_hours += hours
        total_flops += runs_per_method * row["flops_per_run"]
        print(f"  {row['method']:12s} {runs_per_method} runs: {hours:10.1f} {device}-hours "
              f"({train_hours:.1f} training, the rest evaluation)")
    missing = [name for name in algorithms.BUILTIN if name not in installed]
    if missing:
        print(f"  not measured (not installed or failed): {', '.join(missing)}")
    print(f"  total measured: {total_hours:.1f} {device}-hours")
    if not device.startswith("cuda"):
        for tflops in assumed_tflops:
            hours = total_flops / (tflops * 1e12) / 3600
            print(f"  estimate, not a measurement: {total_flops / 1e15:.0f} PFLOP of training at an "
                  f"assumed {tflops:g} TFLOP/s achieved on an H100 = {hours:.0f} GPU-hours "
                  "(+ evaluation on CPU cores)")
    print("  target: the whole grid in one H100 day (24 GPU-hours); the paper: ~1,000 RTX 3090 hours")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="Dataset root holding --dataset.")
    parser.add_argument("--dataset", default="walker_walk-medrep")
    parser.add_argument("--methods", default=None, help="Comma-separated (default: all installed).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--updates", type=int, default=2, help="Timed updates per phase.")
    parser.add_argument("--batch-fraction", type=float, default=None,
                        help="Share of the paper batch (default: 1 on CUDA, 1/8 on CPU).")
    parser.add_argument("--eval-steps", type=int, default=50, help="Agent steps timed in eval.")
    parser.add_argument("--ks", default=None,
                        help="Runs at once to compare (default: 1,2,4,8 on CUDA, 1,2 on CPU).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process.")
    parser.add_argument("--assumed-tflops", default="15,50",
                        help="Achieved H100 TFLOP/s for the CPU-only estimate (comma-separated).")
    parser.add_argument("--json", default=None, help="Also write the results to this file.")
    args = parser.parse_args()

    from lqv_d4rl.dataset import load_dataset

    cuda = args.device.startswith("cuda")
    torch.set_num_threads(args.threads)
    batch_fraction = args.batch_fraction or (1.0 if cuda else 1 / 8)
    ks = [int(k) for k in (args.ks or ("1,2,4,8" if cuda else "1,2")).split(",")]
    names = args.methods.split(",") if args.methods else algorithms.names()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s) per process; device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    if not cuda:
        print("no CUDA device here: GPU runs per hour and GPU utilisation at K = 1, 2, 4, 8 "
              "cannot be measured; per-update times are CPU times and the GPU-hours below are "
              "estimates from counted FLOPs")
    data = load_dataset(args.dataset, root=args.root)
    scratch = tempfile.mkdtemp(prefix="lqv-bench-leaderboard-")
    rows = []
    try:
        for name in names:
            started = time.perf_counter()
            try:
                rows.append(measure_method(name, data, args.device, args.updates, batch_fraction,
                                           args.eval_steps, scratch))
            except Exception as err:  # noqa: BLE001  (a method still being written: report, go on)
                rows.append({"method": name, "error": f"{type(err).__name__}: {err}"[:200]})
            print(f"  measured {name} in {time.perf_counter() - started:.0f} s", flush=True)
        print_methods(rows, args.device)
        measured = [row for row in rows if "error" not in row]
        concurrency = []
        if measured and len(ks) > 1:
            first = measured[0]
            concurrency = measure_concurrency(first["method"], args.root, args.dataset,
                                              args.device, ks, args.updates, batch_fraction,
                                              args.threads, scratch)
            print_concurrency(concurrency, first["run_seconds"], f"{args.device} "
                              f"({first['method']}, first phase)")
        print_projection(rows, args.device,
                         [float(value) for value in args.assumed_tflops.split(",")])
        if args.json:
            Path(args.json).write_text(json.dumps({"methods": rows, "concurrency": concurrency},
                                                  indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
