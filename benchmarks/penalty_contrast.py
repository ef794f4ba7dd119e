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
less, the model is being exploited where its ensemble agrees.

Where the dataset stores physics states (the dm_control tasks), ``real reward`` replays each
source's imagined actions open loop in the real simulator from the start's stored physics state
(``--real-starts`` starts per batch): the reward the environment gives for the very action
sequences the model scored. For the ``dataset`` source it repeats the recorded reward (a check of
the alignment); for the ``actor`` it tells the model's error on the actor's actions (model reward
far above the real one: the model is exploited) from a myopic policy that the model scores
correctly over its short horizon. Offline DV2 and SeMOPO runs (the endogenous branch: the one the
policy is penalized on) on images or states::

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
SATURATED = 0.95
"""An action component beyond this magnitude counts as saturated."""


def saturated_share(actions):
    """Share of the components of ``actions`` beyond :data:`SATURATED` in magnitude."""
    return float((actions.abs() > SATURATED).float().mean())


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
def contrast(agent, batch, horizon, seed=0, replay=None):
    """``{source: {model_reward, penalty, penalized_reward, saturated_share}}`` (and the recorded
    reward for ``dataset``) over imagined rollouts from the posteriors at entries 0..T-H-1; the
    same for the same ``seed`` (the caller's torch RNG is left as it was).

    ``replay(actions (H, N, A)) -> mean real reward`` (:class:`RealReplay`), if given, adds each
    source's ``real_reward``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _contrast(agent, batch, horizon, seed, replay)


def _contrast(agent, batch, horizon, seed, replay):
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
                        "saturated_share": saturated_share(imagination.actions)}
        if replay is not None:
            rows[source]["real_reward"] = replay(imagination.actions.numpy())
    rows["dataset"]["recorded_reward"] = float(window("reward").float().mean())
    return rows


class RealReplay:
    """Replays imagined actions in the real simulator from a batch's stored physics states.

    ``bind(batch, starts)`` points it at the physics states of entries 0..starts-1 of each window
    (flattened window-major, as the imagination's starts are); calling it with actions
    ``(H, N, A)`` resets the simulator to each of the first ``count`` starts' states, plays the H
    actions open loop and returns the mean reward per step.
    """

    def __init__(self, data, count):
        from lqv_d4rl.physics import StateSimulator

        self.data, self.count = data, int(count)
        self.simulator = StateSimulator(data.task)
        self.states = None

    def bind(self, batch, starts):
        rows = (np.asarray(self.data.episode_starts)[batch["episode"]][:, None]
                + np.asarray(batch["start"])[:, None] + np.arange(starts))
        self.states = np.asarray(self.data.physics)[rows.reshape(-1)[:self.count]]

    def __call__(self, actions):
        simulator, physics = self.simulator, self.simulator.physics
        total = 0.0
        for index, state in enumerate(self.states):
            simulator.reset(seed=0)
            with physics.reset_context():
                physics.set_state(state)
            for step in range(actions.shape[0]):
                total += simulator.step(actions[step, index])[1]
        return total / (actions.shape[0] * len(self.states))


def measure(run_dir, root, batches, horizon, seed, real_starts=0):
    """The contrast of one run, averaged over ``batches`` batches of its dataset's windows."""
    from lqv_d4rl.dataset import load_dataset

    record, agent = load_agent(run_dir)
    config = agent.config
    dataset = run_dataset_source(record)
    data = load_dataset(dataset, root=root, lazy=True)
    replay = None
    try:
        sampler = make_sequence_sampler(data, "random", batch_size=config.batch_size,
                                        seq_len=config.seq_len, seed=seed,
                                        keys=sequence_keys(config.observation))
        replay = (RealReplay(data, real_starts)
                  if real_starts and getattr(data, "physics", None) is not None else None)
        parts = []
        for index in range(batches):
            batch = sampler.sample()
            if replay is not None:
                replay.bind(batch, config.seq_len - horizon)
            parts.append(contrast(agent, batch, horizon, seed + index, replay))
    finally:
        data.close()
        if replay is not None:
            replay.simulator.close()
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
          "| recorded reward | real reward |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for source, row in result["sources"].items():
        recorded, real = (f"{row[key]:.3f}" if key in row else ""
                          for key in ("recorded_reward", "real_reward"))
        print(f"| {source} | {row['saturated_share']:.2f} | {row['model_reward']:.3f} | "
              f"{row['penalty']:.4f} | {row['penalized_reward']:.3f} | {recorded} | {real} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="Offline DV2 or SeMOPO run folders")
    parser.add_argument("--root", default=None, help="dataset root of the runs' datasets")
    parser.add_argument("--batches", type=int, default=4, help="batches of windows averaged")
    parser.add_argument("--horizon", type=int, default=None,
                        help="imagined steps (default: each run's own horizon)")
    parser.add_argument("--real-starts", type=int, default=64,
                        help="starts per batch whose actions are replayed in the real simulator "
                             "(dm_control datasets; 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for run_dir in args.runs:
        horizon = args.horizon or read_run_config(run_dir)["config"]["horizon"]
        results.append(measure(run_dir, args.root, args.batches, horizon, args.seed,
                               args.real_starts))
        print_table(results[-1])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
