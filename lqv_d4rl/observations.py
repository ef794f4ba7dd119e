"""What the latent-model algorithms (SeMOPO, Offline DV2, LOMPO) observe: images or stored states.

Every config of the three has the same three fields::

    observation: "image" | "state"    # default "image": the 64x64 frames, the benchmark
    state_layers: 4                   # observation="state": MLP encoder/decoder depth ...
    state_units: 400                  # ... and width (DreamerV2's MLP for low-dimensional inputs)

With ``observation="state"`` the world model encodes and reconstructs the dataset's stored
per-step ``state`` vectors (``Dataset.states``, (N, S) float32; manifest ``spaces.state``) with
MLPs instead of the conv encoder and decoder, under a unit-variance Normal likelihood (the
likelihood the image models use per pixel); everything else is unchanged. Sequence batches then
hold ``state`` and no ``image`` (:data:`STATE_SEQUENCE_KEYS`: no frame is read), and evaluation feeds
the policy the environment's ``info["state"]`` (:func:`lqv_d4rl.evaluation.play_episode` asks the
policy's ``observation_key``). This module holds the checks and the small helpers they share.
"""

from .algorithms import ConfigError

OBSERVATIONS = ("image", "state")
"""The values of the ``observation`` config field."""

STATE_SEQUENCE_KEYS = ("state", "action", "reward", "discount", "is_first", "is_last", "is_terminal")
"""The step keys of a state model's sequence batches (no ``image``: the frames are never read)."""


def check_observation_fields(config):
    """Raise :class:`ConfigError` for a bad ``observation``, ``state_layers`` or ``state_units``."""
    if config.observation not in OBSERVATIONS:
        raise ConfigError(f"observation must be one of {', '.join(OBSERVATIONS)}; got "
                          f"{config.observation!r}")
    for name in ("state_layers", "state_units"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def state_size(dataset, observation):
    """The size S of the dataset's stored states when ``observation == "state"`` (None for images);
    a :class:`ConfigError` saying what to do when the dataset stores no states."""
    if observation != "state":
        return None
    states = getattr(dataset, "states", None)
    if states is None:
        ids = sorted(set(map(str, getattr(dataset, "dataset_ids", [])))) or ["this dataset"]
        raise ConfigError(
            f"observation='state' trains on the dataset's stored per-step states, but "
            f"{', '.join(ids)} stores none (format version 1, or imported data); train with "
            "observation=image, or use a dataset made by this version of lqv-d4rl (lqv-d4rl "
            "generate), whose manifest declares spaces.state")
    return int(states.shape[1])


def sequence_keys(observation):
    """The keys a sequence sampler should gather for a model of ``observation`` (None: all)."""
    return STATE_SEQUENCE_KEYS if observation == "state" else None


def state_fields(dataset):
    """``[(name, size), ...]`` of the dataset's ``state`` vector (from its manifest), or one
    unnamed part when the manifest does not name them; [] without states."""
    states = getattr(dataset, "states", None)
    if states is None:
        return []
    metadata = getattr(dataset, "metadata", {}) or {}
    manifest = metadata.get("sources", [metadata])[0]
    fields = manifest.get("spaces", {}).get("state", {}).get("fields")
    if fields and sum(int(size) for _, size in fields) == states.shape[1]:
        return [(str(name), int(size)) for name, size in fields]
    return [("state", int(states.shape[1]))]


def dimension_names(dataset):
    """One name per state dimension: ``"<field>[i]"`` (``"<field>"`` for a part of size 1)."""
    names = []
    for name, size in state_fields(dataset):
        names += [name] if size == 1 else [f"{name}[{index}]" for index in range(size)]
    return names


def world_model_overrides(config, state_dim):
    """The :class:`lqv_d4rl.networks.WorldModelConfig` settings of a state model (``{}`` for
    images)."""
    if config.observation != "state":
        return {}
    if state_dim is None:
        raise ConfigError("observation='state' needs the size of the dataset's states (state_dim)")
    return {"state_dim": int(state_dim), "state_layers": config.state_layers,
            "state_units": config.state_units}


__all__ = ["OBSERVATIONS", "STATE_SEQUENCE_KEYS", "check_observation_fields", "dimension_names",
           "sequence_keys", "state_fields", "state_size", "world_model_overrides"]
