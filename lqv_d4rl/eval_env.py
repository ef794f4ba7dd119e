"""The environment a dataset was recorded in, as JSON-able *env kwargs*, and building it again.

:func:`env_kwargs_from_manifest` reads a dataset's manifest: the task, the background video it was
recorded with (the procedural video's seed and length, or the video folder and its seed), the
compositing rule and the render quality, and, for a dataset with exogenous state dimensions
(:mod:`lqv_d4rl.exogenous`), the spec of that process (key ``exogenous``, present only then).
:func:`make_eval_env` builds that environment. Evaluating
elsewhere than in the data's own environment would measure something else, so there is no silent
default: a dataset whose videos are missing asks for ``--video-dir``.
"""

import warnings
from pathlib import Path

from .errors import LQVError

PROCEDURAL = "procedural"


class EvalEnvError(LQVError, ValueError):
    """The environment a dataset was recorded in cannot be rebuilt here (the message says how)."""


def env_kwargs_from_manifest(manifest, *, video_dir=None, rgb_background=False, check_videos=True):
    """The evaluation environment of a dataset, from its manifest (or a combination's sources).

    Args:
        manifest: ``Dataset.metadata`` (one manifest, or ``{"sources": [...]}``).
        video_dir: the folder holding the dataset's background videos when it is not where the
            manifest says, or ``"procedural"`` to use the built-in video for a dataset that does not
            record its background (an ``import-npz`` dataset).
        rgb_background: colour backgrounds (the paper's Table 2 generalization test).
        check_videos: raise :class:`EvalEnvError` when the video folder is not on this machine.
    """
    sources = manifest.get("sources", [manifest])
    settings = [_env_of_source(source, video_dir, check_videos) for source in sources]
    if any(item != settings[0] for item in settings[1:]):
        raise EvalEnvError("the datasets combined here were recorded in different environments "
                           f"({settings}); evaluate a run trained on one of them")
    return with_rgb_background(settings[0]) if rgb_background else settings[0]


def with_rgb_background(env_kwargs):
    """The same environment with colour backgrounds (the paper's Table 2 test)."""
    if env_kwargs["distractor"] is None:
        raise EvalEnvError(f"{env_kwargs['task']} has no video background to colour")
    return dict(env_kwargs, distractor=dict(env_kwargs["distractor"], rgb=True))


def with_video_dir(env_kwargs, video_dir):
    """The same environment with its background videos read from ``video_dir``."""
    if env_kwargs["distractor"] is None or env_kwargs["distractor"]["kind"] == PROCEDURAL:
        return env_kwargs
    return dict(env_kwargs, distractor=_distractor_of(env_kwargs["distractor"], env_kwargs["task"],
                                                      video_dir, check_videos=True))


def _env_of_source(manifest, video_dir, check_videos):
    provenance = manifest.get("provenance", {})
    task = manifest.get("task")
    name = manifest.get("dataset_id", task)
    recorded = provenance.get("distractor", {})
    if recorded is not None and recorded.get("kind") not in (PROCEDURAL, "video_dir"):
        if video_dir is None:
            raise EvalEnvError(
                f"{name} does not record a background this toolkit can rebuild (an imported "
                "dataset?); pass --video-dir DIR with the videos it was recorded with, or "
                "--video-dir procedural for the built-in procedural video")
        described = {"kind": PROCEDURAL, "seed": 0, "num_frames": 1000, "rgb": False}
        if video_dir != PROCEDURAL:
            described = {"kind": "video_dir", "source": str(video_dir), "seed": 0,
                         "num_frames": 1000, "rgb": False}
    else:
        described = recorded
    env = dict(provenance.get("env", {}))
    settings = {
        "task": task,
        "distractor": (None if described is None
                       else _distractor_of(described, name, video_dir, check_videos)),
        "composite": env.get("composite", "segmentation"),
        "render_quality": env.get("render_quality", "fast"),
    }
    if provenance.get("exogenous") is not None:  # appended to info["state"] in evaluation too
        settings["exogenous"] = dict(provenance["exogenous"])
    return settings


def _distractor_of(described, name, video_dir, check_videos):
    distractor = {"kind": described["kind"], "seed": int(described.get("seed", 0)),
                  "num_frames": int(described.get("num_frames", 1000)),
                  "rgb": bool(described.get("rgb", False))}
    if described["kind"] == PROCEDURAL:
        return distractor
    source = video_dir if video_dir not in (None, PROCEDURAL) else described["source"]
    missing = not Path(source).expanduser().exists() and not any(ch in str(source) for ch in "*?[")
    if check_videos and missing:
        raise EvalEnvError(
            f"{name} was recorded over the videos in {described['source']!r}, which is not here; "
            "pass --video-dir DIR (video_dir=) with the same videos to evaluate in its environment")
    return dict(distractor, source=str(source), files=list(described.get("files", [])))


def make_env_arguments(env_kwargs):
    """The keyword arguments of :func:`lqv_d4rl.make_env` (all but ``seed``) for ``env_kwargs``."""
    spec = env_kwargs["distractor"]
    arguments = {"composite": env_kwargs["composite"],
                 "render_quality": env_kwargs["render_quality"], "distractor": None}
    if spec is not None:
        arguments.update(distractor=PROCEDURAL if spec["kind"] == PROCEDURAL else spec["source"],
                         video_seed=spec["seed"], num_video_frames=spec["num_frames"],
                         rgb_background=spec["rgb"])
    return arguments


def make_eval_env(env_kwargs, seed=0):
    """Build the environment that ``env_kwargs`` (from :func:`env_kwargs_from_manifest`) describes."""
    import distractors

    from .envs import make_env

    arguments = make_env_arguments(env_kwargs)
    try:
        env = make_env(env_kwargs["task"], seed=int(seed) % 2**32, **arguments)
    except distractors.VideoSourceError as err:
        raise EvalEnvError(f"cannot rebuild the background from {arguments['distractor']!r}: "
                           f"{err}; pass --video-dir DIR with the dataset's videos") from None
    recorded = (env_kwargs["distractor"] or {}).get("files")
    if recorded and env.video_pool.description.get("files") != recorded:
        warnings.warn(f"the videos in {arguments['distractor']!r} are not the ones the dataset was "
                      "recorded with; evaluation runs over different backgrounds", stacklevel=2)
    if env_kwargs.get("exogenous") is not None:
        from .exogenous import ExogenousStateEnv

        env = ExogenousStateEnv(env, env_kwargs["exogenous"], seed=int(seed) % 2**32)
    return env
