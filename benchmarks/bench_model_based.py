"""Offline DV2 and LOMPO training throughput at the paper's sizes, against SeMOPO's separated model
measured in the same run; parameter counts; projected wall time of a paper-length run.

    python benchmarks/bench_model_based.py                 # CPU: batch 8 x 50, 1 thread
    python benchmarks/bench_model_based.py --device cuda   # batch 64 x 50, the paper's
    python benchmarks/bench_model_based.py --json

Networks have the ``paper`` presets' sizes (Offline DV2: CNN depth 48, 32 x 32 latents, 7 heads,
dense 400; LOMPO: ReLU CNN depth 32, Gaussian 64 + GRU 256, 7 heads, dense 256; SeMOPO: both
branches). Inputs are noise images of the sampler's layout. Timed: a world-model update and a
policy update (Offline DV2 and SeMOPO: imagination from all B x T posterior states); for LOMPO, an
agent update (256 real + 256 imagined transitions), one imagination round (rollouts from a model
batch) and the encoding of one 501-entry episode. Each figure is the median of ``--repeats``
measurements of ``--steps`` calls, taken round-robin over the methods (a shared machine's busy
spells then slow all of them alike), after ``--warmup`` untimed calls.

Projected hours of a paper-length run (sampling, evaluation and checkpoints not included):

* Offline DV2: 25,000 model + 200,000 policy updates (``semopo_steps``: 100,000);
* LOMPO: 25,000 model updates, 4 + 750 imagination rounds, 150,000 agent updates, 200 + 750 episode
  encodings (a 200-episode dataset);
* SeMOPO: 25,000 model + 100,000 policy updates.

Batch-dependent times measured at a batch B < 64 are scaled by 64 / B for the projection (on a CPU
the cost of these updates grows about linearly with the batch); the rows say when they are.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_semopo import synchronize, time_updates

import semopo
from baselines import lompo, offline_dv2
from lqv_d4rl.networks import count_parameters
from lqv_d4rl.synthetic import noise_batch, to_torch

ACTION_DIM = 6  # walker
PAPER_BATCH = 64
DATASET_EPISODES = 200


def make_batch(batch_size, seq_len, device):
    """A noise sequence batch on ``device`` (numpy on the CPU, as the samplers give it)."""
    batch = noise_batch(batch_size, seq_len, ACTION_DIM)
    return batch if torch.device(device).type == "cpu" else to_torch(batch, device)


def semopo_operations(device, batch):
    """SeMOPO's separated model: parameter counts and the timed operations."""
    config = semopo.preset("paper", batch_size=len(batch["image"]))
    torch.manual_seed(0)
    return two_phase_operations(semopo.SeMOPOAgent(ACTION_DIM, config, device=device), batch)


def offline_dv2_operations(device, batch):
    """Offline DV2: parameter counts and the timed operations."""
    config = offline_dv2.ALGORITHM.config("paper", batch_size=len(batch["image"]))
    torch.manual_seed(0)
    return two_phase_operations(offline_dv2.OfflineDV2Agent(ACTION_DIM, config, device=device),
                                batch)


def two_phase_operations(agent, batch):
    """A DreamerV2-style agent: a model update and a policy update on ``batch``."""
    counts = {"world_model_parameters": count_parameters(agent.world_model),
              "agent_parameters": count_parameters(agent.behavior)}
    return counts, {"model_update": lambda: agent.train_model_step(batch),
                    "policy_update": lambda: agent.train_policy_step(batch)}


def lompo_operations(device, batch):
    """LOMPO: a model update, an imagination round, an agent update, one episode's encoding."""
    config = lompo.ALGORITHM.config("paper", batch_size=len(batch["image"]))
    torch.manual_seed(0)
    agent = lompo.LOMPOAgent(ACTION_DIM, config, capacity=100_000, device=device)
    agent.imagination_round(batch)
    agent.real.load_state_dict(agent.imagined.state_dict())  # the agent samples from both buffers
    episode = OneEpisode()

    def encode():
        agent.encode_episodes(episode, [0])
        return {"episodes_encoded": torch.tensor(agent.episodes_encoded)}

    counts = {"world_model_parameters": count_parameters(agent.world_model),
              "agent_parameters": count_parameters(agent.behavior)}
    return counts, {"model_update": lambda: agent.train_model_step(batch),
                    "policy_update": agent.train_policy_step,
                    "round": lambda: agent.imagination_round(batch), "encode_episode": encode}


class OneEpisode:
    """The two things ``LOMPOAgent.encode_episodes`` reads of a dataset, for one noise episode."""

    def __init__(self, length=501):
        self.step_dict = {key: value[0] for key, value in noise_batch(1, length, ACTION_DIM).items()}
        self.episode_lengths = [length]

    def episode(self, index):
        """The episode's step dict (there is one)."""
        return self.step_dict


def projected_hours(name, row, scale):
    """Hours of a paper-length run from the measured seconds (batch-dependent ones times ``scale``)."""
    model = 25_000 * row["model_update_s"] * scale
    if name == "offline_dv2":
        return {"paper": (model + 200_000 * row["policy_update_s"] * scale) / 3600,
                "semopo_steps": (model + 100_000 * row["policy_update_s"] * scale) / 3600}
    if name == "semopo":
        return {"paper": (model + 100_000 * row["policy_update_s"] * scale) / 3600}
    rounds = (lompo.LOMPOConfig().prefill_rounds + 750) * row["round_s"] * scale
    encodings = (DATASET_EPISODES + 750) * row["encode_episode_s"]
    return {"paper": (model + rounds + 150_000 * row["policy_update_s"] + encodings) / 3600}


def measure(built, device, *, repeats, warmup, steps):
    """Median seconds per call of every operation: ``{method: {operation: seconds}}``.

    The ``repeats`` measurements are taken round-robin over methods and operations, so that a busy
    spell of a shared machine slows every method alike; ``warmup`` untimed calls precede the first.
    """
    seconds = {name: {op: [] for op in ops} for name, (_, ops) in built.items()}
    for repeat in range(repeats):
        for name, (_, ops) in built.items():
            for op, call in ops.items():
                seconds[name][op].append(time_updates(
                    lambda _, call=call: call(), None, device=device,
                    warmup=warmup if repeat == 0 else 0, steps=steps))
    return {name: {op: float(np.median(values)) for op, values in by_op.items()}
            for name, by_op in seconds.items()}


def main():
    """Print (or emit as JSON lines) one row per method."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=None,
                        help="sequences per model batch (default: 64 on CUDA, 8 on the CPU)")
    parser.add_argument("--steps", type=int, default=2, help="timed calls per measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements per operation, taken round-robin over the methods; "
                             "the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--methods", default="semopo,offline_dv2,lompo",
                        help="comma-separated subset of semopo, offline_dv2, lompo")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.batch or (PAPER_BATCH if device.type == "cuda" else 8)
    scale = PAPER_BATCH / batch_size
    batch = make_batch(batch_size, 50, device)
    operations = {"semopo": semopo_operations, "offline_dv2": offline_dv2_operations,
                  "lompo": lompo_operations}
    label = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu ({args.threads} thread(s), {platform.processor() or platform.machine()})")
    built = {name: operations[name](device, batch) for name in args.methods.split(",")}
    seconds = measure(built, device, repeats=args.repeats, warmup=args.warmup, steps=args.steps)
    rows = {}
    for name, (counts, _) in built.items():
        row = {**counts, **{f"{op}_s": value for op, value in seconds[name].items()}}
        row["hours"] = projected_hours(name, row, scale)
        rows[name] = row
        if args.json:
            print(json.dumps({"method": name, "device": label, "batch": f"{batch_size}x50", **row}))
    if not args.json:
        print_table(rows, label, batch_size, scale)
    synchronize(device)


def print_table(rows, label, batch_size, scale):
    """A readable table with the speed of each method relative to SeMOPO's."""
    scaled = f" (batch-dependent times x{scale:g} for 64x50)" if scale != 1 else ""
    print(f"{label}, model batch {batch_size}x50{scaled}")
    base = rows.get("semopo")
    for name, row in rows.items():
        print(f"{name}: world model {row['world_model_parameters'] / 1e6:.2f}M parameters, agent "
              f"{row['agent_parameters'] / 1e6:.2f}M")
        for key in ("model_update_s", "policy_update_s", "round_s", "encode_episode_s"):
            if key in row:
                ratio = (f"  ({base[key] / row[key]:.2f}x SeMOPO's speed)"
                         if base and key in base and name != "semopo" else "")
                print(f"  {key[:-2]:<16} {row[key]:.4f} s ({1 / row[key]:.3g}/s){ratio}")
        hours = ", ".join(f"{preset} {value:.1f} h" for preset, value in row["hours"].items())
        print(f"  projected paper-length run: {hours}")


if __name__ == "__main__":
    main()
