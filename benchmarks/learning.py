"""Learning checks: the shared world-model core and TIA raise returns within a CPU budget.

    python benchmarks/learning.py state                        # core, walker_walk states, >= 200
    python benchmarks/learning.py tia --task cartpole_swingup  # TIA from pixels, >= 300
    python benchmarks/learning.py tia --task walker_walk       # TIA from pixels, >= 150

``state`` trains DreamerV2 on dm_control *state* observations with the shared core
(:mod:`collectors.state_dreamer`: ``lqv_d4rl.networks`` WorldModel with MLP encoder and decoder,
ActorCritic). ``tia`` trains the TIA agent online from 64x64 images with the procedural driving
video behind the agent (:class:`collectors.online.OnlineTrainer`), at reduced network sizes.
``cartpole_swingup`` is not a benchmark task: this script builds it for itself (action repeat 8,
as PlaNet and most pixel-based cartpole work use; 125 agent steps per episode).

Budgets are CPU seconds of this process (``--cpu-budget``; defaults 2400 = 20 minutes of 2 cores
for ``state``, 7200 = 1 hour of 2 cores for ``tia``): CPU time, unlike wall time, does not stretch
when other work shares the machine. Wall time is printed too.

Each check prints its learning curve, writes ``<out>/<name>.json`` and ``<out>/<name>.png``, and
exits with status 1 and a line that says so when the best evaluation return stays below
``--threshold``. The ``tia`` check also rewrites ``<out>/<name>-decomposition.png`` at every
evaluation: what the world model makes of the newest training episode (each branch's part of the
reconstruction, the mask, and how well each branch's reward head reads the reward), which tells a
representation that has not found the agent yet from a behaviour that has not learned yet.
``--background none`` runs the ``tia`` check without the driving video, as a control.
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

THRESHOLDS = {"state": {"walker_walk": 200.0},
              "tia": {"walker_walk": 150.0, "cartpole_swingup": 300.0}}
"""Default return thresholds ("clearly above random": random walker ~40, random swingup ~110)."""


# ---------------------------------------------------------------------------------- state check


def state_config(args):
    """The StateDreamerConfig of the ``state`` check."""
    from collectors.state_dreamer import StateDreamerConfig

    config = StateDreamerConfig(task=args.task, cpu_budget_s=args.cpu_budget, threads=args.threads,
                                stoch=16, classes=16, model_lr=6e-4, actor_lr=2e-4,
                                critic_lr=2e-4, train_every=10, eval_every=2500,
                                eval_episodes=5,
                                target_return=None if args.full else args.threshold)
    return dataclasses.replace(config, **json.loads(args.set))


def run_state_check(args):
    """Train the state-based DreamerV2; return a summary dict."""
    from collectors.state_dreamer import train_state_dreamer

    config = state_config(args)
    curve = train_state_dreamer(config, seed=args.seed, progress=not args.quiet)
    evaluations = curve.evaluations
    return {
        "check": "state", "task": config.task, "config": dataclasses.asdict(config),
        "evaluations": evaluations,
        "train_returns": curve.train_returns,
        "metrics": curve.metrics,
        "random_return": curve.random_return,
        "seconds_per_update": curve.seconds_per_update,
        "cpu_seconds_per_update": curve.cpu_seconds_per_update,
    }


# ---------------------------------------------------------------------------------- TIA check


class CheckVectorEnv:
    """In-process vector env of a dm_control task outside the benchmark registry (cartpole), with
    the same API as :mod:`collectors.vector_env` and the procedural background."""

    def __init__(self, spec, num_envs, *, seed, video_pool):
        from lqv_d4rl.envs import DMCEnv

        self.task, self.num_envs, self.action_dim = spec.name, num_envs, spec.action_dim
        self.action_repeat = spec.action_repeat
        self.envs = [DMCEnv(spec, video_pool=video_pool, composite="segmentation", seed=seed + i,
                            size=64, render_quality="fast") for i in range(num_envs)]

    def reset(self, seeds):
        """Reset every env with its seed; return ``(obs, infos)``."""
        results = [env.reset(seed=int(seed)) for env, seed in zip(self.envs, seeds)]
        return np.stack([obs for obs, _ in results]), [info for _, info in results]

    def step(self, actions, active=None):
        """Step the active envs; inactive ones return zeros and empty infos."""
        active = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        obs = np.zeros((self.num_envs, 64, 64, 3), np.uint8)
        rewards = np.zeros(self.num_envs)
        terminated, truncated = np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool)
        infos = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(active):
            obs[i], rewards[i], terminated[i], truncated[i], infos[i] = self.envs[i].step(actions[i])
        return obs, rewards, terminated, truncated, infos

    def close(self):
        """Free the renderers."""
        for env in self.envs:
            env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def make_check_venv(task, seed, background="procedural"):
    """The vector env of the TIA check: a benchmark task, or the check's own cartpole_swingup;
    ``background="none"`` leaves the plain dm_control scene (a control run without the video)."""
    import distractors
    from collectors.vector_env import make_vector_env
    from lqv_d4rl.tasks import TaskSpec

    pool = distractors.make_video_pool(None, num_frames=1000, seed=seed) if background == "procedural" else None
    if task == "cartpole_swingup":
        spec = TaskSpec("cartpole_swingup", "dmc", "cartpole", "swingup", action_dim=1,
                        action_repeat=8, episode_steps=125)
        return CheckVectorEnv(spec, 1, seed=seed, video_pool=pool)
    return make_vector_env(task, 1, seed=seed, env_kwargs={"distractor": pool})


def tia_config(args):
    """The reduced TIAConfig of the ``tia`` check (published values except sizes and batch)."""
    from collectors.tia import ADVERSARIAL_SCALES, TIAConfig

    config = TIAConfig(cnn_depth=16, distractor_cnn_depth=16, units=256, batch_size=16,
                       seq_len=32, adversarial_scale=ADVERSARIAL_SCALES.get(args.task, 20000.0),
                       eval_every=2000, eval_episodes=2)
    return dataclasses.replace(config, **json.loads(args.set))


class TIAProgress:
    """``on_evaluation`` of the TIA check: times each evaluation (CPU and wall seconds, continued
    across ``--resume``; work redone after a resume counts twice), writes the summary and figure
    after each one, and ends the run once the CPU budget is spent or (``target`` not None) an
    evaluation reaches ``target``."""

    def __init__(self, args, config, work_dir, target=None):
        self.args, self.config, self.work_dir, self.target = args, config, work_dir, target
        self.path = work_dir / "check_evaluations.json"
        self.rows = json.loads(self.path.read_text()) if self.path.is_file() else []
        done = self.rows[-1] if self.rows else {"wall_s": 0.0, "cpu_s": 0.0}
        self.wall = time.perf_counter() - done["wall_s"]
        self.cpu = time.process_time() - done["cpu_s"]

    trainer = None
    """The OnlineTrainer (set by ``run_tia_check``): the newest episode of its replay feeds the
    decomposition figure written at each evaluation."""

    def __call__(self, evaluation, agent):
        cpu = time.process_time() - self.cpu
        row = {"env_steps": evaluation.env_steps, "updates": agent.updates,
               "wall_s": time.perf_counter() - self.wall, "cpu_s": cpu,
               "returns": evaluation.returns, "mean_return": evaluation.mean_return}
        self.rows = [r for r in self.rows if r["env_steps"] < evaluation.env_steps] + [row]
        self.path.write_text(json.dumps(self.rows))
        print(f"env steps {row['env_steps']:>7d}  updates {agent.updates:>6d}  "
              f"wall {row['wall_s']:6.0f} s  cpu {cpu:6.0f} s  "
              f"eval return {row['mean_return']:6.1f}", flush=True)
        write_report(self.args, tia_summary(self.args, self.config, self.work_dir, self.rows))
        replay = self.trainer.replay if self.trainer is not None else None
        if replay is not None and len(replay):
            plot_decomposition(agent, replay.episode(len(replay) - 1),
                               f"{report_name(self.args)}-decomposition.png",
                               f"{self.args.task}: newest training episode, {evaluation.env_steps} env steps")
        return cpu >= self.args.cpu_budget or evaluation.mean_return >= (self.target or math.inf)


def tia_summary(args, config, work_dir, evaluations):
    """The TIA check's summary dict, from its evaluations and the run's ``metrics.csv``."""
    from lqv_d4rl.runs import metric_series, read_metrics

    rows = read_metrics(work_dir)
    metric_names = sorted({row["metric"] for row in rows if row["phase"] == "train"})
    metrics = {name: [part.tolist() for part in metric_series(rows, "train", name)]
               for name in metric_names}
    episode_steps, episode_returns = metric_series(rows, "episode", "return")
    prefill = episode_returns[episode_steps <= config.prefill_steps]
    updates_per_second = metric_series(rows, "train", "updates_per_second")[1][1:]  # not pretrain
    return {
        "check": "tia", "task": args.task, "background": args.background,
        "config": dataclasses.asdict(config),
        "evaluations": evaluations,
        "train_returns": list(zip(episode_steps.tolist(), episode_returns.tolist())),
        "metrics": metrics,
        "random_return": float(prefill.mean()) if len(prefill) else math.nan,
        "seconds_per_update": float(np.mean(1.0 / updates_per_second)) if len(updates_per_second)
        else math.nan,
        "cpu_seconds_per_update": math.nan,
    }


def run_tia_check(args):
    """Train TIA online from pixels; return a summary dict."""
    import torch

    from collectors.online import OnlineTrainer

    config = tia_config(args)
    work_dir = report_name(args)
    if work_dir.exists() and not args.resume:
        raise SystemExit(f"{work_dir} exists; pass --resume to continue it or remove it")
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    progress = TIAProgress(args, config, work_dir, None if args.full else args.threshold)
    with make_check_venv(args.task, args.seed, args.background) as venv:
        trainer = OnlineTrainer(config, venv, work_dir=work_dir, seed=args.seed, device=args.device,
                                max_env_steps=10**9, on_evaluation=progress,
                                progress=not args.quiet,
                                action_repeat=getattr(venv, "action_repeat", None))
        progress.trainer = trainer
        trainer.run()
    return tia_summary(args, config, work_dir, progress.rows)


# ---------------------------------------------------------------------------------- reporting


def print_curve(summary):
    """The learning curve as a table."""
    print(f"\n{summary['check']} check on {summary['task']}: random policy "
          f"{summary['random_return']:.1f}, {summary['seconds_per_update']:.2f} s per update")
    print(f"{'env steps':>10} {'updates':>8} {'wall s':>8} {'cpu s':>8} {'eval return':>12}")
    for row in summary["evaluations"]:
        print(f"{row['env_steps']:>10d} {row['updates']:>8d} {row['wall_s']:>8.0f} "
              f"{row['cpu_s']:>8.0f} {row['mean_return']:>12.1f}")


def plot_curve(summary, threshold, path, diagnostics=()):
    """Save the learning curve (and the chosen training metrics) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + bool(diagnostics)
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    axis = axes[0, 0]
    if summary["train_returns"]:
        steps, returns = zip(*summary["train_returns"])
        axis.plot(steps, returns, ".", color="0.6", markersize=4, label="training episodes")
    evaluation = summary["evaluations"]
    axis.plot([r["env_steps"] for r in evaluation], [r["mean_return"] for r in evaluation], "o-",
              color="C0", label="evaluation (mean)")
    axis.axhline(summary["random_return"], color="C3", linestyle=":", label="random policy")
    axis.axhline(threshold, color="C2", linestyle="--", label=f"threshold {threshold:g}")
    what = "shared core (DreamerV2) from states"
    if summary["check"] == "tia":
        what = ("TIA from pixels, no background" if summary.get("background") == "none"
                else "TIA from pixels with the driving-video background")
    axis.set(xlabel="environment steps", ylabel="episode return",
             title=f"{summary['task']}: {what}")
    axis.legend(loc="upper left", fontsize=8)
    if diagnostics:
        axis = axes[0, 1]
        for name in diagnostics:
            values = summary["metrics"].get(name)
            if values:
                axis.plot(values[0], values[1], label=name)
        axis.set(xlabel="environment steps", ylabel="value (symlog)", yscale="symlog",
                 title="training metrics (mean per training point)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report_name(args):
    """``<out>/<check>-<task>[-nobackground]-seed<k>``, the stem of every file a check writes."""
    plain = "-nobackground" if args.background == "none" else ""
    return Path(args.out) / f"{args.check}-{args.task}{plain}-seed{args.seed}"


def plot_decomposition(agent, episode, path, title, frames=8, length=48):
    """Save what the TIA world model makes of the first ``length`` steps of ``episode``: per frame
    the input, the joint reconstruction, each branch's part of it, the distractor's own
    reconstruction and the mask; beside it, the reward and what each branch's reward head reads.

    A working decomposition draws the agent in the task row and the video in the distractor rows,
    and the task head's reward follows the true reward while the distractor head's stays flat.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    length = min(length, len(episode["reward"]))
    batch = {key: np.asarray(episode[key][:length])[None] for key in ("image", "action", "reward", "is_first")}
    images, rewards = agent.decompose(batch)
    rows = {"input": "truth", "joint": "joint", "task part": "task", "distractor\npart": "distractor",
            "distractor\nalone": "distractor_only", "mask": "mask"}
    steps = np.linspace(0, length - 1, frames).astype(int)
    figure = plt.figure(figsize=(14, 6.5))
    grid = figure.add_gridspec(len(rows), frames + 6, left=0.03, right=0.98, top=0.9, bottom=0.08,
                               wspace=0.05, hspace=0.08)
    for row, (label, key) in enumerate(rows.items()):
        for column, step in enumerate(steps):
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(images[key][0, step])
            axis.set_xticks([]), axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label, fontsize=8)
            if row == 0:
                axis.set_title(f"step {step}", fontsize=8)
    axis = figure.add_subplot(grid[1:-1, frames + 2:])
    axis.plot(batch["reward"][0], "k-", label="true reward")
    axis.plot(rewards["task"][0], "C0-", label="task reward head")
    axis.plot(rewards["distractor"][0], "C3--", label="distractor reward head (adversary)")
    axis.set(xlabel="step of the episode", ylabel="reward per agent step",
             title="what each branch reads of the reward")
    axis.legend(fontsize=8)
    figure.suptitle(f"TIA decomposition (mask: white = task branch), {title}")
    figure.savefig(path, dpi=72)
    plt.close(figure)


def write_report(args, summary):
    """Write ``<out>/<check>-<task>-seed<k>.json`` and ``.png``; return the best evaluation return."""
    summary["threshold"] = args.threshold
    summary["best_return"] = max((row["mean_return"] for row in summary["evaluations"]),
                                 default=math.nan)
    name = report_name(args)
    Path(f"{name}.json").write_text(json.dumps(summary, indent=1))
    plot_curve(summary, args.threshold, f"{name}.png",
               TIA_DIAGNOSTICS if args.check == "tia" else ())
    return summary["best_return"]


TIA_DIAGNOSTICS = ("task_kl", "distractor_kl", "actor_entropy", "actor_grad_norm",
                   "distractor_grad_norm", "imagined_return", "mask_mean", "reward_explained_variance",
                   "adversarial_reward_explained_variance")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("state", "tia"))
    parser.add_argument("--task", default=None, help="walker_walk (default) or cartpole_swingup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-budget", type=float, default=None,
                        help="CPU seconds of this process (default 2400 state, 7200 tia)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--set", default="{}", help='config overrides as JSON, e.g. \'{"horizon": 10}\'')
    parser.add_argument("--out", default="/tmp/lqv-learning")
    parser.add_argument("--full", action="store_true",
                        help="spend the whole budget instead of stopping at the threshold")
    parser.add_argument("--resume", action="store_true", help="tia: continue the run in --out")
    parser.add_argument("--background", choices=("procedural", "none"), default="procedural",
                        help="tia: the driving video behind the agent (default), or none: a control "
                             "run that tells the video's cost from the learner's")
    parser.add_argument("--device", default="cpu",
                        help="tia: torch device of the agent, e.g. cuda (the budget stays CPU seconds "
                             "of this process; give a large one for a long run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.task = args.task or "walker_walk"
    if args.task not in THRESHOLDS[args.check]:
        parser.error(f"the {args.check} check runs on {', '.join(THRESHOLDS[args.check])}")
    args.cpu_budget = args.cpu_budget or (2400.0 if args.check == "state" else 7200.0)
    threshold = args.threshold = (THRESHOLDS[args.check][args.task] if args.threshold is None
                                  else args.threshold)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summary = run_state_check(args) if args.check == "state" else run_tia_check(args)
    best = write_report(args, summary)
    print_curve(summary)
    name = report_name(args)
    print(f"curve: {name}.png, data: {name}.json")
    if not best >= threshold:
        print(f"FAILED: the best evaluation return {best:.1f} stayed below the threshold "
              f"{threshold:g} within {args.cpu_budget:g} CPU seconds", file=sys.stderr)
        return 1
    print(f"passed: best evaluation return {best:.1f} >= {threshold:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
