"""CLI verbs: ``train ALGO DATASET``, ``evaluate RUN_DIR``, ``analyse RUN_DIR`` and the short form
``semopo DATASET`` (= ``train semopo DATASET``).

The options of ``train ALGO`` are generated from the algorithm's config dataclass: every field
becomes ``--field-name`` with its docstring as help, next to the options every algorithm shares.
Algorithms are looked up in :mod:`lqv_d4rl.algorithms` and imported only when their command is
built, so ``lqv-d4rl --help`` loads no algorithm and no torch.
"""

import dataclasses
import json
from pathlib import Path

import click

from ..errors import DatasetNotFoundError
from .cpu_guard import ALLOW_FLAG, ALLOW_HELP, confirm_long_cpu_run
from .hints import not_found_error
from .options import ROOT_DEFAULT, ROOT_HELP, check_device_name, deprecated_alias

SHORT_FORMS = {"semopo": "semopo"}
"""Top-level verbs that are ``train NAME``."""


# ---------------------------------------------------------------------------------- options


def _common_options(command, presets, field_names):
    """Add the options every ``train ALGO`` command has (those not named like a config field)."""
    options = [
        click.option("--preset", type=click.Choice(list(presets)), default=None,
                     show_default="paper on a CUDA device, smoke on a CPU",
                     help="Named config of the algorithm (a paper-size run is a GPU job)."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Set a config field (repeatable), e.g. --set penalty_lambda=5."),
        click.option("--device", default=None, callback=check_device_name,
                     show_default="cuda if there is one, else cpu",
                     help="Torch device: cpu, cuda or cuda:N."),
        click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
                     help="Seeds the whole run (initialization, sampling, evaluation)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     show_default="runs/<algo>/<dataset>-seed<seed>", help="Run folder."),
        click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help=ROOT_HELP),
        click.option("--resume", is_flag=True, help="Continue the unfinished run in --out."),
        click.option("--overwrite", is_flag=True, help="Replace the run in --out (finished or not)."),
        click.option("--eval-episodes", type=click.IntRange(min=1), default=None,
                     show_default="the config's eval_episodes", help="Evaluation episodes."),
        click.option("--eval-workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Processes that play evaluation episodes in parallel."),
        click.option("--rgb-background", is_flag=True,
                     help="Also evaluate over colour backgrounds (the paper's Table 2); writes "
                          "eval_rgb.json."),
        click.option("--video-dir", default=None,
                     help="Where the dataset's background videos are, if not at the path its "
                          "manifest records; 'procedural' for an imported dataset."),
        click.option("--no-analysis", is_flag=True, help="Skip the algorithm's analysis files."),
        click.option("--stop-after", type=click.IntRange(min=1), default=None,
                     help="Stop (checkpointed) after this many updates; finish with --resume."),
        click.option("--deterministic", is_flag=True,
                     help="CUDA: deterministic kernels (slower), so a seed repeats its run on the "
                          "same GPU and software. CPU runs repeat anyway."),
        click.option(ALLOW_FLAG, is_flag=True, help=ALLOW_HELP),
    ]
    for option in reversed(options):
        dest = option(lambda: None).__click_params__[0].name
        if dest not in field_names:
            command = option(command)
    return command


def _field_option(field, kind, doc, default_text):
    """A click option for one config field; its value is None unless given (the preset's value is
    used then), and its help shows ``default_text``, the presets' values."""
    name = "--" + field.name.replace("_", "-")
    help_text = " ".join((doc or "").replace("``", "").split()) or None
    shown = {"default": None, "help": help_text, "show_default": default_text}
    if kind is bool:
        return click.option(f"{name}/--no-{name[2:]}", field.name, **shown)
    if kind in (int, float, str):
        return click.option(name, field.name, type=kind, **shown,
                            metavar={str: "TEXT", int: "INTEGER", float: "NUMBER"}[kind])
    # optional values, dicts and lists: parsed like --set, so "none" and JSON work
    return click.option(name, field.name, type=str, **shown, metavar="VALUE",
                        callback=_parse_later)


def preset_defaults(algorithm):
    """``{field: "its default"}`` for ``train ALGO --help``: the value every preset gives a field,
    or the presets' values where they differ (default preset first, presets with the same value
    together), e.g. ``paper, released: 64; smoke: 8``. Per-task changes are not listed."""
    presets = sorted(algorithm.presets, key=lambda name: name != algorithm.default_preset)
    configs = {preset: dataclasses.asdict(algorithm.config(preset)) for preset in presets}
    texts = {}
    for field in dataclasses.fields(algorithm.config_class):
        by_value = {}
        for preset in presets:
            by_value.setdefault(_shown_value(configs[preset][field.name]), []).append(preset)
        if len(by_value) == 1:
            texts[field.name] = next(iter(by_value))
        else:
            texts[field.name] = "; ".join(f"{', '.join(names)}: {value}"
                                          for value, names in by_value.items())
    return texts


def _shown_value(value):
    """A config value as one would type it after ``--set field=``."""
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


class _Unparsed(str):
    """A field value to parse by the config's own type rules (``apply_settings``)."""


def _parse_later(ctx, param, value):
    return None if value is None else _Unparsed(value)


def build_train_command(name, command_name=None):
    """The click command ``train NAME`` (or the short form ``command_name``) for algorithm ``name``."""
    from .. import algorithms

    algorithm = algorithms.get(name)
    docs = algorithms.field_docs(algorithm.config_class)
    kinds = algorithms.field_types(algorithm.config_class)
    fields = dataclasses.fields(algorithm.config_class)
    defaults = preset_defaults(algorithm)

    def callback(dataset, **values):
        common = {key: values.pop(key) for key in list(values) if key not in kinds}
        common.setdefault("eval_episodes", None)
        fields_given = {key: value for key, value in values.items() if value is not None}
        _run_train(algorithm, dataset, common, fields_given)

    callback.__doc__ = (
        f"Train {name} on DATASET (an id such as walker_walk-medrep, or a folder), evaluate it in "
        "the dataset's own environment and write metrics, checkpoints, eval.json and analyses "
        f"to --out.\n\n{algorithm.summary}\n\nPresets: {', '.join(algorithm.presets)}. Every "
        "config field below can also be given with --set FIELD=VALUE.")
    command = click.argument("dataset")(callback)
    for field in reversed(fields):
        command = _field_option(field, kinds[field.name], docs.get(field.name),
                                defaults[field.name])(command)
    command = _common_options(command, algorithm.presets, set(kinds))
    if "rgb_eval" not in kinds:
        command = deprecated_alias("--rgb-eval", "--rgb-background", is_flag=True)(command)
    return click.command(command_name or name, context_settings={"max_content_width": 100})(command)


def _run_train(algorithm, dataset, common, fields_given):
    from ..algorithms import ConfigError
    from ..experiment import default_preset, run_experiment

    device = common["device"] or _default_device()
    preset = common["preset"]
    if preset is None:
        preset = default_preset(device)
        if preset == "smoke":
            click.echo("no --preset given and no CUDA device: using the smoke preset (tiny, "
                       "minutes on a CPU); --preset paper is a GPU job of hours to days", err=True)
    settings = [f"{key}={value}" for key, value in fields_given.items()
                if isinstance(value, _Unparsed)]
    overrides = {key: value for key, value in fields_given.items()
                 if not isinstance(value, _Unparsed)}
    seed = common["seed"]
    out = common["out"] or Path("runs") / algorithm.name / f"{Path(str(dataset)).name}-seed{seed}"
    settings = [*settings, *common["settings"]]
    try:
        if device == "cpu":
            _confirm_cpu_run(algorithm, preset, overrides, settings, common)
        run_experiment(algorithm, dataset, preset=preset, overrides=overrides,
                       settings=settings, out=out, seed=seed, device=device,
                       root=common["root"], resume=common["resume"], overwrite=common["overwrite"],
                       eval_episodes=common["eval_episodes"], eval_workers=common["eval_workers"],
                       rgb_background=common["rgb_background"], video_dir=common["video_dir"],
                       analyse=not common["no_analysis"], stop_after=common["stop_after"],
                       deterministic=common["deterministic"], echo=click.echo)
    except DatasetNotFoundError as err:
        raise not_found_error(err, [dataset]) from None
    except ConfigError as err:
        raise click.UsageError(str(err)) from None


def _confirm_cpu_run(algorithm, preset, overrides, settings, common):
    """Print the projected CPU time of this run and ask before a long one
    (:func:`lqv_d4rl.cli.cpu_guard.confirm_long_cpu_run`)."""
    from ..algorithms import apply_settings
    from ..cpu_cost import project_run

    config = algorithm.config(preset, **overrides)
    if settings:
        config = apply_settings(config, settings, algorithm.name)
    projection = project_run(algorithm.name, config, preset, stop_after=common["stop_after"])
    if projection is not None:
        confirm_long_cpu_run(projection.describe(), projection.seconds,
                             allowed=common["allow_long_cpu_run"])


def _default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------- groups


class TrainGroup(click.Group):
    """``lqv-d4rl train ALGO``: one subcommand per installed algorithm, built when asked for."""

    def list_commands(self, ctx):
        from .. import algorithms

        return algorithms.names()

    def get_command(self, ctx, name):
        from .. import algorithms

        if name not in algorithms.known_names() and name not in algorithms.names():
            return None
        return build_train_command(name)

    def resolve_command(self, ctx, args):
        from .. import algorithms

        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            raise click.UsageError(f"unknown algorithm {args[0]!r}; known: "
                                   f"{', '.join(algorithms.known_names())}", ctx) from None

    def format_commands(self, ctx, formatter):
        """List the algorithms without importing them."""
        rows = [(name, "lqv-d4rl train " + name + " --help shows its options")
                for name in self.list_commands(ctx)]
        with formatter.section("Algorithms"):
            formatter.write_dl(rows)


@click.group("train", cls=TrainGroup)
def train():
    """Train an algorithm on a dataset, then evaluate it: lqv-d4rl train ALGO DATASET [OPTIONS].

    Without --preset a CPU-only machine runs the smoke preset; a run projected to take more than
    an hour on a CPU (e.g. --preset paper) prints its projected time and asks first (or needs
    --allow-long-cpu-run). `lqv-d4rl train ALGO --help` lists every config field of ALGO as an
    option, with each preset's default.
    """


@click.command("evaluate")
@deprecated_alias("--workers", "--eval-workers", type=click.IntRange(min=1))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--episodes", type=click.IntRange(min=1), default=None,
              show_default="the run's eval_episodes", help="Episodes.")
@click.option("--rgb-background", is_flag=True,
              help="Colour backgrounds (the paper's Table 2); writes eval_rgb.json.")
@click.option("--eval-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that play evaluation episodes in parallel.")
@click.option("--video-dir", default=None,
              help="Where the dataset's background videos are, if not at the recorded path.")
@click.option("--device", default="cpu", show_default=True, callback=check_device_name,
              help="Torch device of the policy.")
@click.option("--seed", type=click.IntRange(min=0), default=None, show_default="the run's",
              help="Training seed (as in `train --seed`) whose evaluation episodes to play: "
                   "episode i is reset with seed 10000 + 1000 * SEED + i.")
def evaluate(run_dir, episodes, rgb_background, eval_workers, video_dir, device, seed):
    """Evaluate the trained run in RUN_DIR in its dataset's environment; writes eval.json."""
    from ..experiment import evaluate_run

    evaluate_run(run_dir, episodes=episodes, workers=eval_workers, rgb_background=rgb_background,
                 video_dir=video_dir, device=device, seed=seed, echo=click.echo)


@click.command("analyse")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              show_default="RUN_DIR", help="Folder for the figures and tables.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Dataset root of the run's dataset ({ROOT_DEFAULT}).")
@click.option("--device", default="cpu", show_default=True, callback=check_device_name,
              help="Torch device.")
def analyse(run_dir, out, root, device):
    """Write the analysis figures and tables of the trained run in RUN_DIR."""
    from .. import algorithms
    from ..dataset import load_dataset
    from ..runs import read_run_config, run_dataset_source

    record = read_run_config(run_dir)
    algorithm = algorithms.get(record["algorithm"])
    if algorithm.analyse is None:
        raise click.ClickException(f"{algorithm.name} has no analysis")
    source = run_dataset_source(record)
    try:
        data = load_dataset(source, root=root)
    except DatasetNotFoundError as err:
        raise not_found_error(err, [source]) from None
    written = algorithm.analyse(run_dir, data, out or run_dir, device)
    for name, path in written.items():
        click.echo(f"{name}: {path}")


COMMANDS = [train, evaluate, analyse]
LAZY_COMMANDS = {name: (lambda name=name, target=target: build_train_command(target, name))
                 for name, target in SHORT_FORMS.items()}
"""Top-level commands built only when invoked (``lqv-d4rl semopo``)."""
