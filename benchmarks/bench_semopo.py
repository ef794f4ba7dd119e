"""SeMOPO training throughput: world-model and policy updates per second at the paper's sizes.

    python benchmarks/bench_semopo.py            # batch 64 x 50 (paper), CPU, and CUDA if present
    python benchmarks/bench_semopo.py --quick    # batch 8 x 50: a quick look (same network sizes)
    python benchmarks/bench_semopo.py --device cuda --steps 20

Each measurement runs ``--warmup`` untimed updates, then ``--steps`` timed ones, on a batch of
random images (uint8) with the paper's network sizes (CNN depth 48, dense 400, deter 200, 32x32
latents, K=7 heads, both branches). The full-run estimate is ``25,000 / model updates per s +
100,000 / policy updates per s`` (sampling, evaluation and checkpoints not included). On CPU the
process uses ``--threads`` threads (default 1, the project's rule for benchmarks). A paper-size
world-model update on CPU holds roughly 10-15 GB of activations.
"""

import argparse
import json
import platform
import time

import torch

import semopo
from lqv_d4rl.networks import count_parameters
from lqv_d4rl.synthetic import noise_batch, to_torch


def time_updates(update, batch, *, warmup, steps, device):
    """Seconds per call of ``update(batch)`` (mean over ``steps`` after ``warmup`` calls)."""
    for _ in range(warmup):
        update(batch)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        metrics = update(batch)
    float(next(iter(metrics.values())))  # wait for the last update
    synchronize(device)
    return (time.perf_counter() - start) / steps


def synchronize(device):
    """Wait for queued CUDA work (no-op on CPU), so that timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def benchmark(device, *, batch_size, seq_len, warmup, steps, separated=True, action_dim=6):
    """One row of results for ``device``."""
    config = semopo.preset("paper", batch_size=batch_size, seq_len=seq_len, separated=separated)
    torch.manual_seed(0)
    agent = semopo.SeMOPOAgent(action_dim, config, device=device)
    batch = noise_batch(batch_size, seq_len, action_dim)
    if torch.device(device).type == "cuda":
        batch = to_torch(batch, device)
        torch.cuda.reset_peak_memory_stats()
    model_seconds = time_updates(agent.train_model_step, batch, warmup=warmup, steps=steps,
                                 device=device)
    policy_seconds = time_updates(agent.train_policy_step, batch, warmup=warmup, steps=steps,
                                  device=device)
    full_run = config.model_steps * model_seconds + config.policy_steps * policy_seconds
    row = {
        "device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda"
        else f"cpu ({torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()})",
        "model": "separated" if separated else "joint",
        "batch": f"{batch_size}x{seq_len}",
        "precision": config.precision if torch.device(device).type == "cuda" else "float32",
        "world_model_parameters": count_parameters(agent.world_model),
        "model_update_s": model_seconds,
        "model_updates_per_s": 1 / model_seconds,
        "policy_update_s": policy_seconds,
        "policy_updates_per_s": 1 / policy_seconds,
        "full_run_hours": full_run / 3600,
    }
    if torch.device(device).type == "cuda":
        row["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main():
    """Print one result block (or JSON line) per device."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8 x 50 instead of 64 x 50")
    parser.add_argument("--batch", type=int, default=None, help="sequences per batch (overrides)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cpu + cuda if present)")
    parser.add_argument("--steps", type=int, default=2, help="timed updates per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--joint", action="store_true", help="the single-branch ablation instead")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.device != "auto":
        devices = [args.device]
    batch_size = args.batch or (8 if args.quick else 64)
    for device in devices:
        row = benchmark(device, batch_size=batch_size, seq_len=50, warmup=args.warmup,
                        steps=args.steps, separated=not args.joint)
        if args.json:
            print(json.dumps(row))
            continue
        print(f"{row['device']}: {row['model']} model, batch {row['batch']}, {row['precision']}, "
              f"{row['world_model_parameters'] / 1e6:.1f}M world-model parameters")
        print(f"  world model: {row['model_update_s']:.3f} s/update ({row['model_updates_per_s']:.3g}/s)")
        print(f"  policy:      {row['policy_update_s']:.3f} s/update ({row['policy_updates_per_s']:.3g}/s)")
        print(f"  full run (25k model + 100k policy updates): {row['full_run_hours']:.1f} h")
        if "peak_gpu_memory_gib" in row:
            print(f"  peak GPU memory: {row['peak_gpu_memory_gib']:.1f} GiB")


if __name__ == "__main__":
    main()
