"""``lqv-d4rl generate``: train behaviour policies, record the random / medrep / medium datasets.

Two behaviours: ``tia`` (the paper's recipe, below: TIA trained on the distracted images) and
``sac-state`` (SAC trained on the states, V-D4RL's way, every episode rendered afterwards from its
stored physics, car_racing's by replaying its actions live: a recipe for CPUs,
:mod:`collectors.state_recipe`). Every step of every dataset stores its ``state`` and ``physics``
(format version 2; car_racing has no ``physics``).

``generate(task, levels=("random", "medrep", "medium"), ...)`` follows the paper's Appendix C:

* ``random``: ``random_policies`` randomly initialized TIA agents (distinct seeds), each recording
  ``random_episodes_per_policy`` episodes (paper: 10 x 20 = 200), acting like a collecting agent
  (sampled actions plus exploration noise 0.3): an untrained actor alone barely moves.
* ``medrep``: one TIA training run (collectors.online) from scratch until its evaluation return
  first reaches the task's medium band (``min`` of the paper's Table 3 medium row). Its training
  episodes, each tagged with the snapshot that played it, make the dataset; when the run produced
  more than ``medrep_episodes`` (paper: 400), that many evenly spaced over the run are kept (first
  and last included); when it produced fewer, all of them (the manifest records how many).
* ``medium``: the snapshot whose evaluation return lies in the medium band ``[min, max]`` (if no
  evaluation landed inside, the one closest to it, and the manifest says so) records
  ``medium_episodes`` episodes (paper: 200) without exploration noise: one fixed policy, and its
  evaluation behaviour is what put it in the band.

Presets:

* ``paper``: the published sizes and schedule (``TIAConfig.paper(task)``: batch 50 x 50, 5000
  prefill steps, 100 updates every 1000 env steps, ...), full 500-step episodes, a 1000-frame
  distractor pool, 10 x 20 / 400 / 200 episodes. A GPU run.
* ``smoke``: a pipeline check that finishes in under a minute on a 2-core CPU. Its datasets
  are tiny and are NOT the benchmark: tiny networks (``TIAConfig.smoke()``), episodes cut at 50
  agent steps, 3 random policies x 2 episodes, a 1000-env-step training run (about 10 episodes, a
  new snapshot for every episode after the prefill), 4 medium episodes, a 200-frame distractor
  pool. A tiny TIA cannot reach the real medium band in minutes, so the band is relaxed: the smoke
  run trains for its fixed budget and its last evaluated snapshot is the "medium" policy.
  Structure is what smoke checks: several policies in random, many snapshots in medrep, one
  policy in medium.

Resuming: the training checkpoint lives in ``<root>/.work/<task>-seed<S>/`` and datasets are
written through ``ShardWriter(resume=True)``; rerunning the same command after an interruption
continues from the last checkpoint and the last finished shard, and, since every episode is seeded
from its position, writes the same bytes as an uninterrupted run (same seed and preset, with any
number of ``workers``: ``num_envs``, the batch of parallel episodes, is part of the recipe).
A finished dataset is never touched without ``overwrite=True``: a rerun skips it (and refuses,
with GenerateError, when it was made with other settings, e.g. another seed, rather than mix two
recipes), and a run whose levels are all finished is refused (DatasetExistsError) since there is
nothing left to do.

Threads: generate runs PyTorch on :data:`TORCH_THREADS` CPU thread(s) and restores the caller's
setting afterwards. How a CPU reduction is split over threads changes its float rounding, so with
torch's default (one thread per core) the trained snapshots, hence the medrep and medium bytes,
would depend on the machine's core count. One thread is also the fastest on small machines: acting
on a few 64x64 images is far too small to split, and spare cores serve the environment workers.
The sac-state recipe's training run takes its own fixed count, ``StateRecipe.training_threads``
(humanoid_walk's 2: its updates are most of its time), for the same reason a recipe's value and
never the machine's.
"""

import dataclasses
import json
import numbers
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lqv_d4rl.cpu_kernels import kernel_settings, unpinned_torch_kernels
from lqv_d4rl.errors import DatasetExistsError, LQVError
from lqv_d4rl.format import DEFAULT_MAX_SHARD_BYTES, ShardWriter, read_manifest
from lqv_d4rl.locks import dataset_locks
from lqv_d4rl.registry import dataset_path, dataset_root, get_recipe
from lqv_d4rl.tasks import LEVELS, get_task

PRESETS = ("smoke", "paper")
MEDIUM_POLICY_FILE = "medium-policy.pt"
MEDIUM_POLICY_INFO = "medium-policy.json"
TORCH_THREADS = 1
"""PyTorch CPU threads during generate (see the module docstring: same bytes on any machine)."""


class GenerateError(LQVError, ValueError):
    """generate() cannot do what it was asked (bad option, or a resume with other settings)."""


@dataclass(frozen=True)
class CollectionRecipe:
    """How ``generate`` makes the three datasets of one task."""

    preset: str
    """``"paper"`` or ``"smoke"`` (or a name of your own for custom recipes)."""
    tia: object
    """The :class:`collectors.tia.TIAConfig` of the behaviour policies (sizes and schedule)."""
    random_policies: int = 10
    """Randomly initialized TIA agents of the random level."""
    random_episodes_per_policy: int = 20
    """Episodes each random agent records."""
    random_explore: bool = True
    """Random agents act with sampled actions plus exploration noise."""
    medrep_episodes: int = 400
    """Most training episodes kept in medrep (evenly spaced over the run when it made more)."""
    medium_episodes: int = 200
    """Episodes the medium policy records."""
    medium_explore: bool = False
    """The medium policy acts without exploration noise (the actor's mode)."""
    medium_band: tuple | None = None
    """(min, max) evaluation return of the medium level; None (smoke): train the whole budget and
    take the last evaluated snapshot."""
    max_env_steps: int = 1_000_000
    """Budget of the training run (environment steps)."""
    max_episode_steps: int | None = None
    """Cut episodes after this many agent steps; None: the task's full episodes."""
    num_video_frames: int = 1000
    """Frames in the distractor pool."""
    checkpoint_every: int = 10_000
    """Environment steps between training checkpoints (0: after every round of episodes)."""
    num_envs: int = 1
    """Episodes played at once (rounds of ``num_envs``): part of the recipe, it changes the bytes.
    ``--env-workers`` only says how many processes step them, so it does not."""

    def describe(self):
        """The recipe as a JSON-able dict (provenance), the TIA config included."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "tia"}
        fields["medium_band"] = None if self.medium_band is None else list(self.medium_band)
        return {**fields, "tia": dataclasses.asdict(self.tia)}


BEHAVIOURS = {"sac-state": ("cpu", "smoke"), "tia": ("smoke", "paper")}
"""Behaviour recipes and their presets (the first is the default)."""


def behaviour_recipe(task, behaviour="sac-state", preset=None):
    """The recipe of ``behaviour`` for ``preset`` (default: the behaviour's first preset):
    a :class:`CollectionRecipe` for ``tia``, a ``collectors.state_recipe.StateRecipe`` for
    ``sac-state``."""
    if behaviour not in BEHAVIOURS:
        raise GenerateError(f"behaviour must be one of {', '.join(BEHAVIOURS)}; got "
                            f"{behaviour!r}")
    presets = BEHAVIOURS[behaviour]
    preset = presets[0] if preset is None else preset
    if preset not in presets:
        raise GenerateError(f"the {behaviour} behaviour has the presets {', '.join(presets)}; "
                            f"got {preset!r}")
    if behaviour == "tia":
        return collection_recipe(task, preset)
    from .state_recipe import state_recipe

    return state_recipe(task, preset)


def _is_state_recipe(recipe):
    from .state_recipe import StateRecipe

    return isinstance(recipe, StateRecipe)


def collection_recipe(task, preset="smoke"):
    """The :class:`CollectionRecipe` of ``task`` for ``preset`` (``"smoke"`` or ``"paper"``)."""
    from .tia import TIAConfig

    get_task(task)
    if preset == "paper":
        medium = get_recipe(f"{task}-medium").paper_returns
        config = TIAConfig.paper(task)
        return CollectionRecipe(
            preset="paper", tia=config, medium_band=(medium["min"], medium["max"]),
            random_policies=10, random_episodes_per_policy=20, num_envs=8,
            medrep_episodes=get_recipe(f"{task}-medrep").episodes,
            medium_episodes=get_recipe(f"{task}-medium").episodes,
            max_env_steps=config.total_steps)
    if preset == "smoke":
        config = dataclasses.replace(
            TIAConfig.smoke(), prefill_steps=200, pretrain_steps=2, train_every=100,
            train_steps=2, eval_every=200, eval_episodes=1, total_steps=1000)
        return CollectionRecipe(
            preset="smoke", tia=config, random_policies=3, random_episodes_per_policy=2,
            medrep_episodes=400, medium_episodes=4, medium_band=None, max_env_steps=1000,
            max_episode_steps=50, num_video_frames=200, checkpoint_every=0)
    raise GenerateError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")


@dataclass
class GenerateResult:
    """What :func:`generate` produced."""

    folders: dict
    """level -> dataset folder."""
    statistics: dict
    """level -> return statistics (lqv_d4rl.stats.return_statistics) of the dataset."""
    table: str
    """The statistics table, ours next to the paper's Table 3."""
    work_dir: Path
    """Folder of the training checkpoint."""
    verdicts: dict
    """level -> the :mod:`lqv_d4rl.fidelity` checks of the dataset against Table 3."""
    fidelity: str
    """Those checks as a table (``pass`` or how far off)."""
    timings: dict
    """phase -> wall-clock seconds this call spent in it (phases a resumed call skipped are
    missing); the sac-state recipe times its phases, tia reports none."""

    @property
    def faithful(self):
        """True when every check of every level passed."""
        from lqv_d4rl.fidelity import all_passed

        return all(all_passed(found) for found in self.verdicts.values())


def generate(task, levels=LEVELS, *, root=None, video_dir=None, preset=None, device="cpu",
             workers=1, seed=0, overwrite=False, num_envs=None, recipe=None, progress=True,
             max_shard_bytes=DEFAULT_MAX_SHARD_BYTES, backend="process", behaviour="sac-state",
             max_env_steps=None, record_closest_medium=False):
    """Generate the datasets ``<task>-<level>`` for ``levels`` under the dataset root.

    Args:
        task: benchmark task, e.g. ``"walker_walk"``.
        levels: any of ``"random"``, ``"medrep"``, ``"medium"``.
        root: dataset root (default ``$LQV_D4RL_ROOT`` or ``~/.lqv_d4rl``).
        video_dir: folder or glob of real driving videos; None uses the procedural video.
        preset: the behaviour's preset: ``"cpu"`` (default) or ``"smoke"`` for ``sac-state``
            (collectors.state_recipe), ``"smoke"`` (default) or ``"paper"`` for TIA (see the
            module docstring); ignored if ``recipe``.
        device: torch device of the TIA agents (``"cpu"`` or ``"cuda"``).
        workers: environment worker processes (1: step environments in this process). They are
            started with multiprocessing's ``spawn``: a script calling generate() with
            ``workers > 1`` needs the ``if __name__ == "__main__":`` guard.
        seed: seeds everything; same seed and preset -> same dataset bytes, with any
            ``workers``.
        overwrite: replace finished datasets and restart the training run.
        num_envs: episodes played at once (default: the TIA recipe's ``num_envs``, 8 for
            ``paper``, 1 for ``smoke``); part of the recipe, unlike ``workers``.
        recipe: a :class:`CollectionRecipe` (e.g. a smaller one for tests).
        progress: show progress bars and print the statistics table.
        max_shard_bytes: passed to ShardWriter.
        backend: ``"process"`` (worker processes on this machine) or ``"ray"`` (Ray actors, see
            collectors.ray_workers; the observations, hence the datasets, are the same).
        behaviour: ``"sac-state"`` (the default: SAC trained on states, V-D4RL's way, rendered
            afterwards; the recipe made and measured on CPUs, car_racing included;
            :mod:`collectors.state_recipe`) or ``"tia"`` (TIA trained on the distracted images,
            the paper's recipe, a GPU job whose learning with the video is unproven on a CPU:
            docs/benchmarks.md). With ``sac-state``,
            ``workers`` are render processes and ``device``, ``num_envs`` and ``backend`` do
            not apply.
        max_env_steps: ``sac-state`` only: the SAC training run's budget in environment steps
            (default: the recipe's, ``SACConfig.total_steps``). A run that spent a smaller budget
            without a snapshot at the medium level continues from where it stopped.
        record_closest_medium: ``sac-state`` only: when the budget is spent and no snapshot
            matched Table 3's medium row, record the closest candidate as the medium level (its
            manifest's ``training_run.medium_policy.recorded_without_match``, its fidelity
            verdicts showing the miss) instead of raising GenerateError.

    Returns a :class:`GenerateResult`. Without ``overwrite``, finished datasets among the levels
    are skipped (an interrupted run is resumed), and DatasetExistsError is raised when every
    requested dataset is already complete.
    """
    spec = get_task(task)
    levels = _check_levels(levels)
    _check_device(device)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise GenerateError(f"seed must be a non-negative integer, got {seed!r}")
    recipe = recipe if recipe is not None else behaviour_recipe(task, behaviour, preset)
    behaviour = "sac-state" if _is_state_recipe(recipe) else "tia"
    if max_env_steps is not None:
        recipe = _with_training_budget(recipe, behaviour, max_env_steps)
    if record_closest_medium and behaviour != "sac-state":
        raise GenerateError("record_closest_medium applies to the sac-state behaviour (its "
                            "medium search); a TIA run always records the snapshot closest to "
                            "the band when its budget ends")
    if record_closest_medium and "medium" not in levels:
        raise GenerateError("record_closest_medium records the medium level; add medium to the "
                            f"levels (--levels {','.join([*levels, 'medium'])})")
    if behaviour == "sac-state" and recipe.medium_speed_limits and spec.kind != "gym":
        raise GenerateError(f"medium_speed_limits apply to car_racing only (a speed limit on its "
                            f"state features); {task} has none")
    if behaviour == "sac-state" and recipe.training_shaping:
        from .state_recipe import shaping_potential

        try:
            shaping_potential(task)
        except ValueError as error:
            raise GenerateError(str(error)) from None
    if behaviour == "tia" and num_envs is not None:  # the recipe records what was played
        recipe = dataclasses.replace(recipe, num_envs=int(num_envs))
    num_envs = int(getattr(recipe, "num_envs", 1))
    root = dataset_root(root)
    folders = {level: dataset_path(f"{task}-{level}", root) for level in levels}
    work_dir = root / ".work" / (f"{task}-seed{seed}" if behaviour == "tia"
                                 else f"{task}-{behaviour}-seed{seed}")
    finished = _finished_levels(folders, overwrite)
    pending = [level for level in levels if level not in finished]

    from .vector_env import make_vector_env

    unpinned = unpinned_torch_kernels()
    if unpinned:
        warnings.warn(unpinned, stacklevel=2)
    with dataset_locks([*folders.values(), work_dir], "generate"):  # one writer per folder
        pool = _video_pool(spec, video_dir, recipe.num_video_frames, seed)
        provenance = _provenance(recipe, pool, seed=seed, num_envs=num_envs, device=device,
                                 video_dir=video_dir, behaviour=behaviour)
        _check_finished_match(finished, provenance)
        if progress and finished:
            skipped = ", ".join(f"{task}-{level}" for level in sorted(finished))
            print(f"skipping finished datasets: {skipped}")
        if overwrite and work_dir.exists() and _trained_levels(recipe) & set(pending):
            shutil.rmtree(work_dir)
        if behaviour == "sac-state":
            from .state_recipe import StateJob

            job = StateJob(task, spec, recipe, workers=workers, root=root, work_dir=work_dir,
                           seed=seed, overwrite=overwrite, progress=progress,
                           provenance=provenance, max_shard_bytes=max_shard_bytes,
                           video_pool=pool, record_closest_medium=record_closest_medium)
            with torch_threads(TORCH_THREADS):
                job.run(folders, pending)
            return summarize(task, folders, work_dir, progress, job.timings)
        with torch_threads(TORCH_THREADS), make_vector_env(
                task, num_envs, workers=workers, seed=seed, backend=backend,
                env_kwargs={"distractor": pool}) as venv:
            job = TIAJob(task, spec, recipe, venv, root, work_dir, seed, device, overwrite,
                         progress, provenance, max_shard_bytes)
            if "random" in pending:
                job.record_random(folders["random"])
            if {"medrep", "medium"} & set(pending):
                job.train_and_record(folders, pending)
    return summarize(task, folders, work_dir, progress)


def _with_training_budget(recipe, behaviour, max_env_steps):
    """The sac-state ``recipe`` with its training run's budget set to ``max_env_steps``."""
    if behaviour != "sac-state":
        raise GenerateError("max_env_steps applies to the sac-state behaviour (its SAC training "
                            "run); a TIA recipe's budget is its max_env_steps field")
    if isinstance(max_env_steps, bool) or not isinstance(max_env_steps, numbers.Integral) \
            or max_env_steps <= recipe.sac.learning_starts:
        raise GenerateError(f"max_env_steps must be a whole number of environment steps above "
                            f"the run's learning_starts ({recipe.sac.learning_starts}); got "
                            f"{max_env_steps!r}")
    return dataclasses.replace(recipe, sac=dataclasses.replace(recipe.sac,
                                                               total_steps=int(max_env_steps)))


def _trained_levels(recipe):
    """The levels whose policies come from the training run (``--overwrite`` then restarts it):
    medrep and medium, and the sac-state recipe's random level of early snapshots."""
    levels = {"medrep", "medium"}
    if getattr(recipe, "random_behaviour", None) == "early_snapshots":
        levels.add("random")
    return levels


def _check_levels(levels):
    if isinstance(levels, str):
        levels = [part.strip() for part in levels.split(",") if part.strip()]
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        raise GenerateError(f"levels must be among {', '.join(LEVELS)}; got {list(levels)}")
    return [level for level in LEVELS if level in levels]


def _check_device(device):
    """Raise GenerateError unless ``device`` is a torch device this machine has."""
    from lqv_d4rl.torch_data import DeviceUnavailableError, check_device

    try:
        check_device(device)
    except DeviceUnavailableError as err:
        raise GenerateError(str(err)) from None


@contextmanager
def torch_threads(count):
    """Run the block with ``count`` PyTorch CPU threads, then restore the previous number."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _finished_levels(folders, overwrite):
    """level -> manifest of the datasets already complete (to skip); raise if that is all of them.

    Rerunning an interrupted generate skips what it finished and continues the rest; asking only
    for finished datasets is refused, since without ``overwrite`` there is nothing to do.
    """
    if overwrite:
        return {}
    finished = {}
    for level, folder in folders.items():
        try:
            manifest = read_manifest(folder)
        except FileNotFoundError:
            continue
        if manifest.get("complete"):
            finished[level] = manifest
    if finished and len(finished) == len(folders):
        described = ", ".join(f"{m['dataset_id']!r} ({m['num_episodes']} episodes)"
                              for m in finished.values())
        raise DatasetExistsError(
            f"already complete in {next(iter(folders.values())).parent}: {described}; nothing "
            "was changed. Pass --overwrite (overwrite=True) to generate them again.")
    return finished


def _check_finished_match(finished, provenance):
    """Refuse to skip a finished dataset that was generated with other settings than this run.

    Skipping it would leave the task's levels from two different recipes (another seed, preset,
    background or device) while the caller asked for one.
    """
    for manifest in finished.values():
        stored = manifest.get("provenance", {})
        differing = [key for key in provenance if key in stored and (
            _without_training_budget(stored[key]) != _without_training_budget(provenance[key])
            if key == "recipe" else stored[key] != provenance[key])]
        if differing:
            changes = "; ".join(f"{key}: {stored[key]!r} there, {provenance[key]!r} now"
                                if key != "recipe" else "recipe differs" for key in differing)
            raise GenerateError(
                f"{manifest['dataset_id']!r} is already complete but was generated with other "
                f"settings ({changes}); nothing was changed. Pass --overwrite to generate it "
                "again with these settings, leave it out of --levels to keep it, or use another "
                "--root.")


def _without_training_budget(recipe):
    """A provenance's recipe as datasets are compared: a sac-state recipe without its training
    run's budget (``sac.total_steps``), which a run that spent it is given more of without
    changing what it recorded before."""
    if isinstance(recipe, dict) and isinstance(recipe.get("sac"), dict):
        return {**recipe, "sac": {k: v for k, v in recipe["sac"].items() if k != "total_steps"}}
    return recipe


def _recipe_to_resume(folder, recipe):
    """The recipe a partial dataset in ``folder`` goes on with: its own where it differs from
    ``recipe`` only in the training budget (so a run given more steps finishes it), else
    ``recipe`` (and ShardWriter refuses to resume a dataset of another recipe)."""
    try:
        stored = read_manifest(folder).get("provenance", {}).get("recipe")
    except (FileNotFoundError, LQVError):
        return recipe
    if stored != recipe and _without_training_budget(stored) == _without_training_budget(recipe):
        return stored
    return recipe


def _video_pool(spec, video_dir, num_frames, seed):
    """The background VideoPool of the task, built once for every env; None without distractor."""
    import distractors

    if not spec.has_distractor:
        if video_dir is not None:
            raise GenerateError(f"{spec.name} keeps its own scene and has no video background; "
                                "leave out --video-dir")
        return None
    try:
        return distractors.make_video_pool(video_dir, num_frames=num_frames, seed=seed)
    except distractors.VideoSourceError as err:
        raise GenerateError(f"cannot use --video-dir {video_dir!r}: {err}") from err


def _provenance(recipe, pool, *, seed, num_envs, device, video_dir, behaviour):
    if pool is None:
        source = "none (the task has no distractor)"
    elif video_dir is None:
        source = "procedural driving video (no --video-dir given)"
    else:
        source = f"videos from {video_dir}"
    return json.loads(json.dumps({
        "generator": "lqv-d4rl generate", "behaviour": behaviour, "preset": recipe.preset,
        "seed": int(seed), "num_envs": num_envs if behaviour == "tia" else None,
        "device": str(device) if behaviour == "tia" else "cpu", "torch_threads": TORCH_THREADS,
        "cpu_kernels": kernel_settings(),
        "distractor_source": source, "distractor": None if pool is None else pool.description,
        "env": {"composite": "segmentation", "render_quality": "fast"},
        "render": {"composite": "segmentation", "render_quality": "fast",
                   "num_video_frames": recipe.num_video_frames, "pool_seed": int(seed),
                   "rgb_background": False},
        "recipe": recipe.describe(),
    }))


class GenerateJob:
    """What one generate() call shares between its levels: settings, writers, progress bars.

    The behaviours subclass it (:class:`TIAJob` here, ``collectors.state_recipe.StateJob``).
    """

    level_policies = {}
    """level -> description of its behaviour policies (provenance ``level_policy``)."""

    def __init__(self, task, spec, recipe, root, work_dir, seed, overwrite, progress, provenance,
                 max_shard_bytes):
        self.task, self.spec, self.recipe = task, spec, recipe
        self.root, self.work_dir, self.seed = root, work_dir, seed
        self.overwrite, self.progress = overwrite, progress
        self.provenance, self.max_shard_bytes = provenance, max_shard_bytes

    def writer(self, folder, level, extra=None):
        """A ShardWriter for ``level`` that resumes a partial dataset (or overwrites); it stores
        the task's ``state`` and ``physics`` arrays (lqv_d4rl.states)."""
        from lqv_d4rl.states import physics_fields, state_fields

        provenance = dict(self.provenance, level_policy=self.level_policies[level],
                          **(extra or {}))
        if not self.overwrite and "recipe" in provenance:
            provenance["recipe"] = _recipe_to_resume(folder, provenance["recipe"])
        try:
            return ShardWriter(folder, dataset_id=f"{self.task}-{level}", task=self.task,
                               level=level, action_dim=self.spec.action_dim,
                               provenance=provenance, max_shard_bytes=self.max_shard_bytes,
                               overwrite=self.overwrite, resume=not self.overwrite,
                               state_fields=state_fields(self.task),
                               physics_fields=physics_fields(self.task))
        except ValueError as err:
            raise GenerateError(f"{err} (CLI: rerun with the options of the interrupted run, or "
                                f"delete {folder} to record it again; --overwrite would also "
                                "restart the training run)") from err

    def bar(self, total, initial, description):
        """A tqdm bar (or None without progress)."""
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=description, unit="episode",
                    dynamic_ncols=True)


class TIAJob(GenerateJob):
    """The ``tia`` behaviour: TIA trained online on the distracted images (the paper's recipe)."""

    def __init__(self, task, spec, recipe, venv, root, work_dir, seed, device, overwrite,
                 progress, provenance, max_shard_bytes):
        super().__init__(task, spec, recipe, root, work_dir, seed, overwrite, progress,
                         provenance, max_shard_bytes)
        self.venv, self.device = venv, device

    level_policies = {
        "random": "randomly initialized TIA agents (policy ids tia-initPP-seedS), exploration "
                  "noise",
        "medrep": "TIA training run from scratch until the medium band; policy id = snapshot "
                  "(tia-seedS-stepNNNNNN, env steps) or tia-seedS-prefill (uniform random "
                  "actions)",
        "medium": "one fixed TIA snapshot (evaluation return in the medium band), no exploration "
                  "noise",
    }

    def record_random(self, folder):
        """Record the random level (see collectors.recorders.record_random)."""
        from .recorders import record_random
        from .tia import TIAAgent

        recipe = self.recipe
        total = recipe.random_policies * recipe.random_episodes_per_policy
        with self.writer(folder, "random") as writer:
            bar = self.bar(total, writer.num_episodes, f"record {self.task}-random")
            record_random(
                self.venv, writer,
                lambda agent_seed: TIAAgent(recipe.tia, self.spec.action_dim, device=self.device,
                                            seed=agent_seed),
                num_policies=recipe.random_policies,
                episodes_per_policy=recipe.random_episodes_per_policy, seed=self.seed,
                explore=recipe.random_explore, max_episode_steps=recipe.max_episode_steps,
                progress=bar)
            _close(bar)

    def train_and_record(self, folders, levels):
        """Run (or resume) the training run, then write medrep and/or medium."""
        from .online import OnlineTrainer
        from .recorders import MedrepRecorder

        recorder = MedrepRecorder()
        tracker = MediumPolicyTracker(self.recipe.medium_band, self.work_dir)
        trainer = OnlineTrainer(
            self.recipe.tia, self.venv, work_dir=self.work_dir, seed=self.seed,
            device=self.device, max_env_steps=self.recipe.max_env_steps,
            max_episode_steps=self.recipe.max_episode_steps,
            checkpoint_every=self.recipe.checkpoint_every, on_episode=recorder,
            on_evaluation=tracker, progress=self.progress,
            settings={key: self.provenance[key] for key in RUN_SETTINGS})
        state = trainer.run()
        medium = tracker.load_info()
        if medium is None and "medium" in levels:
            raise GenerateError(
                f"the training run ended after {state.env_steps} env steps without an evaluation "
                f"(its budget max_env_steps={self.recipe.max_env_steps} does not exceed "
                f"prefill_steps={self.recipe.tia.prefill_steps}); raise the budget")
        run_info = {"training_run": {
            "env_steps": state.env_steps, "episodes": state.episodes, "updates": state.updates,
            "stop_reason": state.stop_reason,
            "evaluations": [{"env_steps": e.env_steps, "mean_return": e.mean_return}
                            for e in trainer.evaluations],
            "medium_policy": medium}}
        if "medrep" in levels:
            self.write_medrep(folders["medrep"], trainer.replay, recorder, run_info)
        if "medium" in levels:
            self.record_medium(folders["medium"], medium, run_info)

    def write_medrep(self, folder, replay, recorder, run_info):
        """Write the selected training episodes (from the replay) as the medrep dataset.

        The replay keeps no states, so each episode's ``state`` and ``physics`` are computed
        again by playing its actions from its seed (the simulators are deterministic; the
        rewards must come out equal, which is checked).
        """
        from lqv_d4rl.envs import make_env
        from lqv_d4rl.physics import StateSimulator

        from .recorders import resimulate_states

        selected = recorder.select(self.recipe.medrep_episodes)
        extra = dict(run_info, medrep_selection={
            "training_episodes": len(recorder.episodes), "kept": len(selected),
            "rule": "evenly spaced over the run (all when fewer than medrep_episodes)"})
        simulator = (StateSimulator(self.task) if self.spec.kind == "dmc"
                     else make_env(self.task))
        with self.writer(folder, "medrep", extra) as writer:
            bar = self.bar(len(selected), writer.num_episodes, f"write {self.task}-medrep")
            for index in selected[writer.num_episodes:]:
                steps, info = replay.episode(index), replay.episode_info(index)
                states = resimulate_states(simulator, steps, info["seed"])
                writer.add_episode({**steps, **states}, **info)
                _advance(bar)
            _close(bar)
        simulator.close()

    def record_medium(self, folder, medium, run_info):
        """Record the medium level with the tracked medium snapshot."""
        from .recorders import record_policy
        from .tia import TIAAgent

        agent = TIAAgent.load(self.work_dir / MEDIUM_POLICY_FILE, device=self.device)
        with self.writer(folder, "medium", run_info) as writer:
            bar = self.bar(self.recipe.medium_episodes, writer.num_episodes,
                           f"record {self.task}-medium")
            record_policy(self.venv, writer, agent, policy_id=medium["policy_id"],
                          policy_step=medium["policy_step"],
                          episodes=self.recipe.medium_episodes, seed=self.seed,
                          explore=self.recipe.medium_explore,
                          max_episode_steps=self.recipe.max_episode_steps, progress=bar)
            _close(bar)


RUN_SETTINGS = ("distractor", "device", "torch_threads")
"""Provenance entries a resumed training run must share with its checkpoint (the background
and the arithmetic; the TIA config, seed and num_envs are checked by the trainer itself)."""


class MediumPolicyTracker:
    """The TIA trainer's ``on_evaluation``: keeps the snapshot closest to the medium band, says stop.

    The snapshot is saved to ``<work_dir>/medium-policy.pt`` whenever an evaluation comes closer
    to the band than every earlier one (distance 0 inside ``[min, max]``, as :meth:`distance`
    measures it); the run stops at the first evaluation whose mean return is at least ``min``
    (the policy has reached medium). Without a band (smoke) every evaluation replaces the
    snapshot and the run never stops early. (The sac-state recipe's
    ``collectors.state_recipe.MediumSearch`` measures distance its own way.)
    """

    rule = "mean"
    """Recorded in the snapshot's info: what decided it."""

    def __init__(self, band, work_dir):
        self.band = band
        self.work_dir = Path(work_dir)

    def __call__(self, evaluation, agent):
        distance = self.distance(evaluation)
        best = self.load_info()
        if best is None or distance < best["distance"]:
            agent.save(self.work_dir / MEDIUM_POLICY_FILE)
            from lqv_d4rl.format import write_json_atomically

            write_json_atomically(self.work_dir / MEDIUM_POLICY_INFO, {
                "policy_id": evaluation.policy_id, "policy_step": evaluation.env_steps,
                "evaluation_return": evaluation.mean_return,
                "evaluation_min": float(min(evaluation.returns)), "rule": self.rule,
                "distance": distance, "band": None if self.band is None else list(self.band),
                "in_band": self.band is not None and distance == 0.0})
        return self.band is not None and evaluation.mean_return >= self.band[0]

    def distance(self, evaluation):
        """How far the evaluation's mean return is from the band (smoke: later is closer)."""
        if self.band is None:
            return -float(evaluation.env_steps)
        low, high = self.band
        return max(low - evaluation.mean_return, evaluation.mean_return - high, 0.0)

    def load_info(self):
        """The saved snapshot's info dict, or None before the first evaluation."""
        path = self.work_dir / MEDIUM_POLICY_INFO
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def summarize(task, folders, work_dir=None, progress=True, timings=None):
    """The :class:`GenerateResult` of finished datasets (level -> folder): their return
    statistics next to Table 3's and the fidelity checks, printed when ``progress``."""
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.fidelity import fidelity_verdicts, format_verdicts
    from lqv_d4rl.stats import format_statistics_table, return_statistics

    rows, statistics, verdicts = [], {}, {}
    for level, folder in folders.items():
        data = load_dataset(folder, lazy=True)
        statistics[level] = return_statistics(data.returns)
        verdicts[level] = fidelity_verdicts(task, level, data.returns)
        data.close()
        paper = get_recipe(f"{task}-{level}")
        rows.append((f"{task}-{level} (generated)", statistics[level]))
        rows.append((f"{task}-{level} (paper)", dict(paper.paper_returns,
                                                     episodes=paper.episodes)))
    table = format_statistics_table(rows)
    fidelity = format_verdicts([(f"{task}-{level}", found) for level, found in verdicts.items()])
    if progress:
        print(table)
        print("\nAgainst the paper's Table 3 (tolerances: lqv_d4rl.fidelity, DATASETS.md):")
        print(fidelity)
    return GenerateResult(folders, statistics, table, work_dir, verdicts, fidelity,
                          dict(timings or {}))


def _advance(bar):
    if bar is not None:
        bar.update(1)


def _close(bar):
    if bar is not None:
        bar.close()


def episode_counts(recipe):
    """Episodes per level a recipe asks for (medrep: at most; the run decides)."""
    return {"random": recipe.random_policies * recipe.random_episodes_per_policy,
            "medrep": recipe.medrep_episodes, "medium": recipe.medium_episodes}


__all__ = ["BEHAVIOURS", "CollectionRecipe", "GenerateError", "GenerateJob", "GenerateResult",
           "MediumPolicyTracker", "PRESETS", "TIAJob", "behaviour_recipe", "collection_recipe",
           "episode_counts", "generate"]
