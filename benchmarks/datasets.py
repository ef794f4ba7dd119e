"""Make a task's three datasets with the full-size CPU recipe and check them against Table 3.

Runs ``lqv-d4rl generate TASK --behaviour sac-state --preset cpu`` (in this process, same code
path), times each phase, prints the return statistics next to the paper's and the fidelity
verdicts of every level (lqv_d4rl.fidelity), writes them with the command, the commit and the
machine to ``<out>/<task>.json``, and exits with status 1 when a statistic is outside its
tolerance. An interrupted run resumes when started again with the same arguments (the phases it
skipped are then missing from the timings).

Usage: ``python benchmarks/datasets.py walker_walk [--root R] [--render-workers 2] [--seed 0]
[--out docs/datasets] [--levels random,medrep,medium] [--max-env-steps N]
[--record-closest-medium] [--set FIELD=JSON ...]`` (``--levels``: make and check only these,
e.g. the levels a run still searching for its medium snapshot has recorded already;
``--max-env-steps`` and ``--record-closest-medium``: as for ``lqv-d4rl generate``; ``--set``:
an experiment's change to the cpu preset's recipe, e.g. ``--set training_shaping=5`` or, for a
field of its SAC settings, ``--set sac.init_alpha=1.0``).
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import lqv_d4rl  # noqa: F401  (pins the CPU kernels before torch starts)
from collectors.generate import generate, summarize
from collectors.sac import SACConfig
from collectors.state_recipe import StateRecipe, state_recipe
from lqv_d4rl.cli.hints import kept_by_generate, resume_hint_on_interrupt
from lqv_d4rl.cpu_kernels import kernel_settings
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.errors import DatasetExistsError
from lqv_d4rl.fidelity import all_passed
from lqv_d4rl.registry import dataset_path
from lqv_d4rl.stats import return_statistics
from lqv_d4rl.tasks import LEVELS
from run_info import git_commit


def machine():
    """The CPU and load this ran on (the figures' context)."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_end": os.getloadavg(), "cpu_kernels": kernel_settings()}


def run(task, root, render_workers, seed, changes=None, max_env_steps=None, levels=LEVELS,
        record_closest_medium=False):
    """Generate (or resume, or find finished) the task's ``levels``; the GenerateResult.
    ``changes``: StateRecipe fields set on top of the cpu preset (an experiment's recipe);
    ``max_env_steps``: the training run's budget (default: the preset's);
    ``record_closest_medium``: as for :func:`collectors.generate.generate`."""
    recipe = apply_changes(state_recipe(task, "cpu"), changes) if changes else None
    try:
        return generate(task, levels=list(levels), root=root, behaviour="sac-state",
                        preset="cpu", recipe=recipe, workers=render_workers, seed=seed,
                        max_env_steps=max_env_steps,
                        record_closest_medium=record_closest_medium)
    except DatasetExistsError:  # all of them finished: check them as they are
        folders = {level: dataset_path(f"{task}-{level}", root) for level in levels}
        return summarize(task, folders, None, progress=True)


def report(task, result, wall_seconds, args):
    """The JSON record of one run."""
    levels = {}
    for level, folder in result.folders.items():
        data = load_dataset(folder, lazy=True)
        levels[level] = {
            "statistics": return_statistics(data.returns),
            "policies": len(data.policies()),
            "verdicts": [verdict.to_dict() for verdict in result.verdicts[level]]}
        data.close()
    command = (f"python benchmarks/datasets.py {task} --render-workers {args.render_workers} "
               f"--seed {args.seed}"
               + (f" --levels {','.join(args.levels)}" if args.levels != list(LEVELS) else "")
               + (f" --max-env-steps {args.max_env_steps}" if args.max_env_steps else "")
               + (" --record-closest-medium" if args.record_closest_medium else "")
               + "".join(f" --set {item}" for item in args.set))
    return {"task": task, "command": command, "commit": git_commit(), "machine": machine(),
            "wall_seconds_this_call": wall_seconds, "phase_seconds_this_call": result.timings,
            "faithful": result.faithful, "levels": levels}


def levels_argument(text):
    """``--levels``: comma-separated dataset levels, in the order of :data:`LEVELS`."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    if not names or names - set(LEVELS):
        raise argparse.ArgumentTypeError(f"{text!r}: the levels are {', '.join(LEVELS)}")
    return [level for level in LEVELS if level in names]


def recipe_changes(items):
    """``FIELD=JSON`` strings as a dict of StateRecipe fields, ``sac.FIELD`` naming a field of
    its SACConfig (unknown fields are refused)."""
    fields = {field.name for field in dataclasses.fields(StateRecipe)}
    fields |= {f"sac.{field.name}" for field in dataclasses.fields(SACConfig)}
    changes = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise SystemExit(f"--set {item!r}: expected FIELD=JSON with FIELD one of the "
                             f"StateRecipe fields or sac.FIELD of its SACConfig "
                             f"({', '.join(sorted(fields))})")
        try:
            changes[name] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(f"--set {item!r}: {value!r} is not JSON (a number, true/false, "
                             "a quoted string or a list)") from None
    return changes


def apply_changes(recipe, changes):
    """``recipe`` with :func:`recipe_changes`' fields set (``sac.FIELD`` on its SACConfig)."""
    sac = {name[len("sac."):]: value for name, value in changes.items() if name.startswith("sac.")}
    fields = {name: value for name, value in changes.items() if not name.startswith("sac.")}
    return dataclasses.replace(recipe, sac=dataclasses.replace(recipe.sac, **sac), **fields)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="walker_walk, cheetah_run, hopper_hop, humanoid_walk or "
                                     "car_racing")
    parser.add_argument("--root", default=None, help="dataset root (default: $LQV_D4RL_ROOT)")
    parser.add_argument("--render-workers", type=int, default=2, help="render processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/datasets", help="folder of the JSON record")
    parser.add_argument("--levels", type=levels_argument, default=list(LEVELS),
                        help="comma-separated levels to make and check (default: all three)")
    parser.add_argument("--max-env-steps", type=int, default=None,
                        help="the training run's budget in environment steps (default: the "
                             "preset's); a run that spent a smaller one goes on")
    parser.add_argument("--record-closest-medium", action="store_true",
                        help="when the budget is spent unmatched, record the closest medium "
                             "candidate (its verdicts show the miss) instead of stopping")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="a StateRecipe field on top of the cpu preset, e.g. "
                             "training_shaping=5, or sac.FIELD of its SACConfig (an "
                             "experiment: its datasets' provenance says so, and a run with "
                             "other settings will not resume it)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with resume_hint_on_interrupt(kept_by_generate(args.root)):
        result = run(args.task, args.root, args.render_workers, args.seed,
                     recipe_changes(args.set), args.max_env_steps, args.levels,
                     args.record_closest_medium)
    record = report(args.task, result, time.perf_counter() - start, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.task}.json").write_text(json.dumps(record, indent=1))
    print(f"\nphases (s): {json.dumps({k: round(v) for k, v in result.timings.items()})}")
    print(f"wrote {out / (args.task + '.json')}")
    line, status = outcome(args.task, args.levels, result.verdicts)
    print(line)
    return status


def outcome(task, levels, verdicts):
    """The closing line and exit status: FAILED naming the levels that missed a tolerance
    (``verdicts``: level -> its fidelity verdicts), status 1; else PASSED, status 0."""
    missed = [f"{task}-{level}" for level in levels if not all_passed(verdicts[level])]
    if missed:
        return (f"FAILED: {', '.join(missed)} {'misses' if len(missed) == 1 else 'miss'} "
                f"Table 3's tolerances (see the table above)"), 1
    checked = ", ".join(f"{task}-{level}" for level in levels)
    return f"PASSED: {checked} lie within Table 3's tolerances", 0


if __name__ == "__main__":
    sys.exit(main())
