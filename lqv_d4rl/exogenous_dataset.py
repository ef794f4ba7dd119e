"""``lqv-d4rl add-exogenous``: write the variant of a dataset whose ``state`` carries exogenous
dimensions (the process of :mod:`lqv_d4rl.exogenous`), through :class:`lqv_d4rl.format.ShardWriter`.

Kept apart from :mod:`lqv_d4rl.exogenous` (the process and the evaluation wrapper), which the
evaluation environment imports: this module reads datasets.
"""

from pathlib import Path

import numpy as np

from .exogenous import (
    ExogenousError,
    LorenzProcess,
    default_dims,
    episode_seed_of,
    exogenous_fields,
    exogenous_spec,
)
from .format import DEFAULT_MAX_SHARD_BYTES, ShardWriter, read_manifest, refuse_complete_target


def add_exogenous(source, new_id, *, dims=None, seed=0, root=None, to_root=None, overwrite=False,
                  progress=True, max_shard_bytes=DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write dataset ``new_id`` (under ``to_root``, default ``root``): dataset ``source`` (an id
    under ``root`` or a folder) with ``dims`` exogenous state dimensions appended (default: the
    smallest multiple of 3 >= the state size); returns its folder.

    Images, actions, rewards, discounts, flags, physics, episode seeds and policy ids are the
    source's. An interrupted run resumes when called again with the same arguments; a complete
    target is refused unless ``overwrite``. Raises :class:`ExogenousError` for a source without
    states, an incomplete one, one that already has exogenous dimensions, or bad options.
    """
    from tqdm.auto import tqdm

    from .dataset import load_dataset, resolve_dataset_folder
    from .locks import dataset_lock
    from .registry import dataset_path

    source_folder = resolve_dataset_folder(source, root)
    manifest = read_manifest(source_folder)
    _check_source(manifest, source_folder)
    state_space = manifest["spaces"]["state"]
    dims = default_dims(state_space["shape"][0]) if dims is None else dims
    spec = exogenous_spec(dims, seed)
    folder = dataset_path(new_id, to_root if to_root is not None else root)
    if folder.resolve() == source_folder.resolve():
        raise ExogenousError(f"the new dataset {new_id!r} would replace its source in {folder}; "
                             "pick another --id or --to-root")
    with dataset_lock(folder, "add-exogenous"):  # one writer per dataset folder
        refuse_complete_target(folder, overwrite=overwrite, action="write it again")
        data = load_dataset(source_folder, lazy=True)
        try:
            writer = _writer(folder, new_id, manifest, source_folder, spec, overwrite,
                             max_shard_bytes)
            process = LorenzProcess(spec)
            with writer:
                first = writer.num_episodes
                bar = tqdm(total=len(data), initial=first, desc=f"add-exogenous {new_id}",
                           unit="episode", disable=not progress, dynamic_ncols=True)
                for index in range(first, len(data)):
                    steps = data.episode(index)
                    info = data.episode_info(index)
                    exogenous = process.trajectory(episode_seed_of(info["seed"], index),
                                                   len(steps["state"]))
                    steps["state"] = np.concatenate([steps["state"], exogenous], axis=1)
                    writer.add_episode(steps, policy_id=info["policy_id"],
                                       policy_step=info["policy_step"], seed=info["seed"],
                                       video_ids=info["video_ids"])
                    bar.update(1)
                bar.close()
        finally:
            data.close()
    return folder


def _check_source(manifest, folder):
    name = manifest["dataset_id"]
    if "state" not in manifest["spaces"]:
        raise ExogenousError(
            f"{name!r} in {folder} stores no states (format version "
            f"{manifest['format_version']}, or imported data), so there is no state to extend; "
            "use a dataset made by this version of lqv-d4rl (lqv-d4rl generate)")
    if not manifest.get("complete"):
        raise ExogenousError(f"{name!r} in {folder} is incomplete; finish it first (rerun the "
                             "command that produced it)")
    if manifest.get("provenance", {}).get("exogenous") is not None:
        raise ExogenousError(f"{name!r} already has exogenous state dimensions "
                             f"({manifest['provenance']['exogenous']['dims']}); add them to its "
                             "source instead")


def _writer(folder, new_id, manifest, source_folder, spec, overwrite, max_shard_bytes):
    spaces = manifest["spaces"]
    provenance = dict(manifest.get("provenance", {}))
    provenance.pop("created", None)
    provenance["exogenous"] = spec
    provenance["exogenous_from"] = {
        "dataset_id": manifest["dataset_id"], "folder": str(source_folder.resolve()),
        "created": manifest.get("provenance", {}).get("created"),
        "shards": [record["sha256"] for record in manifest["shards"]],
        "note": (f"the source's state with {spec['dims']} exogenous dimensions appended: "
                 f"{spec['systems']} independent Lorenz-63 systems that no action affects; "
                 "evaluation appends the same process to the environment's info['state']"),
    }
    fields = [tuple(field) for field in spaces["state"].get("fields")
              or [("state", spaces["state"]["shape"][0])]]
    try:
        return ShardWriter(
            folder, dataset_id=new_id, task=manifest["task"], level=manifest.get("level", "custom"),
            action_dim=spaces["action"]["shape"][0], provenance=provenance,
            max_shard_bytes=max_shard_bytes, overwrite=overwrite, resume=not overwrite,
            state_fields=fields + exogenous_fields(spec),
            physics_fields=spaces.get("physics", {}).get("fields"))
    except ValueError as err:
        raise ExogenousError(f"{err} (rerun with the options of the interrupted add-exogenous, "
                             "or add --overwrite)") from err


__all__ = ["add_exogenous"]
