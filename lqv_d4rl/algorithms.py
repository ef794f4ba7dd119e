"""The algorithm registry: every learner the toolkit can train, found by name and imported only when used.

An algorithm is an :class:`Algorithm` object that a module exposes as ``ALGORITHM``::

    ALGORITHM = Algorithm(
        name="bc",
        config_class=BCConfig,            # a dataclass; each field documented by the string under it
        presets={"paper": {}, "smoke": {"updates": 200, ...}},
        train=train,                      # train(dataset, config, run, device) -> None
        load=load,                        # load(run_dir, device="cpu") -> policy
        analyse=None,                     # optional: analyse(run_dir, dataset, out_dir, device) -> {name: path}
        summary="Behaviour cloning on augmented frame stacks (V-D4RL).",
    )

``train`` trains in the run folder ``run`` (a :class:`lqv_d4rl.runs.Run`: metrics, checkpoints,
resume) and returns when training is done; calling it again on a finished run returns at once.
``load`` returns a *policy*: ``policy.reset()`` starts an episode and ``policy(observation)``
maps one ``make_env`` observation ((64, 64, 3) uint8) to an action (a policy whose
``observation_key`` is ``"state"`` is given the environment's ``info["state"]`` instead, see
:mod:`lqv_d4rl.observations`); it must pickle, so that evaluation can play episodes in worker
processes (see :mod:`lqv_d4rl.evaluation`).

Built-in names map to ``"module:ATTRIBUTE"`` strings (:data:`BUILTIN`); another package adds its own
through the entry-point group ``lqv_d4rl.algorithms`` (``name = "package.module:ALGORITHM"``) or,
at run time, :func:`register`. Nothing is imported until :func:`get` asks for it, so
``import lqv_d4rl`` and ``lqv-d4rl --help`` never load torch or an algorithm.
"""

import ast
import dataclasses
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import LQVError

ENTRY_POINT_GROUP = "lqv_d4rl.algorithms"

BUILTIN = {
    "semopo": "semopo.algorithm:ALGORITHM",
    "offline_dv2": "baselines.offline_dv2:ALGORITHM",
    "lompo": "baselines.lompo:ALGORITHM",
    "drq_bc": "baselines.drq_bc:ALGORITHM",
    "drq_cql": "baselines.drq_cql:ALGORITHM",
    "bc": "baselines.bc:ALGORITHM",
    "infogating": "baselines.infogating:ALGORITHM",
}
"""The seven algorithms of the paper's Table 1: name -> ``"module:ATTRIBUTE"``."""

_registered: dict = {}


class UnknownAlgorithmError(LQVError, ValueError):
    """An algorithm name that no installed package provides."""


class ConfigError(LQVError, ValueError):
    """A config value (or ``--set key=value``) that an algorithm cannot use; names the field."""


@dataclass(frozen=True)
class Algorithm:
    """What the platform needs of a learner (see the module docstring for the contract)."""

    name: str
    config_class: type
    presets: Mapping[str, Mapping]
    train: Callable
    load: Callable
    analyse: Callable | None = None
    summary: str = ""
    resumable_fields: tuple = ("eval_episodes", "eval_max_steps", "log_every", "checkpoint_every")
    """Config fields that may change when a run is resumed (they do not change what was trained)."""
    default_preset: str = field(default="paper")

    def config(self, preset=None, *, task=None, **overrides):
        """The config of ``preset`` (default ``paper``) for ``task``, with ``overrides`` applied.

        A preset is a mapping of field overrides; its optional ``"per_task"`` entry maps a task name
        to further overrides for that task (e.g. the released SeMOPO command's hopper setting).
        """
        preset = preset or self.default_preset
        if preset not in self.presets:
            raise ConfigError(f"{self.name} has no preset {preset!r}; choose one of "
                              f"{', '.join(self.presets)}")
        values = {key: value for key, value in self.presets[preset].items() if key != "per_task"}
        values.update(self.presets[preset].get("per_task", {}).get(task, {}))
        values.update(overrides)
        return make_config(self.config_class, values, self.name)


def names():
    """The algorithm names whose modules are installed: built-ins, entry points and registered ones."""
    found = [name for name, target in BUILTIN.items() if _module_exists(target.partition(":")[0])]
    found += [point.name for point in _entry_points() if point.name not in found]
    found += [name for name in _registered if name not in found]
    return found


def known_names():
    """Every name :func:`get` would try (installed or not), for error messages."""
    return list(dict.fromkeys([*BUILTIN, *(p.name for p in _entry_points()), *_registered]))


def get(name):
    """The :class:`Algorithm` called ``name``, importing its module now."""
    if name in _registered:
        target = _registered[name]
    else:
        points = {point.name: point.value for point in _entry_points()}
        target = points.get(name) or BUILTIN.get(name)
    if target is None:
        raise UnknownAlgorithmError(f"unknown algorithm {name!r}; known: {', '.join(known_names())}")
    if isinstance(target, Algorithm):
        return target
    module_name, _, attribute = target.partition(":")
    if not _module_exists(module_name):
        raise UnknownAlgorithmError(
            f"algorithm {name!r} lives in module {module_name!r}, which is not installed; "
            f"installed: {', '.join(names()) or 'none'}")
    algorithm = getattr(importlib.import_module(module_name), attribute or "ALGORITHM")
    if not isinstance(algorithm, Algorithm) or algorithm.name != name:
        raise UnknownAlgorithmError(f"{target} is not the Algorithm {name!r}")
    return algorithm


def register(name, target):
    """Add (or replace) an algorithm at run time: ``target`` is an :class:`Algorithm` or a
    ``"module:ATTRIBUTE"`` string."""
    _registered[name] = target


def unregister(name):
    """Remove an algorithm added with :func:`register` (no-op for others)."""
    _registered.pop(name, None)


def _entry_points():
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _module_exists(module_name):
    """True if ``module_name`` can be imported, found without importing it or its parents."""
    parts = module_name.split(".")
    spec = importlib.util.find_spec(parts[0])
    for part in parts[1:]:
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec is not None


# ---------------------------------------------------------------------------------- configs


def make_config(config_class, values, owner="the"):
    """``config_class(**values)``, turning unknown fields and constructor errors into
    :class:`ConfigError` that names the field."""
    known = {item.name for item in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {owner} config field(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, LQVError):
            raise ConfigError(str(err)) from None
        raise ConfigError(f"{owner} config: {err}") from None


def config_to_dict(config):
    """A JSON-able dict of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(config_class, values, owner="the"):
    """Rebuild a config from :func:`config_to_dict` (unknown fields raise :class:`ConfigError`)."""
    return make_config(config_class, dict(values), owner)


def field_docs(config_class):
    """``{field name: docstring}`` of a config dataclass: the string literal written under each field."""
    docs = {}
    for klass in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def field_types(config_class):
    """``{field name: type}`` of a config dataclass, with string annotations resolved."""
    hints = typing.get_type_hints(config_class)
    return {item.name: hints[item.name] for item in dataclasses.fields(config_class)}


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")


def parse_value(name, text, kind):
    """Parse the text of ``--set name=text`` as the field's type ``kind``; raises :class:`ConfigError`
    naming the field and its type."""
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    if type(None) in options and text.strip().lower() in NONE_WORDS:
        return None
    for option in (item for item in options if item is not type(None)):
        try:
            return _parse_as(option, text)
        except (ValueError, TypeError, json.JSONDecodeError):
            continue
    raise ConfigError(f"--set {name}={text}: {name} takes {type_name(kind)}, got {text!r}")


def _is_union(kind):
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _parse_as(kind, text):
    stripped = text.strip()
    if kind is bool:
        if stripped.lower() in TRUE_WORDS:
            return True
        if stripped.lower() in FALSE_WORDS:
            return False
        raise ValueError(text)
    if kind is int:
        return int(stripped)
    if kind is float:
        return float(stripped)
    if kind is str:
        return text
    origin = typing.get_origin(kind) or kind
    if origin in (dict, list, tuple):
        value = json.loads(stripped)
        if not isinstance(value, list if origin in (list, tuple) else dict):
            raise TypeError(text)
        return tuple(value) if origin is tuple else value
    raise TypeError(f"fields of type {kind} cannot be set from the command line")


def type_name(kind):
    """A short human name of a field type, e.g. ``"an integer"`` or ``"a number or none"``."""
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             type(None): "none"}
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    return " or ".join(words.get(option, "JSON " + getattr(typing.get_origin(option) or option,
                                                             "__name__", str(option)))
                       for option in options)


def apply_settings(config, settings, owner="the"):
    """A copy of ``config`` with ``settings`` (``["key=value", ...]`` strings, as ``--set`` gives
    them) parsed by field type and applied; errors name the field and its type."""
    types_ = field_types(type(config))
    changes = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {setting!r}")
        if key not in types_:
            raise ConfigError(f"--set {setting}: {owner} has no config field {key!r}; known: "
                              f"{', '.join(sorted(types_))}")
        changes[key] = parse_value(key, text, types_[key])
    return make_config(type(config), {**config_to_dict(config), **changes}, owner)
