"""Throughput of DreamerV2-size world-model and behaviour updates (lqv_d4rl.networks).

Model: CNN depth 48, deter 200, 32 x 32 categorical latent, hidden 200, dense 400 (the SeMOPO /
DreamerV2 sizes), on random 64x64 sequences. Rows: batch 16 x 50 and the paper's 64 x 50; on CPU
with 1 torch thread and with all cores; on CUDA (when present) in float32 and under autocast
(bfloat16, float16). A "behaviour" row times one ActorCritic update imagining 5 steps from every
posterior state of the batch (the offline methods' setting).

    python benchmarks/bench_networks.py            # full table
    python benchmarks/bench_networks.py --quick    # batch 16 x 50 only, one timed update
"""

import argparse
import os
import time

import torch

from lqv_d4rl.networks import (
    ActorCritic,
    BehaviorConfig,
    WorldModel,
    WorldModelConfig,
    count_parameters,
    flatten_states,
)
from lqv_d4rl.synthetic import noise_batch, to_torch

ACTION_DIM = 6  # walker


def random_batch(batch, length, device, seed=0):
    """Noise images, actions and rewards shaped like a sampler batch, on ``device``."""
    return to_torch(noise_batch(batch, length, ACTION_DIM, seed), device)


def synchronize(device):
    """Wait for queued CUDA work (no-op on CPU), so that timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_updates(update, device, warmup, repeats):
    """Seconds per call of ``update`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        update()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        update()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def measure(batch, length, device, precision, ensemble, warmup, repeats):
    """(world-model seconds/update, behaviour seconds/update, parameter count) for one setting."""
    torch.manual_seed(0)
    config = WorldModelConfig(depth=48, deter=200, stoch=32, classes=32, hidden=200, units=400,
                              ensemble=ensemble, precision=precision, seed=0)
    model = WorldModel(ACTION_DIM, config, device=device)
    agent = ActorCritic(model.rssm.feature_dim, ACTION_DIM,
                        BehaviorConfig(horizon=5, precision=precision), device=device)
    data = random_batch(batch, length, device)
    posterior = {}

    def model_update():
        posterior["state"], _ = model.train_step(data)

    def behaviour_update():
        agent.train_step(flatten_states(posterior["state"]), model.imagine, model.reward)

    model_seconds = time_updates(model_update, device, warmup, repeats)
    behaviour_seconds = time_updates(behaviour_update, device, warmup, repeats)
    return model_seconds, behaviour_seconds, count_parameters(model)


def settings(args):
    """(device, threads, precision) rows to measure."""
    rows = [("cpu", 1, "float32")]
    cores = os.cpu_count() or 1
    if cores > 1 and not args.quick:
        rows.append(("cpu", cores, "float32"))
    if torch.cuda.is_available():
        for precision in ("float32", "bfloat16", "float16"):
            rows.append(("cuda", None, precision))
    return rows


def main():
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 16x50 only, 1 thread, one timed update")
    parser.add_argument("--ensemble", type=int, default=1, help="prior heads (7 for Offline DV2 / SeMOPO)")
    args = parser.parse_args()
    batches = [(16, 50)] if args.quick else [(16, 50), (64, 50)]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, "
          f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, "
          f"ensemble {args.ensemble}")
    header = f"{'device':<6} {'threads':>7} {'precision':<9} {'batch':>6} {'model s/upd':>11} " \
             f"{'model upd/s':>11} {'behav s/upd':>11} {'behav upd/s':>11}"
    print(header)
    print("-" * len(header))
    for device_name, threads, precision in settings(args):
        device = torch.device(device_name)
        if threads is not None:
            torch.set_num_threads(threads)
        cpu = device.type == "cpu"
        warmup, repeats = (1, 1 if args.quick else 2) if cpu else (3, 10)
        for batch, length in batches:
            model_s, behaviour_s, parameters = measure(batch, length, device, precision, args.ensemble,
                                                       warmup, repeats)
            print(f"{device_name:<6} {threads or '-':>7} {precision:<9} {f'{batch}x{length}':>6} "
                  f"{model_s:>11.3f} {1 / model_s:>11.2f} {behaviour_s:>11.3f} {1 / behaviour_s:>11.2f}",
                  flush=True)
    print(f"world-model parameters: {parameters:,}")


if __name__ == "__main__":
    main()
