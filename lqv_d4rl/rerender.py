"""``lqv-d4rl rerender``: the same episodes, every frame rendered again over other backgrounds.

Every step of a dm_control dataset (format version 2) stores the exact simulator state
(``physics``). :func:`rerender` sets those states one by one, renders each frame again and puts a
new background behind it (your own videos, e.g. Kinetics "driving car", or the colour variant),
and writes a complete dataset: its own id, manifest and provenance (naming the source), and the
same actions, rewards, discounts, flags, states, physics, episode seeds and policy ids as the
source. With a segmentation composite every agent pixel is the source's agent pixel; only the
background changes. The background of episode ``k`` starts where the live environment would have
started it (seeded from the episode seed), and the pool is built as ``generate`` builds it (same
frame count and seed), so for a behaviour policy that never looked at the images (the
``sac-state`` recipe) the result is byte for byte the dataset ``generate`` makes with that video
folder and seed (same dataset id). A pixel policy such as TIA would have acted differently on other
backgrounds; the re-rendered dataset keeps the recorded behaviour, and its provenance says so.

:class:`EpisodeRenderer` renders episodes from their physics states in this process or in worker
processes (results in order); ``generate --behaviour sac-state`` uses it too.
"""

import collections
import multiprocessing
from pathlib import Path

from .errors import LQVError
from .format import DEFAULT_MAX_SHARD_BYTES, ShardWriter, read_manifest, refuse_complete_target
from .tasks import TASKS

RENDER_DEFAULTS = {"composite": "segmentation", "render_quality": "fast",
                   "num_video_frames": 1000, "pool_seed": 0, "rgb_background": False}
"""Render settings assumed for a source whose provenance does not record them."""


class RerenderError(LQVError, ValueError):
    """A dataset that cannot be re-rendered, or options that do not fit it."""


# ----------------------------------------------------------------------------------------------
# Rendering episodes, in this process or in workers
# ----------------------------------------------------------------------------------------------


class OrderedPool:
    """``workers`` processes (started with ``spawn``, each set up by ``initializer(*initargs)``)
    that run one call per item and give the results back in the items' order, up to
    ``2 * workers`` items ahead of the caller."""

    def __init__(self, workers, initializer, initargs=()):
        self.workers = int(workers)
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(self.workers, initializer=initializer, initargs=initargs)

    def map(self, function, items):
        """Yield ``function(*item)`` for each argument tuple in ``items``, in order."""
        pending = collections.deque()
        for item in items:
            pending.append(self._pool.apply_async(function, item))
            while len(pending) > 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self):
        """Stop the worker processes."""
        self._pool.terminate()
        self._pool.join()


class EpisodeRenderer:
    """Renders episodes from their physics states, in order, with ``workers`` processes.

    ``render(items)`` takes an iterable of ``(physics_states (L, P), episode_seed)`` and yields
    ``(images (L, 64, 64, 3) uint8, video_ids)`` in the same order. With ``workers > 1`` up to
    ``2 * workers`` episodes are rendered ahead while the caller produces the next items (worker
    processes are started with ``spawn``: a script using them needs the ``__main__`` guard).
    Rendering is per episode, so the number of workers never changes the images.
    """

    def __init__(self, task, *, video_pool, composite="segmentation", render_quality="fast",
                 workers=1):
        self._settings = (task, video_pool, composite, render_quality)
        self.workers = int(workers)
        self._renderer = None
        self._pool = None
        if self.workers > 1:
            self._pool = OrderedPool(self.workers, _start_worker, self._settings)
        else:
            self._renderer = _make_renderer(*self._settings)

    def render(self, items):
        """Yield ``(images, video_ids)`` for each ``(physics_states, episode_seed)`` item."""
        if self._pool is None:
            for physics, seed in items:
                yield self._renderer.render_episode(physics, seed)
            return
        yield from self._pool.map(_render_in_worker, items)

    def close(self):
        """Stop the worker processes and free the renderer."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _make_renderer(task, video_pool, composite, render_quality):
    from .physics import FrameRenderer

    return FrameRenderer(task, video_pool=video_pool, composite=composite,
                         render_quality=render_quality)


_worker_renderer = None


def _start_worker(*settings):
    import signal

    global _worker_renderer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    _worker_renderer = _make_renderer(*settings)


def _render_in_worker(physics, seed):
    return _worker_renderer.render_episode(physics, seed)


# ----------------------------------------------------------------------------------------------
# Re-rendering a dataset
# ----------------------------------------------------------------------------------------------


def render_settings(provenance: dict) -> dict:
    """The render settings a dataset was made with (its provenance's ``render`` entry, else
    :data:`RENDER_DEFAULTS`)."""
    return {**RENDER_DEFAULTS, **provenance.get("render", {})}


def rerender(source, new_id, *, video_dir, root=None, to_root=None, composite=None,
             rgb_background=None, workers=1, overwrite=False, progress=True,
             max_shard_bytes=DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Render dataset ``source`` (an id under ``root`` or a folder) again over the videos of
    ``video_dir`` as dataset ``new_id`` under ``to_root`` (default: ``root``); return its folder.

    ``composite`` (``"segmentation"``/``"color"``) and ``rgb_background`` default to the source's
    settings. The background pool is built like the source's (its frame count and seed) from
    ``video_dir`` (None: the procedural video). An interrupted run resumes when called again with
    the same arguments; a complete target is refused unless ``overwrite``.
    Raises RerenderError for car_racing, datasets without physics states and bad options.
    """
    from tqdm.auto import tqdm

    from .dataset import load_dataset, resolve_dataset_folder
    from .locks import dataset_lock
    from .registry import dataset_path

    source_folder = resolve_dataset_folder(source, root)
    manifest = read_manifest(source_folder)
    _check_source(manifest, source_folder)
    folder = dataset_path(new_id, to_root if to_root is not None else root)
    if folder.resolve() == source_folder.resolve():
        raise RerenderError(f"the new dataset {new_id!r} would replace its source in "
                            f"{folder}; pick another --id or --to-root")
    with dataset_lock(folder, "rerender"):  # one writer per dataset folder
        settings = _new_settings(render_settings(manifest.get("provenance", {})), composite,
                                 rgb_background)
        video_pool = _video_pool(video_dir, settings)
        refuse_complete_target(folder, overwrite=overwrite, action="render it again")
        data = load_dataset(source_folder, lazy=True)
        try:
            writer = _writer(folder, new_id, manifest, source_folder, video_dir, video_pool,
                             settings, overwrite, max_shard_bytes)
            with writer, EpisodeRenderer(manifest["task"], video_pool=video_pool,
                                         composite=settings["composite"],
                                         render_quality=settings["render_quality"],
                                         workers=workers) as renderer:
                first = writer.num_episodes
                bar = tqdm(total=len(data), initial=first, desc=f"rerender {new_id}",
                           unit="episode", disable=not progress, dynamic_ncols=True)
                items = ((data.physics[_rows(data, k)], int(data.episode_seeds[k]))
                         for k in range(first, len(data)))
                for k, (images, video_ids) in enumerate(renderer.render(items), start=first):
                    steps = {key: array[_rows(data, k)] for key, array in data.steps.items()
                             if key != "image"}
                    info = data.episode_info(k)
                    writer.add_episode({"image": images, **steps}, policy_id=info["policy_id"],
                                       policy_step=info["policy_step"], seed=info["seed"],
                                       video_ids=video_ids)
                    bar.update(1)
                bar.close()
        finally:
            data.close()
    return folder


def _rows(data, k):
    start = int(data.episode_starts[k])
    return slice(start, start + int(data.episode_lengths[k]))


def _check_source(manifest: dict, folder: Path) -> None:
    task = manifest["task"]
    if task == "car_racing":
        raise RerenderError(
            f"{manifest['dataset_id']!r} is a car_racing dataset: CarRacing keeps its own scene "
            "(no video background to replace) and its Box2D world has no state that could be set "
            "back, so there is nothing to re-render")
    if task not in TASKS or TASKS[task].kind != "dmc":
        raise RerenderError(f"{manifest['dataset_id']!r} is of task {task!r}; only the "
                            "dm_control tasks can be re-rendered")
    if "physics" not in manifest["spaces"]:
        raise RerenderError(
            f"{manifest['dataset_id']!r} in {folder} stores no physics states (format version "
            f"{manifest['format_version']}, or imported data), so its frames cannot be rendered "
            "again; generate it with this version of lqv-d4rl (lqv-d4rl generate) instead")
    if not manifest.get("complete"):
        raise RerenderError(f"{manifest['dataset_id']!r} in {folder} is incomplete; finish it "
                            "first (rerun the command that produced it)")


def _new_settings(old: dict, composite, rgb_background) -> dict:
    from .envs import COMPOSITE_MODES

    settings = dict(old)
    if composite is not None:
        if composite not in COMPOSITE_MODES:
            raise RerenderError(f"composite must be one of {', '.join(COMPOSITE_MODES)}; "
                                f"got {composite!r}")
        settings["composite"] = composite
    if rgb_background is not None:
        settings["rgb_background"] = bool(rgb_background)
    return settings


def _video_pool(video_dir, settings):
    import distractors

    try:
        return distractors.make_video_pool(video_dir, num_frames=settings["num_video_frames"],
                                           seed=settings["pool_seed"],
                                           rgb=settings["rgb_background"])
    except distractors.VideoSourceError as err:
        raise RerenderError(f"cannot use --video-dir {video_dir!r}: {err}") from err


def _writer(folder, new_id, manifest, source_folder, video_dir, video_pool, settings, overwrite,
            max_shard_bytes):
    spaces = manifest["spaces"]
    provenance = dict(manifest.get("provenance", {}))
    provenance.pop("created", None)
    recorded_behaviour = provenance.get("behaviour", "tia")
    provenance.update({
        "distractor_source": (f"videos from {video_dir}" if video_dir is not None
                              else "procedural driving video (no --video-dir given)"),
        "distractor": video_pool.description,
        "render": settings,
        "rerendered_from": {
            "dataset_id": manifest["dataset_id"], "folder": str(source_folder.resolve()),
            "created": manifest.get("provenance", {}).get("created"),
            "shards": [record["sha256"] for record in manifest["shards"]],
            "note": _behaviour_note(recorded_behaviour),
        },
    })
    provenance["env"] = {**provenance.get("env", {}),
                         **{key: settings[key] for key in ("composite", "render_quality")}}
    try:
        return ShardWriter(
            folder, dataset_id=new_id, task=manifest["task"], level=manifest.get("level", "custom"),
            action_dim=spaces["action"]["shape"][0], provenance=provenance,
            max_shard_bytes=max_shard_bytes, overwrite=overwrite, resume=not overwrite,
            state_fields=spaces.get("state", {}).get("fields"),
            physics_fields=spaces["physics"]["fields"])
    except ValueError as err:
        raise RerenderError(f"{err} (rerun with the options of the interrupted rerender, or add "
                            "--overwrite)") from err


def _behaviour_note(behaviour: str) -> str:
    if behaviour == "sac-state":
        return ("the behaviour policies acted on states only, so they would have acted the same "
                "over these backgrounds: this is the dataset generate makes with them")
    return ("the behaviour policies looked at the source's images; over other backgrounds they "
            "might have acted differently. This dataset keeps the recorded behaviour (actions, "
            "rewards, states) and changes only the background")


__all__ = ["EpisodeRenderer", "RerenderError", "render_settings", "rerender"]
