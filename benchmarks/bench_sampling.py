"""Sequence-sampling throughput and loading memory: lqv-d4rl samplers vs a DreamerV2-style replay.

Generates its own data: ``--episodes`` episodes of ``--length`` entries with 64x64x3 frames (a
drifting low-frequency pattern plus noise, so that gzip compresses it a few times, like real
frames), written once with ShardWriter (HDF5 shards) and once as one compressed .npz per episode
(what DreamerV2 / V-D4RL / SeMOPO store). Then, pinned to one CPU core with numpy/torch threads
set to 1, it measures:

* batches/s of 64 x 50 sequences from RAM: our ``random``, ``conservative`` and
  ``return_curriculum`` samplers (default: the arrays of batches nobody holds any more are
  reused), ``random`` with fresh arrays for every batch (``recycle=False``) and filling one
  batch in place (``sample(out=...)``), and the npz replay loaded as DreamerV2's ``load_episodes`` does
  (a dict of per-episode arrays) and sampled as its ``_sample_sequence`` / ``_generate_chunks`` do
  (pick an episode, pick a start, slice and convert each key, per-sample dicts stacked into a
  batch); also a minimal npz replay (slice + stack, no conversions) as the strongest baseline;
* the TransitionSampler (256 frame-stacked transitions) and lazy sampling from compressed shards;
* the peak resident memory (VmHWM, else ru_maxrss) of a fresh subprocess that only loads the dataset, against
  the uncompressed dataset size and against a subprocess that only imports the libraries.

Usage: ``python benchmarks/bench_sampling.py [--episodes 200] [--batches 300] [--workdir DIR]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

STEP_KEYS = ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal")


# ----------------------------------------------------------------------------------------------
# Data generation
# ----------------------------------------------------------------------------------------------


def synthetic_episode(length, action_dim, seed):
    """One episode in the step-dict convention with compressible, moving 64x64x3 frames."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    pattern = np.kron(coarse, np.ones((8, 8, 1), np.float32))  # 64x64x3 blocks
    shifts = np.cumsum(rng.integers(-1, 2, length))
    columns = (np.arange(64)[None, :] + shifts[:, None]) % 64
    image = pattern[:, columns].transpose(1, 0, 2, 3)  # (L, 64, 64, 3), drifting sideways
    noisy = rng.random(image.shape) < 0.05  # sparse noise: gzip still compresses ~5x
    image[noisy] += rng.integers(0, 32, int(noisy.sum()))
    action = rng.uniform(-1, 1, (length, action_dim)).astype(np.float32)
    reward = rng.random(length).astype(np.float32)
    action[0], reward[0] = 0, 0
    t = np.arange(length)
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "action": action,
        "reward": reward,
        "discount": np.ones(length, np.float32),
        "is_first": t == 0,
        "is_last": t == length - 1,
        "is_terminal": np.zeros(length, bool),
    }


def written_before(h5_folder, npz_folder, episodes):
    """True if a kept --workdir already holds both copies of ``episodes`` episodes."""
    manifest = h5_folder / "manifest.json"
    if not manifest.exists() or not npz_folder.is_dir():
        return False
    recorded = json.loads(manifest.read_text())
    return (recorded.get("complete") and recorded.get("num_episodes") == episodes
            and len(list(npz_folder.glob("*.npz"))) == episodes)


def write_datasets(workdir, episodes, length, action_dim, policies):
    """Write the HDF5 dataset and the per-episode .npz folder; returns (h5 folder, npz folder).

    A --workdir that already holds them (same number of episodes) is reused as it is.
    """
    from lqv_d4rl.format import ShardWriter

    h5_folder, npz_folder = workdir / "walker_walk-medrep", workdir / "npz"
    if written_before(h5_folder, npz_folder, episodes):
        return h5_folder, npz_folder
    npz_folder.mkdir(parents=True, exist_ok=True)
    options = dict(dataset_id="walker_walk-medrep", task="walker_walk", level="medrep",
                   action_dim=action_dim, provenance={"benchmark": "bench_sampling"})
    with ShardWriter(h5_folder, **options) as writer:
        for e in range(episodes):
            steps = synthetic_episode(length, action_dim, seed=e)
            policy = e * policies // episodes
            writer.add_episode(steps, policy_id=f"ckpt-{policy:03d}", policy_step=1000 * policy, seed=e)
            np.savez_compressed(npz_folder / f"episode-{e:05d}-{length - 1}.npz", **steps)
    return h5_folder, npz_folder


# ----------------------------------------------------------------------------------------------
# The DreamerV2-style replay (re-implemented from the behaviour of its replay.py)
# ----------------------------------------------------------------------------------------------


def load_npz_episodes(folder):
    """Filename -> dict of arrays, as DreamerV2's ``load_episodes`` builds it (eagerly decoded)."""
    episodes = {}
    for filename in sorted(pathlib.Path(folder).glob("*.npz")):
        with filename.open("rb") as file:
            data = np.load(file)
            episodes[str(filename)] = {key: data[key] for key in data.keys()}
    return episodes


def dreamer_convert(value):
    """DreamerV2's ``convert``: a copy, cast to float32 / int32 / uint8."""
    value = np.array(value)
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32)
    if np.issubdtype(value.dtype, np.signedinteger):
        return value.astype(np.int32)
    if np.issubdtype(value.dtype, np.uint8):
        return value.astype(np.uint8)
    return value


class DreamerStyleReplay:
    """Sequence batches the way DreamerV2's replay makes them (minlen = maxlen = seq_len)."""

    def __init__(self, episodes, seq_len, seed):
        self.episodes = list(episodes.values())
        self.seq_len = seq_len
        self.random = np.random.RandomState(seed)

    def sample_sequence(self):
        episode = self.episodes[self.random.randint(len(self.episodes))]
        total = len(episode["action"])
        length = min(total, self.seq_len)
        index = min(self.random.randint(total - length + 1), total - length)
        sequence = {key: dreamer_convert(value[index : index + length]) for key, value in episode.items()}
        sequence["is_first"] = np.zeros(length, bool)
        sequence["is_first"][0] = True
        return sequence

    def sample_chunk(self):
        # _generate_chunks: with minlen = maxlen = seq_len one sequence fills one chunk
        sequence = self.sample_sequence()
        return {key: np.concatenate([value[: self.seq_len]]) for key, value in sequence.items()}

    def sample(self, batch_size):
        chunks = [self.sample_chunk() for _ in range(batch_size)]
        return {key: np.stack([chunk[key] for chunk in chunks]) for key in chunks[0]}


class MinimalNpzReplay:
    """The same per-episode dicts, sampled with the fewest copies: slice views, then one stack."""

    def __init__(self, episodes, seq_len, seed):
        self.episodes = list(episodes.values())
        self.seq_len = seq_len
        self.random = random.Random(seed)

    def sample(self, batch_size):
        samples = []
        for _ in range(batch_size):
            episode = self.episodes[self.random.randrange(len(self.episodes))]
            start = self.random.randrange(len(episode["action"]) - self.seq_len + 1)
            samples.append({key: value[start : start + self.seq_len] for key, value in episode.items()})
        return {key: np.stack([sample[key] for sample in samples]) for key in samples[0]}


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


def best_rates(draws, batches, rounds):
    """Batches/s of each ``draws[label]()``: the best of ``rounds`` interleaved rounds.

    Interleaving the samplers round by round, and keeping each one's best round, makes the
    figures comparable on a machine whose other load changes during the run.
    """
    for draw in draws.values():
        draw()  # warm-up: first-touch costs, lazy file opening
    per_round = max(1, batches // rounds)
    best = dict.fromkeys(draws, 0.0)
    for _ in range(rounds):
        for label, draw in draws.items():
            begin = time.perf_counter()
            for _ in range(per_round):
                draw()
            best[label] = max(best[label], per_round / (time.perf_counter() - begin))
    return best


LOAD_SCRIPTS = {
    "imports only": "import numpy, h5py, lqv_d4rl.dataset",
    "load_dataset (RAM)": "import lqv_d4rl.dataset as d; d.load_dataset({path!r}, verify=False)",
    "npz dicts (DreamerV2)": "import sys; sys.path.insert(0, {here!r}); import bench_sampling as b; "
    "b.load_npz_episodes({npz!r})",
}


PEAK_RSS_CODE = """
try:
    # VmHWM is this process's own high-water mark; ru_maxrss would also count the memory of the
    # benchmark process it was forked from (Linux carries it across exec)
    peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]
    print(int(peak.split()[1]) * 1024)
except OSError:
    import resource
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss_bytes(script):
    """Peak resident memory (bytes) of a fresh Python process that runs ``script`` and exits."""
    begin = time.perf_counter()
    output = subprocess.run([sys.executable, "-c", script + "\n" + PEAK_RSS_CODE], check=True,
                            capture_output=True, text=True)
    return int(output.stdout.strip().splitlines()[-1]), time.perf_counter() - begin


def pin_to_one_core():
    """Run this process on one CPU (the first it may use); returns its number or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--length", type=int, default=501, help="entries per episode")
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--policies", type=int, default=20, help="behaviour policies (conservative mode)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--batches", type=int, default=300, help="timed batches per sampler")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best kept)")
    parser.add_argument("--lazy-batches", type=int, default=5)
    parser.add_argument("--workdir", type=pathlib.Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the written data")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write results here")
    return parser.parse_args()


def main():
    args = parse_args()
    import torch

    torch.set_num_threads(1)
    core = pin_to_one_core()
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.samplers import TransitionSampler, make_sequence_sampler

    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="bench_sampling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"episodes": args.episodes, "length": args.length, "core": core}
    try:
        begin = time.perf_counter()
        h5_folder, npz_folder = write_datasets(workdir, args.episodes, args.length, args.action_dim, args.policies)
        results["write_s"] = time.perf_counter() - begin
        results["h5_bytes"] = sum(p.stat().st_size for p in h5_folder.iterdir())
        results["npz_bytes"] = sum(p.stat().st_size for p in npz_folder.iterdir())

        begin = time.perf_counter()
        dataset = load_dataset(h5_folder, verify=False)
        results["load_h5_s"] = time.perf_counter() - begin
        uncompressed = sum(getattr(dataset, name).nbytes for name in
                           ("images", "actions", "rewards", "discounts", "is_first", "is_last", "is_terminal"))
        results["uncompressed_bytes"] = uncompressed
        begin = time.perf_counter()
        npz_episodes = load_npz_episodes(npz_folder)
        results["load_npz_s"] = time.perf_counter() - begin

        size = dict(batch_size=args.batch_size, seq_len=args.seq_len, seed=0)
        draws = {}
        for mode in ("random", "conservative", "return_curriculum"):
            draws[f"lqv {mode}"] = make_sequence_sampler(dataset, mode, **size).sample
        # off on free-threaded Python builds, where reference counts cannot tell a free batch
        results["recycling"] = make_sequence_sampler(dataset, "random", **size).recycler.enabled
        draws["lqv random, recycle=False (fresh arrays)"] = make_sequence_sampler(
            dataset, "random", recycle=False, **size).sample
        reusing = make_sequence_sampler(dataset, "random", recycle=False, **size)
        buffer = reusing.empty_batch()
        draws["lqv random, sample(out=buffer)"] = lambda: reusing.sample(out=buffer)
        dreamer = DreamerStyleReplay(npz_episodes, args.seq_len, seed=0)
        draws["DreamerV2-style npz replay"] = lambda: dreamer.sample(args.batch_size)
        minimal = MinimalNpzReplay(npz_episodes, args.seq_len, seed=0)
        draws["minimal npz replay (slice+stack)"] = lambda: minimal.sample(args.batch_size)
        draws["lqv transitions (256 x stack 3)"] = TransitionSampler(dataset, batch_size=256, seed=0).sample
        rates = best_rates(draws, args.batches, args.rounds)
        del npz_episodes, dreamer, minimal, dataset, draws, reusing, buffer
        lazy = load_dataset(h5_folder, lazy=True, verify=False)
        lazy_sampler = make_sequence_sampler(lazy, "random", **size)
        rates.update(best_rates({"lqv random, lazy (gzip HDF5)": lazy_sampler.sample}, args.lazy_batches, 1))
        results["batches_per_s"] = rates

        here = str(pathlib.Path(__file__).resolve().parent)
        memory = {}
        for label, script in LOAD_SCRIPTS.items():
            memory[label] = peak_rss_bytes(script.format(path=str(h5_folder), npz=str(npz_folder), here=here))
        results["peak_rss"] = {label: value for label, (value, _) in memory.items()}
        print_report(results, args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def print_report(results, args):
    """Print the throughput and memory tables with ratios."""
    mib = 2**20
    print(f"\nbatches/s: best of {args.rounds} interleaved rounds of {args.batches // args.rounds} batches")
    print(f"{results['episodes']} episodes x {results['length']} entries, 64x64x3 frames; "
          f"batches of {args.batch_size} x {args.seq_len}; one core (cpu {results['core']}), 1 thread")
    print(f"uncompressed {results['uncompressed_bytes'] / mib:.0f} MiB; HDF5 shards "
          f"{results['h5_bytes'] / mib:.0f} MiB; npz files {results['npz_bytes'] / mib:.0f} MiB; "
          f"written in {results['write_s']:.0f} s; load into RAM: HDF5 {results['load_h5_s']:.1f} s, "
          f"npz {results['load_npz_s']:.1f} s")
    print(f"batch recycling (reuse of batches nobody holds): {'on' if results['recycling'] else 'OFF'}")
    rates = results["batches_per_s"]
    dreamer = rates["DreamerV2-style npz replay"]
    minimal = rates["minimal npz replay (slice+stack)"]
    print(f"\n{'sampler':40s} {'batches/s':>10s} {'vs DV2 replay':>14s} {'vs minimal':>11s}")
    for label, rate in rates.items():
        if label.startswith("lqv transitions"):  # another kind of batch: no ratio
            print(f"{label:40s} {rate:10.1f} {'-':>14s} {'-':>11s}")
        else:
            print(f"{label:40s} {rate:10.1f} {rate / dreamer:13.2f}x {rate / minimal:10.2f}x")
    peaks = results["peak_rss"]
    base = peaks["imports only"]
    size = results["uncompressed_bytes"]
    minus = "minus 'imports only'"
    print(f"\n{'peak RSS of a fresh process':40s} {'MiB':>8s} {'/ uncompressed':>15s} {minus:>22s}")
    for label, peak in peaks.items():
        print(f"{label:40s} {peak / mib:8.0f} {peak / size:14.2f}x {(peak - base) / size:21.2f}x")


if __name__ == "__main__":
    main()
