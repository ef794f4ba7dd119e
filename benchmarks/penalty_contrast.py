"""Does a trained model-based run's penalty flag the actions its data never took?

From the same posterior states of dataset windows, the run's world model imagines ``--horizon``
steps under four action sources, and the script reports, per source, the model's reward, the
ensemble penalty u of the run's own config, the penalized reward r - lambda * u that the actor
maximizes, and the share of action components beyond 0.95 in magnitude (saturated)::

    dataset    the actions recorded after each start state, open loop (and the rewards recorded
               with them: how well the model predicts reward where it has data)
    actor      the run's trained actor, its mode, closed loop in imagination
    uniform    uniform in [-1, 1] per component
    saturated  a random corner of the action box, each component -1 or +1

A penalty that protects the policy is larger for actions unlike the data's; if the actor's
actions earn a higher penalized reward than the dataset's while the real environment returns
less, the model is being exploited where its ensemble agrees. Offline DV2 and SeMOPO runs (the
endogenous branch: the one the policy is penalized on) on images or states::

    python benchmarks/penalty_contrast.py RUN_DIR [RUN_DIR ...] --root R [--json out.json]
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

import lqv_d4rl  # noqa: F401  (pins the CPU kernels before torch starts)
from baselines.uncertainty import AGENTS
from lqv_d4rl.observations import sequence_keys
from lqv_d4rl.runs import read_run_config, run_dataset_source
from lqv_d4rl.samplers import make_sequence_sampler, mark_window_starts

PENALIZED = ("offline_dv2", "semopo")
"""The algorithms whose agents have ``world_model.observe / imagine`` and ``penalized_reward``."""
SOURCES = ("dataset", "actor", "uniform", "saturated")


def load_agent(run_dir):
    """The trained agent of an Offline DV2 or SeMOPO run folder."""
    record = read_run_config(run_dir)
    if record["algorithm"] not in PENALIZED:
        sys.exit(f"{run_dir}: a {record['algorithm']} run; this script reads "
                 f"{' or '.join(PENALIZED)} runs")
    module, name, _ = AGENTS[record["algorithm"]]
    return record, getattr(importlib.import_module(module), name).load(run_dir)


def action_source(source, agent, recorded, generator):
    """``policy(features) -> actions`` of one source for :meth:`RSSM.imagine`; ``recorded`` is the
    ``(H, N, A)`` tensor of the actions the data took after each start."""
    step = iter(range(recorded.shape[0]))
    shape = recorded.shape[1:]
    if source == "dataset":
        return lambda features: recorded[next(step)]
    if source == "actor":
        return lambda features: agent.behavior.actor(features).mode
    if source == "uniform":
        return lambda features: torch.rand(shape, generator=generator) * 2 - 1
    return lambda features: torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


@torch.no_grad()
def contrast(agent, batch, horizon, seed=0):
    """``{source: {model_reward, penalty, penalized_reward, saturated_share}}`` (and the recorded
    reward for ``dataset``) over imagined rollouts from the posteriors at entries 0..T-H-1; the
    same for the same ``seed`` (the caller's torch RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _contrast(agent, batch, horizon, seed)


def _contrast(agent, batch, horizon, seed):
    mark_window_starts(batch)
    post, _ = agent.world_model.observe(batch)
    starts = post[next(iter(post))].shape[1] - horizon
    start = {key: value[:, :starts].reshape(-1, *value.shape[2:]) for key, value in post.items()}
    # entry t holds a_{t-1}: the actions taken after the state at entry t are entries t+1..t+H
    window = lambda key: torch.stack([torch.as_tensor(batch[key][:, 1 + k:1 + k + starts])
                                      .reshape(-1, *batch[key].shape[2:]) for k in range(horizon)])
    recorded = window("action").float()
    generator = torch.Generator().manual_seed(seed)
    rows = {}
    for source in SOURCES:
        agent.world_model.rssm.seed_heads(seed)  # the same ensemble heads for every source
        imagination = agent.world_model.imagine(
            action_source(source, agent, recorded, generator), start, horizon)
        total, reward, penalty = agent.penalized_reward(imagination)
        rows[source] = {"model_reward": float(reward.mean()), "penalty": float(penalty.mean()),
                        "penalized_reward": float(total.mean()),
                        "saturated_share": float((imagination.actions.abs() > 0.95).float().mean())}
    rows["dataset"]["recorded_reward"] = float(window("reward").float().mean())
    return rows


def measure(run_dir, root, batches, horizon, seed):
    """The contrast of one run, averaged over ``batches`` batches of its dataset's windows."""
    from lqv_d4rl.dataset import load_dataset

    record, agent = load_agent(run_dir)
    config = agent.config
    dataset = run_dataset_source(record)
    data = load_dataset(dataset, root=root, lazy=True)
    try:
        sampler = make_sequence_sampler(data, "random", batch_size=config.batch_size,
                                        seq_len=config.seq_len, seed=seed,
                                        keys=sequence_keys(config.observation))
        parts = [contrast(agent, sampler.sample(), horizon, seed + index)
                 for index in range(batches)]
    finally:
        data.close()
    rows = {source: {key: float(np.mean([part[source][key] for part in parts]))
                     for key in parts[0][source]} for source in SOURCES}
    return {"run": str(run_dir), "algorithm": record["algorithm"], "dataset": str(dataset),
            "penalty_lambda": config.penalty_lambda, "horizon": horizon,
            "model_updates": agent.model_updates, "policy_updates": agent.policy_updates,
            "sources": rows}


def print_table(result):
    """The contrast of one run as a Markdown table."""
    print(f"\n{result['algorithm']} on {result['dataset']} ({result['model_updates']} model + "
          f"{result['policy_updates']} policy updates, lambda {result['penalty_lambda']:g}, "
          f"horizon {result['horizon']})\n")
    print("| actions | saturated share | model reward | penalty u | r - lambda u "
          "| recorded reward |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for source, row in result["sources"].items():
        recorded = f"{row['recorded_reward']:.3f}" if "recorded_reward" in row else ""
        print(f"| {source} | {row['saturated_share']:.2f} | {row['model_reward']:.3f} | "
              f"{row['penalty']:.4f} | {row['penalized_reward']:.3f} | {recorded} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="Offline DV2 or SeMOPO run folders")
    parser.add_argument("--root", default=None, help="dataset root of the runs' datasets")
    parser.add_argument("--batches", type=int, default=4, help="batches of windows averaged")
    parser.add_argument("--horizon", type=int, default=None,
                        help="imagined steps (default: each run's own horizon)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for run_dir in args.runs:
        horizon = args.horizon or read_run_config(run_dir)["config"]["horizon"]
        results.append(measure(run_dir, args.root, args.batches, horizon, args.seed))
        print_table(results[-1])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
