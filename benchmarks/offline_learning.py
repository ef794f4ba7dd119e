"""Offline learning checks on real-size datasets, on a CPU: does each algorithm learn from the data?

A check trains one algorithm on one dataset through the platform (``lqv_d4rl.experiment``, the
code path of ``lqv-d4rl train``) in chunks of ``--eval-every`` updates, evaluates the policy in the
dataset's own environment after every chunk, and stops when training has used ``--cpu-budget``
CPU seconds (its own process, one torch thread, evaluation not counted). It prints the curve,
writes ``<out>/offline-<algorithm>-<dataset>[-<variant>]-seed<S>.json`` (the fields of the other
learning checks: ``evaluations``, ``best_return``, ``threshold``, ``random_return``, plus the
command and the commit) and a ``.png`` of the curve, and exits with status 1 when the best
evaluation return stays below the threshold.

Checks (``CHECKS``): the model-free baselines on pixels with their ``paper`` networks (``bc``,
``drq_bc``, ``drq_cql``, ``infogating``; threshold: half the dataset's mean return), and the
model-based ones on the stored states (``offline_dv2``, ``lompo``, ``semopo`` with
``observation=state`` and a schedule that fits the budget; threshold: twice the mean return of
the task's random level). Usage::

    python benchmarks/offline_learning.py bc walker_walk-medium --root R
    python benchmarks/offline_learning.py semopo walker_walk-medrep --root R --observation state
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import lqv_d4rl  # noqa: F401  (pins the CPU kernels before torch starts)
from run_info import git_commit

MODEL_FREE = ("bc", "drq_bc", "drq_cql", "infogating")
MODEL_BASED = ("offline_dv2", "lompo", "semopo")

_SMALL_STATE_MODEL = {"batch_size": 32, "seq_len": 32, "deter": 128, "hidden": 128,
                     "units": 200, "state_units": 200, "state_layers": 2, "model_steps": 3000,
                     "policy_steps": 1_000_000}
STATE_SCHEDULES = {
    # The paper's sizes and 25k model + 100k policy updates do not fit 1,800 CPU seconds (a
    # paper-size SeMOPO update on states takes seconds); smaller networks, 3,000 model updates on
    # batches of 32 x 32 (Offline DV2: ~480 CPU s on one thread, walker_walk-medium's state
    # log-likelihood -25.9 after them against -32.4 after 1,000 on 16 x 32), and a policy phase
    # that the budget ends. Everything else (ensemble of 7 prior heads, penalty, horizon,
    # learning rates) stays the paper's.
    "offline_dv2": {**_SMALL_STATE_MODEL, "stoch": 16, "classes": 16},
    # SeMOPO trains two branches: its model update costs about twice Offline DV2's, so its
    # batches are half as many sequences (the same CPU seconds for its 3,000 model updates)
    "semopo": {**_SMALL_STATE_MODEL, "stoch": 16, "classes": 16, "batch_size": 16},
    "lompo": {**_SMALL_STATE_MODEL, "stoch": 16},
}
"""Config overrides of the model-based checks on states (the budget ends the policy phase)."""


def check_name(algorithm, dataset_id, variant, seed):
    """``offline-<algorithm>-<dataset>[-<variant>]-seed<S>``."""
    parts = ["offline", algorithm, Path(str(dataset_id)).name] + ([variant] if variant else [])
    return "-".join(parts) + f"-seed{seed}"


def overrides_for(algorithm, observation, extra):
    """The config overrides of a check: the state schedule for a model-based algorithm on
    states, then ``--set`` style ``extra`` (a dict)."""
    overrides = {}
    if observation == "state":
        overrides.update(STATE_SCHEDULES.get(algorithm, {}), observation="state")
    overrides.update(extra)
    return overrides


def random_level_return(task, root):
    """Mean return of the task's random level (None when it is not on disk)."""
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.errors import DatasetNotFoundError

    try:
        data = load_dataset(f"{task}-random", root=root, lazy=True)
    except DatasetNotFoundError:
        return None
    value = float(data.returns.mean())
    data.close()
    return value


def threshold_for(algorithm, dataset_mean, random_return):
    """Half the dataset's mean return for the model-free baselines (behaviour cloning's bar);
    twice the random level's mean for the model-based ones (clearly not random)."""
    if algorithm in MODEL_FREE:
        return 0.5 * dataset_mean
    return 2.0 * random_return if random_return is not None else math.nan


def train_chunk(args, out, overrides, resume):
    """Train ``args.eval_every`` more updates; (CPU seconds spent, finished?)."""
    from lqv_d4rl.experiment import run_experiment

    start = time.process_time()
    result = run_experiment(args.algorithm, args.dataset, preset=args.preset,
                            overrides=overrides, out=out, seed=args.seed, root=args.root,
                            resume=resume, stop_after=args.eval_every, analyse=False,
                            eval_episodes=args.eval_episodes, progress=False,
                            echo=lambda message: None)
    return time.process_time() - start, result is not None


def evaluate_now(args, out):
    """Evaluate the run's current checkpoint (``eval_episodes`` episodes of the dataset's own
    environment, the platform's evaluation seeds) without writing ``eval.json``, which would mark
    the run finished."""
    from lqv_d4rl import algorithms
    from lqv_d4rl.evaluation import evaluate
    from lqv_d4rl.experiment import eval_seed
    from lqv_d4rl.runs import read_run_config

    record = read_run_config(out)
    policy = algorithms.get(record["algorithm"]).load(out)
    return evaluate(policy, record["eval_env"], args.eval_episodes,
                    first_episode_seed=eval_seed(args.seed))


def updates_done(out):
    """Updates trained so far (the last row of each phase in metrics.csv)."""
    from lqv_d4rl.runs import read_metrics

    rows = read_metrics(Path(out) / "metrics.csv")
    return sum(max((row["step"] for row in rows if row["phase"] == phase), default=0)
               for phase in {row["phase"] for row in rows if row["phase"] != "eval"})


def run_check(args):
    """Train and evaluate in chunks until the budget is spent; the summary dict."""
    from lqv_d4rl.dataset import load_dataset

    data = load_dataset(args.dataset, root=args.root, lazy=True)
    task, dataset_mean = data.task, float(data.returns.mean())
    data.close()
    overrides = overrides_for(args.algorithm, args.observation, json.loads(args.set))
    # metrics.csv rows (which count the updates done) must fall on the chunks' ends
    overrides.setdefault("log_every", math.gcd(args.eval_every, 100))
    name = check_name(args.algorithm, args.dataset, args.variant, args.seed)
    out = Path(args.work_dir) / name
    progress = out / "offline-check.json"  # the curve so far: an interrupted check resumes
    resume = (out / "config.json").is_file()
    done = json.loads(progress.read_text()) if resume and progress.is_file() else {}
    cpu_spent, evaluations = done.get("cpu_s", 0.0), done.get("evaluations", [])
    started, wall_before = time.perf_counter(), done.get("wall_s", 0.0)
    finished = done.get("finished", False)
    while cpu_spent < args.cpu_budget and not finished:
        seconds, finished = train_chunk(args, out, overrides, resume)
        cpu_spent += seconds
        resume = True
        result = evaluate_now(args, out)
        wall = wall_before + time.perf_counter() - started
        evaluations.append({"updates": updates_done(out), "cpu_s": cpu_spent, "wall_s": wall,
                            "returns": result["returns"], "mean_return": result["mean_return"],
                            "normalized_score": result["normalized_score"]})
        progress.write_text(json.dumps({"cpu_s": cpu_spent, "wall_s": wall,
                                        "finished": finished, "evaluations": evaluations}))
        print(f"{evaluations[-1]['updates']:7d} updates  {cpu_spent:7.0f} CPU s  return "
              f"{result['mean_return']:7.1f}", flush=True)
    random_return = random_level_return(task, args.root)
    return {
        "check": name, "algorithm": args.algorithm, "dataset": str(args.dataset), "task": task,
        "observation": args.observation, "variant": args.variant, "seed": args.seed,
        "preset": args.preset, "overrides": overrides, "cpu_budget_s": args.cpu_budget,
        "dataset_mean_return": dataset_mean, "random_return": random_return,
        "threshold": threshold_for(args.algorithm, dataset_mean, random_return),
        "evaluations": evaluations,
        "best_return": max((e["mean_return"] for e in evaluations), default=math.nan),
        "command": "python benchmarks/offline_learning.py " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
    }


def plot(summary, path):
    """The curve: evaluation return against updates, with the threshold and the references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    updates = [e["updates"] for e in summary["evaluations"]]
    axis.plot(updates, [e["mean_return"] for e in summary["evaluations"]], marker="o",
              label=f"{summary['algorithm']} ({summary['observation']})")
    axis.axhline(summary["threshold"], color="C3", linestyle="--", label="threshold")
    axis.axhline(summary["dataset_mean_return"], color="C2", linestyle=":",
                 label="dataset mean return")
    if summary["random_return"] is not None:
        axis.axhline(summary["random_return"], color="C7", linestyle=":",
                     label="random level mean return")
    axis.set_xlabel("updates")
    axis.set_ylabel(f"evaluation return ({len(summary['evaluations'][0]['returns'])} episodes)"
                    if summary["evaluations"] else "evaluation return")
    axis.set_title(f"{summary['check']}\n{summary['cpu_budget_s']:.0f} CPU s budget", fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("algorithm", choices=MODEL_FREE + MODEL_BASED)
    parser.add_argument("dataset", help="dataset id (or folder)")
    parser.add_argument("--root", default=None, help="dataset root (default: $LQV_D4RL_ROOT)")
    parser.add_argument("--observation", choices=("image", "state"), default="image")
    parser.add_argument("--variant", default="", help="name suffix, e.g. state or state-exo24")
    parser.add_argument("--preset", default="paper", help="the algorithm's preset (sizes)")
    parser.add_argument("--set", default="{}", help="JSON dict of further config overrides")
    parser.add_argument("--cpu-budget", type=float, default=None,
                        help="CPU seconds of training (default 3600 model-free, 1800 on states)")
    parser.add_argument("--eval-every", type=int, default=500, help="updates between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="runs/offline-learning", help="run folders")
    parser.add_argument("--out", default="docs/learning", help="folder of the JSON and PNG")
    args = parser.parse_args(argv)
    if args.cpu_budget is None:
        args.cpu_budget = 3600.0 if args.algorithm in MODEL_FREE else 1800.0
    if not args.variant and args.observation == "state":
        args.variant = "state"
    import torch

    torch.set_num_threads(1)
    summary = run_check(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{summary['check']}.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out / f"{summary['check']}.png")
    passed = summary["best_return"] >= summary["threshold"]
    print(f"{summary['check']}: best {summary['best_return']:.1f}, threshold "
          f"{summary['threshold']:.1f}: {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
