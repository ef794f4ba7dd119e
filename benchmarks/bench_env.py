"""Agent steps per second of the environments on one CPU core, four ways per task.

    (a) dm_control defaults: ``physics.render(64, 64, camera_id=0)`` with dm_control's own render
        settings (4x multisampling, 2048 shadow map), a new scene per frame
    (b) ``make_env(task, distractor=None)``: our fast render, no background video
    (c) ``make_env(task)``: the full observation pipeline, procedural driving video behind the agent
        with exact segmentation compositing
    (d) our fast render plus DBC-style compositing: frames converted to float64, the blue-dominance
        mask built with float comparisons (the way the DBC / TIA code does it)

Every agent step is two environment steps with a random action plus one 64x64 observation. One
core: numpy's thread pools and Mesa's llvmpipe render threads are off (``LP_NUM_THREADS=0`` renders
in the calling thread). Rates are given per second of process CPU time (robust on a shared machine)
and per second of wall-clock time. Each mode runs ``--repeats`` short timed runs of ``--steps``
agent steps, interleaved with the other modes so that all of them see the same machine load, and
the best run counts (as in ``timeit``). Usage::

    python benchmarks/bench_env.py                      # all DMC tasks, 15 runs of 50 steps
    python benchmarks/bench_env.py --quick              # 4 runs of 25 steps
    python benchmarks/bench_env.py --tasks walker_walk --steps 100 --repeats 30
"""

import os

# One core: set before numpy, MuJoCo and Mesa start their thread pools.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ["LP_NUM_THREADS"] = "0"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import distractors  # noqa: E402
import lqv_d4rl  # noqa: E402,F401  (sets MUJOCO_GL before dm_control is imported)
from lqv_d4rl.envs import derive_seed, make_env  # noqa: E402
from lqv_d4rl.tasks import TASKS, get_task  # noqa: E402

DMC_TASKS = [name for name, spec in TASKS.items() if spec.kind == "dmc"]
MODES = {
    "a": "dm_control default render",
    "b": "fast render, no video",
    "c": "fast render + video (segmentation)",
    "d": "fast render + DBC float64 composite",
}
SEED = 0


def dbc_style_composite(render, background):
    """The DBC / TIA way: float64 images, mask from float comparisons, copy, back to uint8."""
    image = render.astype(np.float64)
    background = np.repeat(background.astype(np.float64), 3 // background.shape[2], axis=2)
    mask = np.logical_and(image[:, :, 2] > image[:, :, 1], image[:, :, 2] > image[:, :, 0])
    image[mask] = background[mask]
    return image.astype(np.uint8)


def dm_control_default_stepper(task):
    """Mode (a): a plain dm_control env, rendered with physics.render and default settings."""
    from dm_control import suite

    spec = get_task(task)
    env = suite.load(spec.domain, spec.task, task_kwargs={"random": SEED})
    rng = np.random.default_rng(SEED)
    shape = env.action_spec().shape
    env.reset()

    def step():
        action = rng.uniform(-1.0, 1.0, shape)
        for _ in range(spec.action_repeat):
            time_step = env.step(action)
        if time_step.last():
            env.reset()
        return env.physics.render(64, 64, camera_id=spec.camera_id)

    return step


def lqv_env_stepper(task, **env_options):
    """Modes (b) and (c): our environment, reset whenever an episode ends."""
    env = make_env(task, seed=SEED, **env_options)
    rng = np.random.default_rng(SEED)
    env.reset()

    def step():
        action = rng.uniform(-1.0, 1.0, env.action_space.shape)
        observation, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        return observation

    return step


def dbc_composite_stepper(task):
    """Mode (d): our undistracted env, background frames composited the DBC way."""
    render_step = lqv_env_stepper(task, distractor=None)
    pool = distractors.procedural_driving_video(seed=SEED)
    player = distractors.BackgroundPlayer(pool, seed=derive_seed(SEED, 1))
    player.reset()

    def step():
        render = render_step()
        index = player.next_frame()[1]
        return dbc_style_composite(render, pool.frames[index])

    return step


STEPPERS = {
    "a": dm_control_default_stepper,
    "b": lambda task: lqv_env_stepper(task, distractor=None),
    "c": lambda task: lqv_env_stepper(task),
    "d": dbc_composite_stepper,
}


def steps_per_second(step, steps):
    """Run ``step`` ``steps`` times; return agent steps per CPU second and per wall second."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return {"cpu": steps / (time.process_time() - cpu_start),
            "wall": steps / (time.perf_counter() - wall_start)}


def benchmark_task(task, *, steps, repeats, warmup=10):
    """Best CPU and wall steps/s of every mode for ``task``, repeats interleaved across modes."""
    steppers = {mode: make_stepper(task) for mode, make_stepper in STEPPERS.items()}
    for step in steppers.values():
        steps_per_second(step, warmup)
    best = {clock: dict.fromkeys(steppers, 0.0) for clock in ("cpu", "wall")}
    for _ in range(repeats):
        for mode, step in steppers.items():
            for clock, rate in steps_per_second(step, steps).items():
                best[clock][mode] = max(best[clock][mode], rate)
    return best


def composite_microseconds(repeats=2000):
    """Time of one 64x64 composite: ours (uint8, exact mask given) vs DBC-style float64."""
    rng = np.random.default_rng(SEED)
    render = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)
    mask = rng.random((64, 64)) < 0.9
    pool = distractors.VideoPool(gray[None], np.zeros(1, np.int32))
    candidates = {
        "ours, segmentation (incl. gray->RGB)": lambda: distractors.composite_segmentation(
            render, mask, pool.frame_rgb(0)),
        "ours, color rule (incl. gray->RGB)": lambda: distractors.composite_color(
            render, pool.frame_rgb(0)),
        "DBC-style float64 color rule": lambda: dbc_style_composite(render, gray),
    }
    timings = {}
    for name, composite in candidates.items():
        start = time.perf_counter()
        for _ in range(repeats):
            composite()
        timings[name] = (time.perf_counter() - start) / repeats * 1e6
    return timings


def print_table(results, clock):
    """Print steps/s per task and mode on ``clock``, and the ratios the targets are stated in."""
    header = (f"{'task':<14}" + "".join(f"{'(' + mode + ')':>9}" for mode in MODES)
              + f"{'c/a':>8}{'c vs b':>9}{'d vs b':>9}")
    print(f"agent steps per {clock} second (one core; 2 env steps + one 64x64 observation each)")
    print(header)
    print("-" * len(header))
    for task, rates in results.items():
        best = rates[clock]
        print(f"{task:<14}" + "".join(f"{best[mode]:>9.1f}" for mode in MODES)
              + f"{best['c'] / best['a']:>7.2f}x"
              + f"{_percent_slower(best['c'], best['b']):>9}"
              + f"{_percent_slower(best['d'], best['b']):>9}")
    print("'c vs b' / 'd vs b': extra time per agent step over (b); targets: c/a >= 3x, "
          "c vs b <= +10%")
    print()


def _percent_slower(rate, reference_rate):
    """Extra time per step of ``rate`` relative to ``reference_rate``, as a signed percentage."""
    return f"{(reference_rate / rate - 1.0) * 100:+.1f}%"


def main(argv=None):
    """Parse arguments, run the benchmark, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DMC_TASKS, choices=DMC_TASKS,
                        help="dm_control tasks to measure (default: all four)")
    parser.add_argument("--steps", type=int, default=50, help="agent steps per timed run")
    parser.add_argument("--repeats", type=int, default=15,
                        help="timed runs per mode, interleaved across modes (best counts)")
    parser.add_argument("--quick", action="store_true", help="4 runs of 25 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 25, 4
    results = {}
    for task in args.tasks:
        results[task] = benchmark_task(task, steps=args.steps, repeats=args.repeats)
        print(f"measured {task}", flush=True)
    print()
    for mode, description in MODES.items():
        print(f"({mode}) {description}")
    print()
    print_table(results, "cpu")
    print_table(results, "wall")
    print("one 64x64 composite, microseconds")
    for name, microseconds in composite_microseconds().items():
        print(f"  {name:<40}{microseconds:8.1f}")


if __name__ == "__main__":
    main()
