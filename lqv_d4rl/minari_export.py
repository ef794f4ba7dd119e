"""Export a dataset so that Farama's Minari (``pip install minari``, >= 0.5) can load it.

The export goes through Minari's own API (``minari.create_dataset_from_buffers`` and
``MinariDataset.update_dataset_from_buffer``), so whatever Minari version is installed writes its
own on-disk layout (``<minari root>/<name>/data/metadata.json`` + ``main_data.hdf5``).

How an episode maps (ours: L entries, entry t = observation o_t, the action a_{t-1} that led to
it, the reward and discount of that transition; Minari: L observations and L-1 steps):

==========================  ================================================
Minari                      lqv-d4rl
==========================  ================================================
``observations[t]``         ``image[t]``, t = 0..L-1 (Box uint8 64x64x3)
``actions[t]``              ``action[t+1]``  (entry 0's zero action is dropped)
``rewards[t]``              ``reward[t+1]``  (entry 0's zero reward is dropped)
``terminations[t]``         ``is_terminal[t+1]``
``truncations[t]``          ``is_last[t+1] and not is_terminal[t+1]``
``infos["discount"][t]``    ``discount[t]``, t = 0..L-1
``infos["state"][t]``       ``state[t]``, t = 0..L-1 (when the dataset stores states)
``infos["physics"][t]``     ``physics[t]``, t = 0..L-1 (when the dataset stores them)
episode ``seed``            the episode's seed (left out when unknown, -1)
episode metadata            ``policy_id``, ``policy_step``, ``source_dataset``, ``video_ids``
==========================  ================================================

``recover_environment()`` makes gymnasium's ``lqv_d4rl/<task>-v0`` with the background settings
the manifest records (``lqv_d4rl.gym_registration.env_kwargs_of_manifest``; a dataset that does
not record them, e.g. an ``import-npz`` one, gets no environment spec).

Images are stored losslessly (Minari >= 0.5.4 would JPEG-encode image spaces by default; the
export turns that off). The dataset metadata carries ``ref_min_score``/``ref_max_score`` (the
paper's Table 3 extremes of the task, so ``minari.get_normalized_score`` gives the benchmark's
normalized score) and an ``lqv_d4rl`` entry with the source manifest's id, task, level and
provenance.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from .errors import DatasetExistsError, LQVError
from .gym_registration import env_kwargs_of_manifest, env_spec
from .tasks import TASKS

EPISODES_PER_WRITE = 8
"""Episodes converted and handed to Minari at a time (bounds memory to a few tens of MB)."""


class MinariExportError(LQVError, ValueError):
    """The export cannot be done as asked (minari missing, a bad name, a too-short episode)."""


def export_to_minari(
    id_or_path, name: str, *, root=None, minari_root=None, overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write the dataset ``id_or_path`` as the Minari dataset ``name``; return its folder.

    ``name`` follows Minari's id syntax ``[namespace/]dataset_name-v<version>``, e.g.
    ``lqv-d4rl/walker_walk-medrep-v0``. ``minari_root`` overrides Minari's dataset root
    (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) for this export. An existing Minari
    dataset of that name is replaced only with ``overwrite``. A failed export removes its partial
    output. ``progress`` shows a tqdm bar (default: when stderr is a terminal).
    """
    minari = _import_minari()
    from .dataset import load_dataset

    _check_minari_name(name)
    dataset = load_dataset(id_or_path, root=root, lazy=True)
    try:
        with _minari_datasets_path(minari_root):
            target = Path(minari.storage.get_dataset_path(name))
            _clear_target(target, name, overwrite)
            try:
                _write_episodes(minari, dataset, name, progress)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
    finally:
        dataset.close()  # the shard files the lazy images opened
    return target


def episode_to_minari_buffer(steps: dict, *, episode_id: int, seed: int):
    """Convert one step dict (our entry convention) into a ``minari.EpisodeBuffer``."""
    from minari.data_collector import EpisodeBuffer

    length = len(steps["reward"])
    if length < 2:
        raise MinariExportError(
            f"episode {episode_id} has {length} entry; Minari episodes need at least one step"
        )
    terminations = np.asarray(steps["is_terminal"][1:], dtype=bool)
    truncations = np.asarray(steps["is_last"][1:], dtype=bool) & ~terminations
    infos = {"discount": np.asarray(steps["discount"], dtype=np.float32)}
    for key, dtype in (("state", np.float32), ("physics", np.float64)):
        if key in steps:
            infos[key] = np.asarray(steps[key], dtype=dtype)
    return EpisodeBuffer(
        id=episode_id,
        seed=None if seed < 0 else int(seed),
        observations=np.asarray(steps["image"], dtype=np.uint8),
        actions=np.asarray(steps["action"][1:], dtype=np.float32),
        rewards=np.asarray(steps["reward"][1:], dtype=np.float32),
        terminations=terminations,
        truncations=truncations,
        infos=infos,
    )


def minari_spaces(action_dim: int, image_shape=(64, 64, 3)):
    """Minari observation and action spaces: Box uint8 images and Box[-1, 1] float32 actions."""
    import gymnasium as gym

    observation_space = gym.spaces.Box(0, 255, shape=tuple(image_shape), dtype=np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
    return observation_space, action_space


def _write_episodes(minari, dataset, name: str, progress) -> None:
    """Create the Minari dataset from the first batch of episodes, then append the rest."""
    from tqdm import tqdm

    batches = [
        range(start, min(start + EPISODES_PER_WRITE, len(dataset)))
        for start in range(0, len(dataset), EPISODES_PER_WRITE)
    ]
    if not batches:
        raise MinariExportError("the dataset has no episodes to export")
    bar = tqdm(total=len(dataset), desc=f"exporting to {name}", unit="episode",
               disable=None if progress is None else not progress)
    with bar:
        exported = None
        for batch in batches:
            if exported is None:
                exported = _create_dataset(minari, dataset, name, _buffers(dataset, batch))
            else:
                exported.update_dataset_from_buffer(_buffers(dataset, batch))
            _record_episode_metadata(exported, dataset, batch)
            bar.update(len(batch))


def _create_dataset(minari, dataset, name: str, buffers):
    observation_space, action_space = minari_spaces(dataset.actions.shape[1])
    options = {}
    if "jpeg_encoding" in inspect.signature(minari.create_dataset_from_buffers).parameters:
        options["jpeg_encoding"] = False  # keep pixels exact
    source = _source_description(dataset)
    with warnings.catch_warnings():
        # Minari warns about every optional field left out (author, e-mail, code link, env spec);
        # the source dataset's provenance goes into the metadata instead.
        warnings.simplefilter("ignore", UserWarning)
        exported = minari.create_dataset_from_buffers(
            dataset_id=name,
            buffer=buffers,
            observation_space=observation_space,
            action_space=action_space,
            algorithm_name="lqv-d4rl behaviour policies",
            description=(
                f"LQV-D4RL dataset {source['dataset_id']} (task {source['task']}, level "
                f"{source['level']}) exported by lqv-d4rl. Observation t is entry t; action, "
                "reward and flags of Minari step t are those of lqv-d4rl entry t+1."
            ),
            data_format="hdf5",
            **options,
        )
    extra = {"lqv_d4rl": source}
    kwargs = env_kwargs_of_manifest(dataset.metadata or {})
    if dataset.task in TASKS and kwargs is not None:  # for recover_environment()
        extra["env_spec"] = env_spec(dataset.task, **kwargs).to_json()
    reference = _paper_reference(dataset.task)
    if reference is not None:
        extra["ref_min_score"], extra["ref_max_score"] = reference
    exported.storage.update_metadata(extra)
    return exported


def _buffers(dataset, episode_indices) -> list:
    return [
        episode_to_minari_buffer(
            dataset.episode(index), episode_id=index, seed=int(dataset.episode_seeds[index])
        )
        for index in episode_indices
    ]


def _record_episode_metadata(exported, dataset, episode_indices) -> None:
    metadata = [
        {
            "policy_id": str(dataset.policy_ids[index]),
            "policy_step": int(dataset.policy_steps[index]),
            "source_dataset": str(dataset.dataset_ids[index]),
            "video_ids": np.asarray(dataset.video_ids[index], dtype=np.int32),
        }
        for index in episode_indices
    ]
    exported.storage.update_episode_metadata(metadata, episode_indices=list(episode_indices))


def _source_description(dataset) -> dict:
    """JSON-able summary of where the exported episodes come from."""
    manifest = dataset.metadata or {}
    source_ids = ",".join(sorted(set(dataset.dataset_ids.tolist())))
    return {
        "dataset_id": manifest.get("dataset_id", source_ids),
        "task": dataset.task,
        "level": manifest.get("level", "mixed"),
        "format_version": manifest.get("format_version"),
        "state_spaces": {key: space for key, space in manifest.get("spaces", {}).items()
                         if key in ("state", "physics")},
        "provenance": manifest.get("provenance", {}),
        "entry_convention": "minari observations[t] = image[t]; actions/rewards/terminations[t] "
        "= entry t+1; truncations[t] = is_last[t+1] and not is_terminal[t+1]",
    }


def _paper_reference(task: str):
    from .paper import PAPER_REFERENCES

    reference = PAPER_REFERENCES.get(task)
    return None if reference is None else (float(reference[0]), float(reference[1]))


def _clear_target(target: Path, name: str, overwrite: bool) -> None:
    if not target.exists():
        return
    if not overwrite:
        raise DatasetExistsError(
            f"a Minari dataset {name!r} already exists at {target}; pass --overwrite to replace "
            "it or pick another name"
        )
    shutil.rmtree(target)


def _check_minari_name(name: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(name)
    except (ValueError, TypeError):  # minari raises TypeError for a name without "-v<N>"
        raise MinariExportError(
            f"{name!r} is not a Minari dataset id; Minari wants "
            "'[namespace/]dataset_name-v<version>', e.g. 'lqv-d4rl/walker_walk-medrep-v0'"
        ) from None


@contextlib.contextmanager
def _minari_datasets_path(minari_root):
    """Point Minari at ``minari_root`` (its MINARI_DATASETS_PATH) for the duration of a block."""
    if minari_root is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(minari_root).resolve())
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _import_minari():
    try:
        import minari
        import minari.storage
    except ImportError:
        raise MinariExportError(
            "the Minari export needs the minari package: pip install 'lqv-d4rl[minari]'"
        ) from None
    return minari
