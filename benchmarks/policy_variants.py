"""Does a model-based actor's collapse depend on how its policy phase is set?

Takes a trained Offline DV2 or SeMOPO run, keeps its world model frozen, and trains a fresh
actor-critic on it once per *variant* (the run's config with some fields changed), from the same
seed and the same dataset batches, evaluating each in the real environment as it goes::

    python benchmarks/policy_variants.py RUN_DIR --root R --updates 300 --eval-every 300 \\
        --variant paper={} --variant horizon15='{"horizon": 15, "actor_lr": 2e-4}' \\
        --variant reinforce='{"actor_grad": "reinforce"}' --json out.json

A variant may change any field of the run's config (``horizon``, ``actor_lr``,
``penalty_lambda``, ...) or of :class:`lqv_d4rl.networks.BehaviorConfig` that the config lacks
(``actor_grad``). Every ``--log-every`` updates the table gets the means of the actor-critic's
metrics (the model's reward for the actor's imagined actions, the penalty, the actor's entropy)
and the share of the actor's action components beyond 0.95 in magnitude at the batch's posterior
states (walker_walk-medium's recorded actions have none); every ``--eval-every``
updates, the mean return of ``--episodes`` evaluation episodes. If every variant's actor saturates
and scores like the random level, the collapse lies in the frozen model, not in the policy
phase's settings.
"""

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import lqv_d4rl  # noqa: F401  (pins the CPU kernels before torch starts)
from baselines.model_based import RunBatches
from lqv_d4rl.networks import ActorCritic, BehaviorConfig
from lqv_d4rl.observations import sequence_keys
from penalty_contrast import load_agent, saturated_share
from run_info import git_commit

LOGGED = ("model_reward", "penalty", "imagined_return", "actor_entropy")
"""Actor-critic metrics averaged into each row."""


def with_variant(agent, overrides):
    """Give ``agent`` its config with ``overrides`` and a fresh actor-critic built from it (the
    global torch RNG initializes it: seed first). Fields the algorithm's config lacks go to the
    actor-critic's settings; a name neither knows is refused."""
    behavior_fields = {item.name for item in dataclasses.fields(BehaviorConfig)}
    extra = {key: value for key, value in overrides.items() if not hasattr(agent.config, key)}
    unknown = sorted(set(extra) - behavior_fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}: neither the run's config nor "
                         "BehaviorConfig has them")
    config = dataclasses.replace(agent.config, **{key: value for key, value in overrides.items()
                                                  if key not in extra})
    agent.config = config
    agent.behavior = ActorCritic(agent.world_model.rssm.feature_dim, agent.action_dim,
                                 BehaviorConfig.from_config(config, **extra), device=agent.device)
    agent.policy_updates = 0
    return agent


def actor_saturated_share(agent, batch):
    """Share of the actor's mode action components beyond 0.95 in magnitude
    (:func:`penalty_contrast.saturated_share`) at every posterior state of ``batch``."""
    with torch.no_grad():
        features = agent.world_model.rssm.features(agent.start_states(batch))
        return saturated_share(agent.behavior.actor(features).mode)


def train_variant(agent, next_batch, updates, *, log_every=100, eval_every=None, evaluate=None):
    """Train ``agent``'s actor-critic for ``updates`` updates on ``next_batch()`` batches; returns
    one row per ``log_every`` updates (metric means, saturated share, CPU seconds, and
    ``evaluate(agent)``'s mean return where a multiple of ``eval_every`` ends)."""
    rows, sums, started = [], {}, time.process_time()
    for update in range(1, updates + 1):
        batch = next_batch()
        metrics = agent.train_policy_step(batch)
        for key in LOGGED:
            sums[key] = sums.get(key, 0.0) + float(metrics[key])
        if update % log_every == 0 or update == updates:
            count = log_every if update % log_every == 0 else update % log_every
            row = {"updates": update, "cpu_s": time.process_time() - started,
                   **{key: value / count for key, value in sums.items()},
                   "saturated_share": actor_saturated_share(agent, batch)}
            if evaluate is not None and eval_every and (update % eval_every == 0
                                                        or update == updates):
                row["eval_return"] = evaluate(agent)
            rows.append(row)
            sums = {}
    return rows


def run_variant(run_dir, root, overrides, updates, *, seed, log_every, eval_every, episodes):
    """One variant on the run in ``run_dir``: its rows (see :func:`train_variant`)."""
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.evaluation import evaluate
    from lqv_d4rl.experiment import eval_seed
    from lqv_d4rl.runs import run_dataset_source

    record, agent = load_agent(run_dir)
    torch.manual_seed(seed)
    with_variant(agent, overrides)
    data = load_dataset(run_dataset_source(record), root=root, lazy=True)
    batches = RunBatches(data, agent.config, seed, "cpu", uses=("policy",),
                         keys=sequence_keys(agent.config.observation))

    def mean_return(trained):
        result = evaluate(trained.policy(), data.eval_env_kwargs(), episodes=episodes,
                          first_episode_seed=eval_seed(seed))
        return float(result["mean_return"])

    try:
        return train_variant(agent, lambda: batches.next("policy"), updates, log_every=log_every,
                             eval_every=eval_every, evaluate=mean_return)
    finally:
        batches.close()
        data.close()


def parse_variant(text):
    """``NAME=JSON`` -> ``(name, overrides dict)``."""
    name, _, overrides = text.partition("=")
    try:
        values = json.loads(overrides or "{}")
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: not NAME=JSON ({err})") from None
    if not name or not isinstance(values, dict):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: not NAME=JSON-object")
    return name, values


def print_rows(name, rows):
    """One variant's rows as a Markdown table."""
    print(f"\n{name}\n")
    print("| updates | CPU s | model reward | penalty u | imagined return | actor entropy "
          "| saturated share | eval return |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        evaluated = f"{row['eval_return']:.1f}" if "eval_return" in row else ""
        print(f"| {row['updates']} | {row['cpu_s']:.0f} | {row['model_reward']:.3f} | "
              f"{row['penalty']:.4f} | {row['imagined_return']:.2f} | "
              f"{row['actor_entropy']:.2f} | {row['saturated_share']:.2f} | {evaluated} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="an Offline DV2 or SeMOPO run folder (its model is reused)")
    parser.add_argument("--root", default=None, help="dataset root of the run's dataset")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="NAME=JSON of config overrides (repeat; NAME={} is the run's own)")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=3, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {"command": "python benchmarks/policy_variants.py " + shlex.join(sys.argv[1:]),
               "commit": git_commit(), "run": args.run, "variants": {}}
    for name, overrides in args.variant:
        rows = run_variant(args.run, args.root, overrides, args.updates, seed=args.seed,
                           log_every=args.log_every, eval_every=args.eval_every,
                           episodes=args.episodes)
        results["variants"][name] = {"overrides": overrides, "rows": rows}
        print_rows(f"{name} {json.dumps(overrides)}", rows)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
