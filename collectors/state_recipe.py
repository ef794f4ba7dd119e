"""The ``sac-state`` behaviour recipe: SAC on states makes the behaviour policies, on a CPU.

V-D4RL made its behaviour policies with SAC trained on dm_control's proprioceptive states
(:mod:`collectors.sac`). Policies that never look at the images let the expensive part, rendering,
happen once per recorded frame: every episode is first played on the physics alone
(:class:`lqv_d4rl.physics.StateSimulator`, thousands of steps per second), and the episodes that
make the datasets are then rendered from their stored physics states with the distractor video
(:class:`lqv_d4rl.physics.FrameRenderer`, exactly the frames the live environment would have
shown). The levels, all from one SAC training run from scratch:

* ``random``: ``random_policies`` (paper: 10) snapshots from the start of the run, the untrained
  actor included, one per quantile (p + 0.5) / 10 of Table 3's random row, each playing
  ``random_episodes_per_policy`` (20) episodes with tanh(mean). Each candidate (an evaluated
  snapshot before the band, its evaluation mean at most the row's max) first plays its 20
  episodes on the physics alone; each quantile then takes the unused candidate whose 20 episodes'
  mean is closest, among those whose episodes all stay within ``random_max_ratio`` (1.0) x the
  row's max (:func:`choose_random_policies`), and the level records exactly those episodes. The
  match is made on the recorded episodes because an early snapshot's returns vary widely from
  episode to episode: matched on its ten evaluation episodes, a snapshot's recorded episodes
  regressed far below them (walker_walk: evaluation mean 106, recorded 46.5). The paper's random
  returns (walker_walk mean 87 and max 199, cheetah_run 78 and 198) are out of reach of untrained
  policies (randomly initialized SAC actors: walker_walk 45, cheetah_run 8; uniform, bang-bang and
  TIA-like actors at most 69 and 13; DATASETS.md), so the level is made of barely trained ones.
  With ``random_snapshot_every`` the candidates also include the actors that played the
  training episodes in between (kept every that many environment steps until the band; the
  car_racing cpu preset: every episode). ``random_behaviour="untrained"`` keeps the randomly
  initialized actors (policy ids ``sac-init00-seed0``, ..., policy_step -1).
* ``medrep``: the run's training episodes until its mean evaluation return first reaches the
  task's medium band (the ``min`` of Table 3's medium row); where Table 3's medrep reaches into
  the band (cheetah_run), until the medium snapshot; where it ends far below the band
  (humanoid_walk), until the first training episode above Table 3's medrep max
  (``medrep_until``, :func:`medrep_end`); evenly spaced down to ``medrep_episodes`` (400) when
  there are more, as for TIA. The random level and this one are recorded as soon as the run
  has passed the point they end at (:func:`early_levels_known_at`), from the run as it
  was there, and the run then trains on for medium; with ``medrep_until="medium"``, both at
  the end. Training runs between episodes, so each episode is played by one fixed snapshot:
  ``sac-seed0-prefill`` for the uniformly random start (policy_step 0), else
  ``sac-seed0-step012000``, the learner after 12,000 environment steps (its policy_step).
* ``medium``: the first snapshot whose returns match Table 3's medium row (:class:`MediumSearch`:
  at least 95 % of its episodes in the band and its mean within 7 % of the paper's, confirmed on
  30 more episodes) plays ``medium_episodes`` (200) episodes as it was judged; the run trains on
  past the band until it finds one. If its budget (``SACConfig.total_steps``) runs out first,
  generate records no medium level (nor random and medrep if the run has not reached their end)
  and says so (:func:`budget_spent_message`); given a larger budget
  (``--max-env-steps``), the same run goes on from where it stopped
  (:meth:`SACRun._apply_budget`); with ``--record-closest-medium`` the closest candidate is
  recorded instead (:func:`closest_medium_notice`; humanoid_walk's medium level). It is judged
  acting with tanh(mean), with sampled actions, and, once it acts better than the paper's
  medium policy, under a fixed handicap: its actions
  scaled down (``medium_action_scales``, :data:`MEDIUM_ACTION_SCALES`). **A departure**: SAC
  snapshots of walker_walk near the band fall now and then (episode returns ~15..250 or
  ~550..700, never 95 % in the band), and the first that no longer falls already walks above it
  (590..660); the same snapshot with weaker actuators walks as consistently, at a medium return.
  The handicap is part of the medium policy: the stored actions are the scaled ones and the
  manifest's ``training_run.medium_policy`` records it (``transform``, ``action_transform``).

The learner's rewards may be shaped (``training_shaping``, :data:`SHAPING_POTENTIALS`:
potential-based, so the learner's optimal policy is the task's; the datasets keep the task's
rewards). **A departure**, in the cpu presets of hopper_hop and humanoid_walk only
(:data:`TRAINING_SHAPING`).

Every evaluated snapshot is kept under ``<work_dir>/snapshots/`` with its evaluation returns
(``state.json`` lists them). Presets: ``cpu`` (the published episode counts, full episodes,
:meth:`SACConfig.cpu`) and ``smoke`` (tiny, for tests).

**car_racing** (:mod:`lqv_d4rl.car_racing`). Its Box2D state cannot be set back for rendering, but
the simulation is deterministic, so:

* Episodes are played on :class:`~lqv_d4rl.car_racing.CarRacingSimulator` (car_racing stepped
  without drawing). The policy observes its 28 features (speeds, steering, the track ahead in the
  car's frame, progress: :data:`lqv_d4rl.car_racing.FEATURE_FIELDS`), which SAC trains on
  (:attr:`RecordedEpisode.features`, saved with the training episodes); the datasets store the
  12-value car ``state`` the live environment reports, and no ``physics``.
* **The random level** chooses among the actors of every training episode before the band, not
  only the evaluated ones (:data:`CAR_RACING_RANDOM`): SAC learns to drive between two
  evaluations, so the evaluated snapshots either spin or drive past Table 3's random max.
* Frames are recorded live: each dataset episode's stored actions are replayed from its seed in
  the real environment (:class:`~lqv_d4rl.car_racing.CarEpisodeRenderer`, ``workers`` processes),
  which checks that every replayed reward and car state equals the stored one.
* The cpu preset (:func:`car_racing_cpu`) keeps the learning rates 3e-4 but starts the
  temperature at 0.1 and makes 0.05 updates per agent step (``collectors.sac.CPU_TASK_SETTINGS``;
  the dm_control cpu values: 0.3 and 0.06). The update rate sets how many training episodes come before the band, i.e. medrep, and
  the band took about as many updates either way: runs with this training schedule (seed 0,
  outside generate, temperature 0.1) first evaluated in the band after 14,750 updates at 0.25
  updates per step (~120 episodes, far too few for the paper's 400) and after 12,125 at 0.0625
  (~390 episodes, whose returns, mean 87 and median 61, are Table 3's medrep, 76.1 and 54.1,
  within its +-30 %). ~390 would leave medrep short of its 400 episodes (the fidelity check
  wants exactly 400), so the preset makes 0.05 updates per step: ~12,000 updates then come after
  ~480 episodes (expected, not yet measured), of which 400 are kept evenly spaced (the same
  learning curve stretched, so about the same statistics). The temperature is the one those
  runs used (0.3 was not measured on car_racing).
* **Departure, the medium level.** SAC snapshots near the band do not drive like a medium
  policy: on a given track they either complete most of it (returns up to ~850) or spin out
  (60..200), so only 5..40 % of a snapshot's episodes land in Table 3's band (302.3..449.9),
  acting deterministically or sampled, and no snapshot passes the medium search. The search
  therefore also judges each snapshot that reached the band driving under a speed limit
  (``medium_speed_limits``, :data:`CAR_RACING_SPEED_LIMIT`;
  :func:`lqv_d4rl.car_racing.speed_limited_action`: no gas and a proportional brake above the
  limit). A driver that keeps to the road at a fixed speed covers a fixed distance per episode,
  so its return (1000 x tiles visited / track tiles - 100) varies with the track's length only,
  as Table 3's medium row does (std 42.7): measured with snapshots of one run whose own
  evaluation means were 327..862, 40 medium-seeded episodes each under the limit had means
  365..385, std 38..43 and 90..95 % in the band (the episodes outside are the shortest and
  longest tracks). The limit is part of the medium policy: the stored actions are the limited
  ones and the manifest's ``training_run.medium_policy`` records it (``transform``,
  ``action_transform``).

Resuming and bytes: episode ``k`` of a level is reset with ``derived_seed(seed, level, k)`` and
draws its action noise from its own generator, so any episode comes out the same wherever a run
was interrupted; the training run checkpoints its agent, episodes and sampling generator (the
commit point is ``state.json``, written last) and continues exactly. Rendering is per episode, so
the number of render ``workers`` does not change the bytes either; and the CPU kernels are pinned
(:mod:`lqv_d4rl.cpu_kernels`), so another x86-64 machine gives the same bytes too.
"""

import collections
import contextlib
import dataclasses
import json
import math
import numbers
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lqv_d4rl.fidelity import share_in_band
from lqv_d4rl.format import write_json_atomically
from lqv_d4rl.registry import get_recipe
from lqv_d4rl.tasks import get_task

from .generate import (MEDIUM_POLICY_FILE, MEDIUM_POLICY_INFO, GenerateError, GenerateJob,
                       torch_threads)
from .recorders import (
    STREAMS, EpisodeBuilder, RecordedEpisode, derived_seed, select_medrep_episodes,
)
from .sac import SACAgent, SACConfig, SACPolicy, TransitionReplay

STATE_PRESETS = ("cpu", "smoke")
RANDOM_BEHAVIOURS = ("early_snapshots", "untrained")
STATE_NAME = "state.json"
STATE_VERSION = 2
"""2: the untrained actor is evaluated too, and medium candidates play probe episodes."""
PROBES_PER_EVALUATION = 1000
"""Probe episodes numbered per evaluation (each evaluation's probes get their own seeds)."""
RANDOM_CANDIDATES_NAME = "random_candidates.json"
"""The work dir's record of the random level's candidates' returns
(:meth:`StateJob.play_random_candidates`)."""


@dataclass(frozen=True)
class StateRecipe:
    """How ``generate --behaviour sac-state`` makes the three datasets of one task."""

    preset: str
    """``"cpu"`` or ``"smoke"`` (or a name of your own)."""
    sac: SACConfig
    """SAC settings and training schedule (:class:`collectors.sac.SACConfig`)."""
    random_policies: int = 10
    """Behaviour policies of the random level (the paper's 10)."""
    random_episodes_per_policy: int = 20
    """Episodes each random-level policy plays (the paper's 20)."""
    random_behaviour: str = "early_snapshots"
    """``early_snapshots``: the random level's policies are snapshots from the start of the
    training run (the untrained actor included), one per quantile of Table 3's random row, each
    acting with tanh(mean) as its evaluation did; the paper's random returns (cheetah_run mean
    78, max 198) are out of reach of any untrained policy we measured (DATASETS.md).
    ``untrained``: ``random_policies`` randomly initialized actors with distinct seeds, sampling
    their wide Gaussian (the earlier recipe; walker_walk mean 45, cheetah_run 8)."""
    random_explore: bool = True
    """``untrained`` only: sample the actors' Gaussian; False: tanh(mean), which barely moves."""
    random_max_ratio: float = 1.0
    """``early_snapshots``: a candidate with an episode above this times Table 3's random max is
    taken only when no other is left: one episode sets the level's max (allowed +-40 %)."""
    random_snapshot_every: int = 0
    """``early_snapshots``: also keep, every this many environment steps, the actor that plays
    the next training episode (from the end of the uniform prefill to the first evaluation that
    reaches the band) as one more candidate of the random level; 0: the evaluated snapshots only.
    The car_racing cpu preset keeps one per training episode (:data:`CAR_RACING_RANDOM`)."""
    medrep_episodes: int = 400
    """Most training episodes kept in medrep (evenly spaced when the run made more)."""
    medrep_until: str | float = "band"
    """Where medrep's training episodes end: ``band`` (before the first evaluation whose mean
    return reached the band's min, even when the medium search trains on), ``medium`` (before
    the medium snapshot: the whole replay of the agent that became the medium policy) or a
    return (before the first training episode whose return exceeded it, so that no medrep
    episode does). The cpu preset takes it from Table 3 (:func:`medrep_end`)."""
    medium_episodes: int = 200
    """Episodes the medium snapshot plays."""
    medium_band: tuple | None = None
    """(min, max) return of the medium level (Table 3's medium row); None: train the whole
    budget and take the last evaluated snapshot (smoke)."""
    medium_mean: float | None = None
    """Table 3's mean return of the medium level, which the medium snapshot must match."""
    medium_min_share: float = 0.95
    """A medium candidate has at least this share of its evaluation episodes in the band (the
    dataset must reach 90 %: a margin for the 200 recorded episodes)."""
    medium_mean_tolerance: float = 0.07
    """... and its mean within this relative distance of ``medium_mean`` (the dataset: 10 %)."""
    medium_confirm_episodes: int = 30
    """Evaluation episodes added to a promising candidate before the run stops there."""
    medium_action_scales: tuple = ()
    """dm_control: action scales (each action multiplied by the scale: weaker actuators) under
    which the medium search also tries each snapshot whose mean evaluation return is above the
    paper's medium mean, acting with tanh(mean), from the largest scale down; a scale the search
    keeps is part of the medium policy (its manifest's ``training_run.medium_policy``)."""
    medium_speed_limits: tuple = ()
    """car_racing only: speed limits (``forward_speed`` feature: world units per second / 50;
    :func:`lqv_d4rl.car_racing.speed_limited_action`) under which the medium search also tries
    each snapshot that reached the band, acting with tanh(mean), in this order; a limit the search
    keeps is part of the medium policy (its manifest's ``training_run.medium_policy``)."""
    training_shaping: float = 0.0
    """Weight k of potential-based reward shaping (Ng, Harada & Russell 1999) in the SAC
    learner's replay only: each transition's reward gets ``gamma * k * phi(s') - k * phi(s)``,
    phi the task's :data:`SHAPING_POTENTIALS` entry (hopper_hop: the torso's height;
    humanoid_walk: the head's height). Such a term leaves the learner's optimal policy
    unchanged; the datasets keep the task's own rewards. 0: none; the cpu preset takes
    :data:`TRAINING_SHAPING` (hopper_hop and humanoid_walk 5)."""
    training_threads: int = 1
    """PyTorch CPU threads of the SAC training run (its updates; everything else keeps generate's
    one thread). MKL's reproducible mode (:mod:`lqv_d4rl.cpu_kernels`) gives the same results
    for the same thread count, so the count is the recipe's, never the machine's: the same recipe
    gives the same bytes anywhere. More threads are faster only on idle cores (humanoid_walk's
    updates, ``benchmarks/bench_humanoid.py``: 2 threads 1.49x on an idle 2-core machine, 0.23x
    on one loaded with other jobs). The cpu preset takes :data:`TRAINING_THREADS`."""
    max_episode_steps: int | None = None
    """Cut episodes after this many agent steps; None: the task's full episodes."""
    num_video_frames: int = 1000
    """Frames in the distractor pool."""
    checkpoint_every: int = 20
    """Training episodes between checkpoints of the training run."""

    def __post_init__(self):
        if self.random_behaviour not in RANDOM_BEHAVIOURS:
            raise ValueError(f"random_behaviour must be one of {', '.join(RANDOM_BEHAVIOURS)}; "
                             f"got {self.random_behaviour!r}")
        is_return = isinstance(self.medrep_until, numbers.Real) and \
            not isinstance(self.medrep_until, bool) and math.isfinite(self.medrep_until)
        if not (is_return or self.medrep_until in ("medium", "band")):
            raise ValueError(f"medrep_until must be 'medium', 'band' or a return; got "
                             f"{self.medrep_until!r}")
        if not isinstance(self.random_snapshot_every, int) or self.random_snapshot_every < 0:
            raise ValueError(f"random_snapshot_every must be a whole number of environment steps "
                             f"(0: none); got {self.random_snapshot_every!r}")
        if not isinstance(self.training_threads, int) or self.training_threads < 1:
            raise ValueError(f"training_threads must be a whole number of threads, at least 1; "
                             f"got {self.training_threads!r}")
        if self.medium_band is not None and self.medium_mean is None:
            raise ValueError("a medium_band needs the medium_mean the medium snapshot must match "
                             "(Table 3's medium row: lqv_d4rl.registry.get_recipe(id)"
                             ".paper_returns['mean'])")

    def describe(self):
        """The recipe as a JSON-able dict (provenance), the SAC config included. The fields in
        ``_LATER_FIELDS`` (added while datasets were being made) are left out at their defaults,
        so those datasets' provenance (which a resumed run compares) stays what it was."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "sac" and not (f.name in _LATER_FIELDS
                                              and getattr(self, f.name) == f.default)}
        fields["medium_band"] = None if self.medium_band is None else list(self.medium_band)
        for name in ("medium_speed_limits", "medium_action_scales"):
            if name in fields:
                fields[name] = [float(v) for v in getattr(self, name)]
        return {**fields, "behaviour": "sac-state", "sac": dataclasses.asdict(self.sac)}


_LATER_FIELDS = ("medium_speed_limits", "medium_action_scales", "training_shaping",
                 "training_threads", "random_snapshot_every")
"""StateRecipe fields that :meth:`StateRecipe.describe` leaves out at their defaults."""
CAR_RACING_SPEED_LIMIT = 0.465
"""The car_racing cpu preset's speed limit (``forward_speed`` 0.465 = 23 world units/s). A driver
that keeps to the road visits ~134 tiles in an episode at it (131..137 measured), which makes
Table 3's medium mean (372.3 = 1000 x tiles / track tiles - 100) on car_racing's tracks (293
tiles on average, sd 22). Measured on four snapshots of one training run (evaluation means 327 to
862), tanh(mean), 40 medium-seeded episodes each: means 365..385 (about 10 return per 0.01 of
limit), 90..95 % in Table 3's band."""


def state_recipe(task, preset="cpu"):
    """The :class:`StateRecipe` of ``task`` for ``preset`` (``"cpu"`` or ``"smoke"``)."""
    spec = get_task(task)
    if preset == "cpu":
        medium = get_recipe(f"{task}-medium").paper_returns
        recipe = StateRecipe(preset="cpu", sac=SACConfig.cpu(task),
                             medium_band=(medium["min"], medium["max"]),
                             medium_mean=medium["mean"],
                             medrep_episodes=get_recipe(f"{task}-medrep").episodes,
                             medrep_until=medrep_end(task),
                             medium_episodes=get_recipe(f"{task}-medium").episodes)
        if spec.kind == "gym":
            return car_racing_cpu(recipe)
        return dataclasses.replace(recipe, medium_action_scales=MEDIUM_ACTION_SCALES,
                                   training_shaping=TRAINING_SHAPING.get(task, 0.0),
                                   training_threads=TRAINING_THREADS.get(task, 1))
    if preset == "smoke":
        return StateRecipe(preset="smoke", sac=SACConfig.smoke(), random_policies=3,
                           random_episodes_per_policy=2, medium_episodes=4, medium_band=None,
                           max_episode_steps=50, num_video_frames=200, checkpoint_every=1)
    raise ValueError(f"the sac-state behaviour has the presets {', '.join(STATE_PRESETS)}; "
                     f"got {preset!r}")


MEDREP_NEAR_BAND = 0.9
"""A Table 3 medrep max at least this share of the medium band's min ended at the band."""


def medrep_end(task):
    """Where the cpu preset's medrep ends (``medrep_until``), read from Table 3: its medrep's max
    against the medium band's min says where the paper's replay ended.

    * ``"medium"`` where the max lies in the band (cheetah_run: 396.5 in 300.5..403.2): the
      paper's run went on into the band. (Ending cheetah_run's at the band: median 72.6 against
      Table 3's 125.1, outside its +-30 %; up to the medium snapshot: 100.8.)
    * ``"band"`` where it lies just below it (within :data:`MEDREP_NEAR_BAND`: walker_walk 398.2
      against 401.5, hopper_hop 39.9 against 40.3, car_racing 297.3 against 302.3): the replay
      ended at the first medium-level episode.
    * The max itself where it lies far below (humanoid_walk: 359.0, 32 % under 526.5): the
      paper's replay ended long before the medium level and holds no episode above it, so ours
      ends before the first training episode above that return.
    """
    medrep_max = get_recipe(f"{task}-medrep").paper_returns["max"]
    band_min = get_recipe(f"{task}-medium").paper_returns["min"]
    if medrep_max >= band_min:
        return "medium"
    return "band" if medrep_max >= MEDREP_NEAR_BAND * band_min else float(medrep_max)


def car_racing_cpu(recipe):
    """The cpu preset of car_racing (see the module docstring): its medium search also tries each
    snapshot under :data:`CAR_RACING_SPEED_LIMIT`, and its random level chooses among the actors
    of every training episode (:data:`CAR_RACING_RANDOM`); its SAC settings are
    ``collectors.sac.CPU_TASK_SETTINGS["car_racing"]``."""
    return dataclasses.replace(recipe, medium_speed_limits=(CAR_RACING_SPEED_LIMIT,),
                               **CAR_RACING_RANDOM)


CAR_RACING_RANDOM = {"random_snapshot_every": 1000, "random_max_ratio": 1.35}
"""The car_racing cpu preset's random level. SAC on the track features learns to drive within a
few thousand environment steps, so its snapshots evaluated every 5,000 either spin or brake (means
-100 .. -3) or already drive past the random row's max (149.2) in some episodes, and the level
missed Table 3's mean and p75 (DATASETS.md). The actors of the training episodes in between (one
episode = 1,000 environment steps) are drivers of every skill in between, and Table 3's row asks
for them: its top quantiles (targets 96 and 131) need snapshots that cover a quarter of the track
on average and rarely much more. The cap on their episodes is 1.35 x the row's max (201.4, inside
the max's +-40 %), since a driver that averages 100 returns more than 149.2 in some of 20
episodes."""


MEDIUM_ACTION_SCALES = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
"""The dm_control cpu preset's action scales for the medium search. SAC snapshots of walker_walk
near the band fall now and then (returns either ~15..250 or ~550..700); a later snapshot that no
longer falls returns 590..660 with tanh(mean), above the band (401.5..598): scaled by 0.8 the same
snapshot returned 520..594 in 10 of 10 probe episodes (0.7: 386..479)."""


class ScaledPolicy:
    """A policy (``act(state, deterministic=, generator=)``) whose actions are multiplied by
    ``scale``: the same behaviour with weaker actuators, its own random draws unchanged."""

    def __init__(self, policy, scale):
        self.policy, self.scale = policy, float(scale)
        self.action_dim = getattr(policy, "action_dim", None)

    def act(self, state, *, deterministic=False, generator=None):
        """The policy's action, scaled."""
        action = self.policy.act(state, deterministic=deterministic, generator=generator)
        return (np.asarray(action, np.float32) * np.float32(self.scale)).astype(np.float32)


TRANSFORMS = ("action_scale", "speed_limit")


def medium_policy(policy, transform=None):
    """``policy`` under ``transform`` (``(kind, value)``: ``("action_scale", c)``,
    :class:`ScaledPolicy`; ``("speed_limit", v)``, car_racing's
    :class:`lqv_d4rl.car_racing.SpeedLimitedPolicy`) or, without one, ``policy`` itself."""
    if transform is None:
        return policy
    kind, value = transform
    if kind == "action_scale":
        return ScaledPolicy(policy, value)
    if kind == "speed_limit":
        from lqv_d4rl.car_racing import SpeedLimitedPolicy

        return SpeedLimitedPolicy(policy, value)
    raise ValueError(f"a medium transform is one of {', '.join(TRANSFORMS)}; got {kind!r}")


def medium_transform(info):
    """The ``(kind, value)`` transform of a kept medium snapshot's info (None without one)."""
    transform = info.get("transform")
    return None if transform is None else (transform[0], float(transform[1]))


def describe_transform(transform):
    """A transform as a JSON-able dict (provenance of the medium level)."""
    kind, value = transform
    if kind == "speed_limit":
        from lqv_d4rl.car_racing import describe_speed_limit

        return describe_speed_limit(value)
    return {"transform": "action_scale", "scale": float(value),
            "rule": f"every action of the snapshot's tanh(mean) multiplied by {float(value):g}"}


# ----------------------------------------------------------------------------------------------
# Playing episodes on the physics alone
# ----------------------------------------------------------------------------------------------


class UniformPolicy:
    """Uniformly random actions in [-1, 1] (the start of a training run), SACPolicy's interface."""

    def __init__(self, action_dim):
        self.action_dim = int(action_dim)

    def act(self, state, *, deterministic=False, generator=None):
        """One uniform action (the generator's draws)."""
        return (torch.rand(self.action_dim, generator=generator) * 2 - 1).numpy()


def simulate_episode(simulator, policy, seed, *, explore, noise_seed, max_episode_steps=None):
    """Play one episode on the physics alone; a RecordedEpisode without images.

    ``policy.act(state, deterministic=, generator=)`` picks the actions (noise from a generator
    seeded with ``noise_seed``); the steps carry ``state`` and ``physics`` for every entry
    (car_racing: ``state`` only, and the policy's observations as
    :attr:`RecordedEpisode.features`).
    """
    generator = torch.Generator().manual_seed(int(noise_seed))
    state, info = simulator.reset(seed=int(seed))
    builder = EpisodeBuilder(None, simulator.action_space.shape[0], info=info)
    while True:
        action = policy.act(state, deterministic=not explore, generator=generator)
        state, reward, terminated, truncated, info = simulator.step(action)
        builder.add(action, None, reward, discount=info["discount"], terminated=terminated,
                    info=info)
        cut = max_episode_steps is not None and len(builder) - 1 >= max_episode_steps
        if terminated or truncated or cut:
            return RecordedEpisode(builder.finish(), int(seed), [], builder.finish_states(),
                                   builder.finish_features())


def simulate_level(simulator, policy, first, count, *, seed, stream, explore,
                   max_episode_steps=None, index_offset=0):
    """Yield ``(k, RecordedEpisode)`` for episodes ``first .. count - 1`` of one policy; episode
    ``k`` is reset with ``derived_seed(seed, stream, index_offset + k)`` and has its own noise."""
    for k in range(first, count):
        index = index_offset + k
        yield k, simulate_episode(
            simulator, policy, derived_seed(seed, stream, index), explore=explore,
            noise_seed=derived_seed(seed, "noise", STREAMS[stream], index),
            max_episode_steps=max_episode_steps)


def simulate_candidate(simulator, candidate, first, *, work_dir, seed, episodes,
                       max_episode_steps):
    """Episodes ``first .. episodes - 1`` of a random-level candidate snapshot (tanh(mean)),
    numbered from its ``index``: :func:`simulate_level` on the random stream."""
    policy = SACPolicy.load(Path(work_dir) / candidate["snapshot"])
    return simulate_level(simulator, policy, first, episodes, seed=seed, stream="random",
                          explore=False, max_episode_steps=max_episode_steps,
                          index_offset=candidate["index"] * episodes)


def candidate_episode_returns(simulator, candidate, **settings):
    """The returns of all of a candidate's random-level episodes (:func:`simulate_candidate`)."""
    return [episode.episode_return
            for _, episode in simulate_candidate(simulator, candidate, 0, **settings)]


def play_candidates(task, candidates, settings, *, workers, simulator):
    """Yield ``(policy id, episode returns)`` of each random-level candidate as it finishes
    (:func:`candidate_episode_returns` with ``settings``): played on ``simulator`` here, or by
    ``workers`` processes of their own simulator and this process's torch thread count, which
    give the same floats."""
    if workers <= 1 or len(candidates) <= 1:
        for candidate in candidates:
            yield candidate["policy_id"], candidate_episode_returns(simulator, candidate,
                                                                    **settings)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # torch and MuJoCo are not fork-safe
    pool = ProcessPoolExecutor(min(workers, len(candidates)), mp_context=context,
                               initializer=_start_candidate_worker,
                               initargs=(task, torch.get_num_threads()))
    try:
        futures = {pool.submit(_play_candidate, candidate, settings): candidate["policy_id"]
                   for candidate in candidates}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # interrupted: drop the candidates not started rather than play them all
        pool.shutdown(cancel_futures=True)


_candidate_worker = {}  # a candidate worker process's simulator


def _start_candidate_worker(task, torch_thread_count):
    from lqv_d4rl.car_racing import make_state_simulator

    torch.set_num_threads(torch_thread_count)
    _candidate_worker["simulator"] = make_state_simulator(task)


def _play_candidate(candidate, settings):
    return candidate_episode_returns(_candidate_worker["simulator"], candidate, **settings)


# ----------------------------------------------------------------------------------------------
# Reward shaping of the learner (never of the datasets)
# ----------------------------------------------------------------------------------------------


def hopper_torso_height(states):
    """hopper_hop's shaping potential: the torso's height relative to its start (``rootz``, the
    first ``position`` entry of the state; ~-0.92 lying on its back, -0.4..-0.2 hopping)."""
    return np.asarray(states, np.float64)[..., 0]


HUMANOID_HEAD_HEIGHT = 21
"""Index of ``head_height`` in humanoid_walk's state (after the 21 ``joint_angles``)."""


def humanoid_head_height(states):
    """humanoid_walk's shaping potential: the head's height in metres (~1.6 dropped in at the
    start, ~0.1..0.3 lying, ~1.4 and more standing; the task rewards standing above 1.4)."""
    return np.asarray(states, np.float64)[..., HUMANOID_HEAD_HEIGHT]


SHAPING_POTENTIALS = {"hopper_hop": hopper_torso_height, "humanoid_walk": humanoid_head_height}
"""Tasks whose learner may be given a shaping potential (``StateRecipe.training_shaping``)."""


TRAINING_SHAPING = {"hopper_hop": 5.0, "humanoid_walk": 5.0}
"""The cpu preset's ``training_shaping``. hopper_hop's reward is 0 unless the hopper stands and
moves, and an unshaped SAC learner (0.25 updates per step) never learnt to get up from its back:
from 550,000 to 1.62M environment steps about half of its evaluation episodes stayed at 0 while
the others hopped at up to ~190 (docs/datasets/hopper_hop-unshaped), so no snapshot could make
Table 3's medium level (at least 90 % of episodes in 40.3..84.9). With the torso height as a
potential (weight 5) the same run got up from nearly every start once it hopped (845,000..880,000
steps: 5 of 80 evaluation episodes at 0, against 45 of 80 unshaped; DATASETS.md). humanoid_walk's
unshaped learner lay on the ground for all of its 1.26M environment steps (evaluation means
0.7..3.2, as public runs of SAC with these sizes do for 3M steps and more); with the head's
height as a potential (weight 5) the same learner stood up after about 340,000 steps
(docs/datasets/humanoid_walk-shaped5, DATASETS.md)."""


TRAINING_THREADS = {"humanoid_walk": 2}
"""The cpu preset's ``training_threads``. humanoid_walk makes one SAC update per agent step, and
the updates are 94 % of its run's time; on an idle 2-core machine 2 threads make 71.7 updates/s
against 48.0 with one (``python benchmarks/bench_humanoid.py --updates 300 --episodes 4
--repeats 2``, DATASETS.md). The other tasks' runs make few updates per step and keep one."""


def shaping_potential(task):
    """``task``'s entry of :data:`SHAPING_POTENTIALS`; a ValueError when it has none."""
    if task not in SHAPING_POTENTIALS:
        raise ValueError(f"training_shaping needs a shaping potential; {task} has none (the "
                         f"tasks that have one: {', '.join(SHAPING_POTENTIALS)})")
    return SHAPING_POTENTIALS[task]


def shaped_rewards(rewards, potentials, weight, gamma):
    """Entry rewards with potential-based shaping added: entry t (the transition from entry
    t - 1) gets ``gamma * weight * potentials[t] - weight * potentials[t - 1]``; entry 0 has no
    transition and keeps its reward."""
    phi = float(weight) * np.asarray(potentials, np.float64)
    shaped = np.asarray(rewards, np.float64).copy()
    shaped[1:] += float(gamma) * phi[1:] - phi[:-1]
    return shaped


# ----------------------------------------------------------------------------------------------
# The SAC training run
# ----------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """Counters of a SAC training run (saved in ``state.json``)."""

    env_steps: int = 0
    episodes: int = 0
    update_credit: float = 0.0
    """Updates due but not yet made (a fraction when updates_per_step is not whole)."""
    next_eval: int = 0
    finished: bool = False
    stop_reason: str = ""
    agent_file: str = ""
    evaluations: list = dataclasses.field(default_factory=list)
    replay_rng: dict = dataclasses.field(default_factory=dict)
    snapshots: list = dataclasses.field(default_factory=list)
    """The actors kept between evaluations (``snapshot_every``): env_steps, policy_id, snapshot."""


class SACRun:
    """One SAC training run on states with checkpoints in ``work_dir`` (see the module docstring).

    ``on_evaluation(evaluation, agent, play=play) -> bool`` decides when to stop (True);
    ``play(count, explore, transform=None)`` plays more episodes of the evaluated snapshot and
    returns their returns (:class:`MediumSearch` judges candidates with it). After :meth:`run`,
    :attr:`episodes` holds every training episode (RecordedEpisode without images) with its
    policy id and step. ``snapshot_every`` > 0 also keeps the actor that plays a training
    episode every that many environment steps (``state.snapshots``), from the end of the uniform
    prefill until an evaluation reaches ``band``'s min.
    """

    def __init__(self, config, task, *, work_dir, seed=0, max_episode_steps=None,
                 checkpoint_every=20, on_evaluation=None, progress=True, settings=None,
                 shaping=0.0, snapshot_every=0, band=None):
        from lqv_d4rl.car_racing import make_state_simulator

        self.config, self.task = config, task
        self.shaping = float(shaping)
        self.potential = shaping_potential(task) if self.shaping else None
        self.work_dir = Path(work_dir)
        self.seed = int(seed)
        self.max_episode_steps = max_episode_steps
        self.checkpoint_every = int(checkpoint_every)
        self.on_evaluation = on_evaluation
        self.progress = progress
        self.snapshot_every, self.band = int(snapshot_every), band
        # A resumed run must share the shaping and the snapshots too; recorded only when there
        # are, so that earlier runs' settings stay valid.
        self.settings = {**(settings or {}),
                         **({"training_shaping": self.shaping} if self.shaping else {}),
                         **({"snapshot_every": self.snapshot_every} if self.snapshot_every else {})}
        self.simulator = make_state_simulator(task)
        self.action_repeat = get_task(task).action_repeat
        self.action_dim = get_task(task).action_dim
        self.run_name = f"sac-seed{self.seed}"
        self.episodes = []  # (RecordedEpisode, policy_id, policy_step)
        self.agent = self.replay = self.state = None
        self._saved_episodes = 0

    def snapshot_id(self, env_steps):
        """Policy id of the learner after ``env_steps`` environment steps."""
        return f"{self.run_name}-step{env_steps:06d}"

    def run(self, until=None):
        """Train until ``on_evaluation`` says stop or the budget is spent; return the state.

        ``until(state) -> bool`` pauses the run as soon as it holds (checked before each training
        episode): the state is saved, not finished, and ``run()`` again goes on as if it had not
        paused."""
        if self.state is None:
            self._restore_or_start()
        if not self.state.evaluations:
            self._evaluate(0)  # the randomly initialized actor: a candidate of the random level
        bar = self._progress_bar()
        try:
            while not self.state.finished:
                if until is not None and until(self.state):
                    if self._saved_episodes < len(self.episodes):
                        self.save_checkpoint()
                    break
                before = self.state.env_steps
                self._play_training_episode()
                self._train()
                self._evaluate_if_due()
                if bar is not None:
                    self._show_status(bar, self.state.env_steps - before)
                if self.state.finished or self.state.episodes % self.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return self.state

    # -- one episode ---------------------------------------------------------------------------

    def _play_training_episode(self):
        state, config = self.state, self.config
        if state.env_steps < config.random_steps:
            policy, policy_id, policy_step = UniformPolicy(self.action_dim), \
                f"{self.run_name}-prefill", 0
        else:
            policy, policy_id, policy_step = SACPolicy.of(self.agent), \
                self.snapshot_id(state.env_steps), state.env_steps
            if self._keeps_snapshot():
                state.snapshots.append({"env_steps": state.env_steps, "policy_id": policy_id,
                                        "snapshot": self._save_actor(policy_id)})
        index = state.episodes
        episode = simulate_episode(
            self.simulator, policy, derived_seed(self.seed, "medrep", index), explore=True,
            noise_seed=derived_seed(self.seed, "noise", STREAMS["medrep"], index),
            max_episode_steps=self.max_episode_steps)
        self._add_episode(episode, policy_id, policy_step)
        agent_steps = episode.num_agent_steps
        state.env_steps += agent_steps * self.action_repeat
        state.episodes += 1
        # Updates are due for the agent steps collected after the first learning_starts env steps.
        due = min(agent_steps, (state.env_steps - config.learning_starts) // self.action_repeat)
        state.update_credit += max(due, 0) * config.updates_per_step

    def _keeps_snapshot(self):
        """Whether the actor about to play is one of ``snapshot_every``'s (not one evaluated at
        these steps already, which is the same actor, and not after the band)."""
        state = self.state
        if not self.snapshot_every or state.env_steps % self.snapshot_every:
            return False
        return not self._evaluated_now() and \
            first_band_evaluation(state.evaluations, self.band) is None

    def _evaluated_now(self):
        """Whether the actor was evaluated at the run's current steps."""
        evaluations = self.state.evaluations
        return bool(evaluations) and evaluations[-1]["env_steps"] == self.state.env_steps

    def _save_actor(self, policy_id):
        """Save the actor as ``snapshots/<policy_id>.pt``; its path in the work dir."""
        snapshot = self.work_dir / "snapshots" / f"{policy_id}.pt"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        self.agent.save_actor(snapshot)
        return str(snapshot.relative_to(self.work_dir))

    def _add_episode(self, episode, policy_id, policy_step):
        self.episodes.append((episode, policy_id, int(policy_step)))
        steps = episode.learner_steps  # the policy's observations
        if self.shaping:
            steps = {**steps, "reward": shaped_rewards(steps["reward"], self.potential(
                steps["state"]), self.shaping, self.config.gamma)}
        self.replay.add_episode(steps)

    def _train(self):
        count = int(self.state.update_credit)
        self.state.update_credit -= count
        for _ in range(count):
            self.agent.update(self.replay.sample(self.config.batch_size))

    def _evaluate_if_due(self):
        state, config = self.state, self.config
        out_of_budget = state.env_steps >= config.total_steps
        learning = state.env_steps > config.learning_starts
        if learning and not self._evaluated_now() and (state.env_steps >= state.next_eval
                                                       or out_of_budget):
            self._evaluate(state.env_steps)
        if out_of_budget and not state.finished:
            state.finished, state.stop_reason = True, "max_env_steps"

    def _evaluate(self, env_steps):
        """Evaluate the current actor (deterministic actions), keep its snapshot, and ask
        ``on_evaluation`` whether to stop (it may play more episodes of the snapshot)."""
        from .online import Evaluation

        state, config = self.state, self.config
        index = len(state.evaluations)
        offset = sum(len(e["returns"]) for e in state.evaluations)
        returns = self._returns(config.eval_episodes, explore=False, stream="eval", first=offset)
        evaluation = Evaluation(env_steps, self.snapshot_id(env_steps), returns)
        state.evaluations.append({**dataclasses.asdict(evaluation),
                                  "mean_return": evaluation.mean_return,
                                  "snapshot": self._save_actor(evaluation.policy_id)})
        while state.next_eval <= state.env_steps:
            state.next_eval += config.eval_every
        played = [0]

        def play(count, explore, transform=None):
            """More episodes of this snapshot, each with its own seed (stream ``probe``)."""
            first = index * PROBES_PER_EVALUATION + played[0]
            played[0] += count
            return self._returns(count, explore=explore, stream="probe", first=first,
                                 transform=transform)

        if env_steps > 0 and self.on_evaluation is not None and \
                self.on_evaluation(evaluation, _ActorSaver(self.agent), play=play):
            state.finished, state.stop_reason = True, "on_evaluation"

    def _returns(self, count, *, explore, stream, first, transform=None):
        """Returns of ``count`` episodes of the current actor, episodes ``first ..`` of
        ``stream`` (so each has its own seed and action noise), under ``transform`` when given
        (:func:`medium_policy`)."""
        policy = medium_policy(SACPolicy.of(self.agent), transform)
        return [episode.episode_return for _, episode in simulate_level(
            self.simulator, policy, 0, count, seed=self.seed, stream=stream,
            explore=explore, max_episode_steps=self.max_episode_steps, index_offset=first)]

    # -- checkpoints ---------------------------------------------------------------------------

    def _run_settings(self):
        return json.loads(json.dumps({
            "task": self.task, "seed": self.seed, "max_episode_steps": self.max_episode_steps,
            "config": dataclasses.asdict(self.config), "settings": self.settings}))

    @staticmethod
    def _run_identity(settings):
        """The settings a resumed run must share: all but the budget (``config.total_steps``),
        which a run may be given more of (:meth:`_apply_budget`)."""
        if not isinstance(settings, dict) or not isinstance(settings.get("config"), dict):
            return settings
        config = {k: v for k, v in settings["config"].items() if k != "total_steps"}
        return {**settings, "config": config}

    def _apply_budget(self):
        """Fit a restored run to this run's budget. A run that stopped at a smaller budget goes on
        (the same run as one given this budget from the start, when the smaller one was a
        multiple of ``eval_every``: the run's only budget-dependent step is an evaluation at its
        end); one that has trained past this budget is refused."""
        from .online import CheckpointError

        state, budget = self.state, self.config.total_steps
        last_episode = self.episodes[-1][0].num_agent_steps * self.action_repeat \
            if self.episodes else 0
        if state.env_steps - last_episode >= budget:
            raise CheckpointError(
                f"the training run in {self.work_dir} has trained {state.env_steps} environment "
                f"steps, past the budget of {budget} asked for; give it a budget of at least "
                f"{state.env_steps}, or delete {self.work_dir} (or pass overwrite) to start over")
        if state.finished and state.stop_reason == "max_env_steps" and state.env_steps < budget:
            state.finished, state.stop_reason = False, ""
        if not state.finished and state.env_steps >= budget:  # its last episode spent this one
            self._evaluate_if_due()
            self.save_checkpoint()

    def _restore_or_start(self):
        from .online import read_checkpoint_state

        state_path = self.work_dir / STATE_NAME
        state_dim = len(self.simulator.reset(seed=0)[0])
        saved = read_checkpoint_state(state_path, STATE_VERSION, self._run_settings(),
                                      identity=self._run_identity) \
            if state_path.is_file() else None
        trained = saved["state"]["env_steps"] if saved else 0  # may exceed a lowered budget
        capacity = self._replay_capacity(max(self.config.total_steps, trained))
        self.replay = TransitionReplay(state_dim, self.action_dim, capacity,
                                       seed=derived_seed(self.seed, "agent", 1))
        if saved is None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.state = RunState()
            self.agent = SACAgent(self.config, state_dim, self.action_dim,
                                  seed=derived_seed(self.seed, "agent"))
            return
        self.state = RunState(**saved["state"])
        self.agent = SACAgent.load(self.work_dir / self.state.agent_file)
        for episode, policy_id, policy_step in load_episode_chunks(
                self.work_dir / "episodes", self.state.episodes):
            self._add_episode(episode, policy_id, policy_step)
        self.replay.rng.bit_generator.state = self.state.replay_rng
        self._saved_episodes = len(self.episodes)
        self._apply_budget()

    def _replay_capacity(self, env_steps):
        """Transitions of a run of ``env_steps`` environment steps (all kept), one episode more."""
        steps = self.max_episode_steps or get_task(self.task).episode_steps
        episodes = -(-env_steps // (self.action_repeat * steps)) + 1
        return episodes * steps

    def save_checkpoint(self):
        """Write the agent, the new episodes and the counters; ``state.json`` last (the commit)."""
        state = self.state
        previous = state.agent_file
        state.agent_file = f"agent-{state.episodes:07d}.pt"
        self.agent.save(self.work_dir / state.agent_file)
        save_episode_chunk(self.episodes[self._saved_episodes:], self._saved_episodes,
                           self.work_dir / "episodes")
        state.replay_rng = self.replay.rng.bit_generator.state
        write_json_atomically(self.work_dir / STATE_NAME, {
            "version": STATE_VERSION, "run": self._run_settings(),
            "state": dataclasses.asdict(state)})
        if previous and previous != state.agent_file:
            (self.work_dir / previous).unlink(missing_ok=True)
        self._saved_episodes = len(self.episodes)

    # -- display -------------------------------------------------------------------------------

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.total_steps, initial=self.state.env_steps,
                    unit="env step", desc=f"train SAC {self.task}", dynamic_ncols=True)

    def _show_status(self, bar, steps):
        postfix = {"episodes": self.state.episodes, "updates": self.agent.updates}
        if self.state.evaluations:
            postfix["eval return"] = f"{self.state.evaluations[-1]['mean_return']:.1f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(steps)


class _ActorSaver:
    """What MediumSearch needs of an agent: ``save(path)``, here the actor alone."""

    def __init__(self, agent):
        self.save = agent.save_actor


_EPISODE_ARRAYS = ("action", "reward", "discount", "is_terminal", "state")
_OPTIONAL_EPISODE_ARRAYS = ("physics", "features")
"""Saved when the episodes have them: ``physics`` (dm_control), ``features`` (car_racing: the
policy's observations, RecordedEpisode.features)."""


def save_episode_chunk(entries, first, folder):
    """Write training episodes ``first, first + 1, ...`` (RecordedEpisode, policy id, step) as one
    npz file, atomically; nothing when ``entries`` is empty."""
    if not entries:
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = [{**episode.steps, **episode.states,
              **({} if episode.features is None else {"features": episode.features})}
             for episode, _, _ in entries]
    keys = _EPISODE_ARRAYS + tuple(key for key in _OPTIONAL_EPISODE_ARRAYS if key in steps[0])
    arrays = {key: np.concatenate([s[key] for s in steps]) for key in keys}
    arrays["lengths"] = np.array([len(s["reward"]) for s in steps], np.int64)
    arrays["seeds"] = np.array([episode.seed for episode, _, _ in entries], np.int64)
    arrays["policy_ids"] = np.array([policy_id for _, policy_id, _ in entries])
    arrays["policy_steps"] = np.array([step for _, _, step in entries], np.int64)
    path = folder / f"episodes-{first:07d}.npz"
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_episode_chunks(folder, count):
    """The first ``count`` training episodes saved by :func:`save_episode_chunk`, as
    (RecordedEpisode, policy id, policy step); chunks past them (written after the last commit)
    are removed."""
    from .online import CheckpointError

    entries = []
    for first, path in _episode_chunk_files(folder):
        if first >= count:
            path.unlink()
            continue
        if first != len(entries):
            raise CheckpointError(f"the episode chunks in {folder} have a gap before "
                                  f"{path.name}; delete {Path(folder).parent} to restart the run")
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])])
        for row in range(min(len(arrays["lengths"]), count - first)):
            rows = slice(bounds[row], bounds[row + 1])
            steps = {key: arrays[key][rows] for key in _EPISODE_ARRAYS}
            length = len(steps["reward"])
            steps["is_first"] = np.arange(length) == 0
            steps["is_last"] = np.arange(length) == length - 1
            states = {key: arrays[key][rows] for key in ("state", "physics") if key in arrays}
            del steps["state"]
            features = arrays["features"][rows] if "features" in arrays else None
            episode = RecordedEpisode(steps, int(arrays["seeds"][row]), [], states, features)
            entries.append((episode, str(arrays["policy_ids"][row]),
                            int(arrays["policy_steps"][row])))
    if len(entries) != count:
        raise CheckpointError(f"{folder} holds {len(entries)} episodes but the checkpoint needs "
                              f"{count}; delete {Path(folder).parent} to restart the run")
    return entries


def training_episode_returns(folder, count):
    """(returns, policy steps) of the first ``count`` training episodes saved by
    :func:`save_episode_chunk`, read without changing anything: a running run may be writing the
    next chunk (its temporary file and the chunks past ``count`` are not read)."""
    returns, steps = [], []
    for first, path in _episode_chunk_files(folder):
        if first >= count:
            continue
        with np.load(path) as chunk:
            rewards = np.split(chunk["reward"], np.cumsum(chunk["lengths"])[:-1])
            returns += [float(episode.sum(dtype=np.float64)) for episode in rewards]
            steps += chunk["policy_steps"].tolist()
    return np.asarray(returns[:count]), np.asarray(steps[:count], dtype=np.int64)


def _episode_chunk_files(folder):
    """``(first episode, path)`` of the chunk files in ``folder``, in order (not the temporary
    file of a chunk being written)."""
    paths = [path for path in Path(folder).glob("episodes-*.npz")
             if not path.name.endswith(".tmp.npz")]
    return sorted((int(path.name.split("-")[1].split(".")[0]), path) for path in paths)


# ----------------------------------------------------------------------------------------------
# The three levels
# ----------------------------------------------------------------------------------------------


class StateJob(GenerateJob):
    """The ``sac-state`` behaviour of ``generate`` (see the module docstring)."""

    level_policies = {
        "random": "snapshots from the start of the SAC training run on states (policy id = "
                  "snapshot, sac-seedS-stepNNNNNN), one per quantile of Table 3's random row, "
                  "actions tanh(mean)",
        "medrep": "SAC training run on states from scratch until the medium band; policy id "
                  "= snapshot (sac-seedS-stepNNNNNN, env steps) or sac-seedS-prefill "
                  "(uniform random actions)",
        "medium": "one fixed SAC snapshot whose evaluation returns match Table 3's medium row "
                  "(share in band, mean), actions tanh(mean) or sampled "
                  "(training_run.medium_policy.explore), maybe under a fixed handicap "
                  "(training_run.medium_policy.action_transform: scaled actions, or car_racing's "
                  "speed limit; the stored actions are the transformed ones)",
    }
    untrained_random_policies = ("randomly initialized SAC actors on states (policy ids "
                                 "sac-initPP-seedS), sampled actions")

    def __init__(self, task, spec, recipe, *, workers, root, work_dir, seed, overwrite,
                 progress, provenance, max_shard_bytes, video_pool, record_closest_medium=False):
        super().__init__(task, spec, recipe, root, work_dir, seed, overwrite, progress,
                         provenance, max_shard_bytes)
        self.workers, self.video_pool = workers, video_pool
        self.record_closest_medium = record_closest_medium  # when the budget ends unmatched
        self.timings = {}  # phase -> wall-clock seconds (GenerateResult.timings)
        if recipe.random_behaviour == "untrained":
            self.level_policies = dict(self.level_policies, random=self.untrained_random_policies)
        self.replayed = spec.kind == "gym"  # car_racing: frames by replaying the actions live
        self.simulator = self.renderer = None  # made by run()

    def run(self, folders, levels):
        """Write the pending ``levels`` into ``folders`` (level -> folder)."""
        from lqv_d4rl.car_racing import CarEpisodeRenderer, make_state_simulator
        from lqv_d4rl.rerender import EpisodeRenderer

        self.simulator = make_state_simulator(self.task)
        renderer = CarEpisodeRenderer if self.replayed else EpisodeRenderer
        try:
            with renderer(self.task, video_pool=self.video_pool,
                          workers=self.workers) as self.renderer:
                if self.recipe.random_behaviour == "untrained" and "random" in levels:
                    with self.timed("random (record)"):
                        self.record_untrained_random(folders["random"])
                    levels = [level for level in levels if level != "random"]
                if levels:
                    self.train_and_record(folders, levels)
        finally:
            self.simulator.close()

    def write_rendered(self, writer, entries, total, description):
        """Render and write ``entries`` (RecordedEpisode without images, policy id, policy
        step), in order; ``total`` sizes the progress bar."""
        bar = self.bar(total, writer.num_episodes, description)
        entries = iter(entries)
        pending = collections.deque()  # the entries being rendered, in order

        def items():
            for entry in entries:
                pending.append(entry)
                episode = entry[0]
                if self.replayed:  # car_racing: replay the actions, check rewards and states
                    yield (episode.steps["action"], episode.seed, episode.steps["reward"],
                           episode.states["state"])
                else:
                    yield episode.states["physics"], episode.seed

        for images, video_ids in self.renderer.render(items()):
            episode, policy_id, policy_step = pending.popleft()
            writer.add_episode({"image": images, **episode.all_steps}, policy_id=policy_id,
                               policy_step=policy_step, seed=episode.seed,
                               video_ids=video_ids)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    def record_untrained_random(self, folder):
        """The random level of ``random_behaviour="untrained"``: randomly initialized actors, in
        turn."""
        recipe, spec = self.recipe, self.spec
        per_policy = recipe.random_episodes_per_policy
        total = recipe.random_policies * per_policy
        state_dim = len(self.simulator.reset(seed=0)[0])

        def entries(done):
            for p in range(done // per_policy, recipe.random_policies):
                actor = SACPolicy.of(SACAgent(recipe.sac, state_dim, spec.action_dim,
                                              seed=derived_seed(self.seed, "random_policy",
                                                                p)))
                for _, episode in simulate_level(
                        self.simulator, actor, max(done - p * per_policy, 0), per_policy,
                        seed=self.seed, stream="random", explore=recipe.random_explore,
                        max_episode_steps=recipe.max_episode_steps,
                        index_offset=p * per_policy):
                    yield episode, f"sac-init{p:02d}-seed{self.seed}", -1

        with self.writer(folder, "random") as writer:
            self.write_rendered(writer, entries(writer.num_episodes), total,
                                f"record {self.task}-random")

    def train_and_record(self, folders, levels):
        """Run (or resume) the SAC training run and write the pending ``levels`` of it: random
        and medrep as soon as they are known (:func:`early_levels_known_at`), else, like
        medium, once the medium search has found its snapshot."""
        recipe = self.recipe
        tracker = MediumSearch(recipe.medium_band, recipe.medium_mean, self.work_dir,
                               min_share=recipe.medium_min_share,
                               mean_tolerance=recipe.medium_mean_tolerance,
                               confirm_episodes=recipe.medium_confirm_episodes,
                               speed_limits=recipe.medium_speed_limits,
                               action_scales=recipe.medium_action_scales)
        run = SACRun(recipe.sac, self.task, work_dir=self.work_dir, seed=self.seed,
                     max_episode_steps=recipe.max_episode_steps,
                     checkpoint_every=recipe.checkpoint_every, on_evaluation=tracker,
                     progress=self.progress, shaping=recipe.training_shaping,
                     settings={"torch_threads": recipe.training_threads},
                     snapshot_every=recipe.random_snapshot_every
                     if recipe.random_behaviour == "early_snapshots" else 0,
                     band=recipe.medium_band)
        early = [level for level in ("random", "medrep") if level in levels]
        if early and levels_settle_early(recipe):
            def settled_at():
                return early_levels_known_at(recipe, run.state.evaluations,
                                             episode_returns(run.episodes))

            self.train(run, until=lambda _: settled_at() is not None)
            known_at = settled_at()
            if known_at is not None:
                self.record_early_levels(folders, early, run, known_at)
                levels = [level for level in levels if level not in early]
        if not levels:
            return
        state = self.train(run)
        medium = tracker.load_info()
        if medium is None:
            raise GenerateError(
                f"the training run ended after {state.env_steps} env steps without an "
                f"evaluation (its budget total_steps={recipe.sac.total_steps} does not exceed "
                f"learning_starts={recipe.sac.learning_starts}); raise the budget")
        if recipe.medium_band is not None and not medium["in_band"]:
            unsettled = unsettled_levels(recipe, levels, state.evaluations)
            if not self.record_closest_medium or unsettled:
                raise GenerateError(budget_spent_message(self.task, state, medium, recipe,
                                                         levels, unsettled))
            tied = [level for level in levels if level == "medium"
                    or (level == "medrep" and recipe.medrep_until == "medium")]
            warnings.warn(closest_medium_notice(self.task, state, medium,
                                                [folders[level] for level in tied]),
                          stacklevel=2)
            medium = {**medium, "recorded_without_match": True}
        run_info = {"training_run": {
            "env_steps": state.env_steps, "episodes": state.episodes,
            "updates": run.agent.updates, "stop_reason": state.stop_reason,
            "evaluations": evaluation_records(state.evaluations),
            **({"snapshots": state.snapshots} if state.snapshots else {}),
            "medium_policy": medium}}
        self.record_levels(folders, [level for level in levels if level != "medium"],
                           run.episodes, run_info)
        if "medium" in levels:
            with self.timed("medium (record)"):
                self.record_medium(folders["medium"], medium, run_info)

    def train(self, run, until=None):
        """Run (or resume, or go on with) the training run (:meth:`SACRun.run`); its state."""
        with self.timed("SAC training"), torch_threads(self.recipe.training_threads):
            return run.run(until=until)

    def record_early_levels(self, folders, levels, run, known_at):
        """Record random and/or medrep as soon as the run has passed ``known_at`` environment
        steps (:func:`early_levels_known_at`): from the training run as it was there, so their
        shards and ``training_run`` are the same however much longer the medium search trains,
        and they are kept when it is interrupted or its budget runs out."""
        state = run.state
        played = sum(1 for _, _, step in run.episodes if step < known_at)
        evaluations = [e for e in state.evaluations if e["env_steps"] <= known_at]
        snapshots = [s for s in state.snapshots if s["env_steps"] < known_at]
        run_info = {"training_run": {
            "env_steps": known_at, "episodes": played,
            "evaluations": evaluation_records(evaluations),
            **({"snapshots": snapshots} if snapshots else {}),
            "note": "the run as it was when the random and medrep levels were known (every "
                    "snapshot and training episode they take comes before env_steps); it then "
                    "trained on for the medium level"}}
        # Medrep's end from every episode played: the one that sets it may start at known_at.
        end = medrep_end_step(self.recipe, evaluations, None, episode_returns(run.episodes))
        self.record_levels(folders, levels, run.episodes[:played], run_info, end)

    def record_levels(self, folders, levels, episodes, run_info, medrep_end=None):
        """Record the run's random (early snapshots) and medrep (``episodes``, the training
        episodes; ``medrep_end`` as :meth:`write_medrep` takes it) levels among ``levels``."""
        if "random" in levels:
            with self.timed("random (record)"):
                self.record_early_snapshots(folders["random"], run_info)
        if "medrep" in levels:
            with self.timed("medrep (render)"):
                self.write_medrep(folders["medrep"], episodes, run_info, medrep_end)

    @contextlib.contextmanager
    def timed(self, phase):
        """Add the block's wall-clock seconds to ``timings[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    def random_policies(self, run_info):
        """``(targets, chosen)`` of the random level (``early_snapshots``): the quantile targets of
        Table 3's random row and, one per target, the candidate snapshot whose own episodes match
        it (:func:`random_candidates`, :meth:`play_random_candidates`,
        :func:`choose_random_policies`)."""
        recipe = self.recipe
        paper = get_recipe(f"{self.task}-random").paper_returns
        training_run = run_info["training_run"]
        candidates = random_candidates(training_run["evaluations"], recipe.medium_band, paper,
                                       recipe.random_policies, training_run.get("snapshots", ()))
        played = self.play_random_candidates(candidates)
        targets = quantile_targets(paper, recipe.random_policies)
        return targets, choose_random_policies(played, targets,
                                               recipe.random_max_ratio * paper["max"])

    def play_random_candidates(self, candidates):
        """Each candidate with the returns of the ``random_episodes_per_policy`` episodes it
        would record (``returns``; its episodes are numbered from its position in the run's
        evaluations, ``index``). Played on the physics alone, by ``workers`` processes, and kept
        in ``<work_dir>/random_candidates.json``, so an interrupted run does not play them
        again."""
        recipe = self.recipe
        per_policy = recipe.random_episodes_per_policy
        cache_file = self.work_dir / RANDOM_CANDIDATES_NAME
        setting = {"seed": self.seed, "episodes_per_policy": per_policy,
                   "max_episode_steps": recipe.max_episode_steps,
                   "return": "float64 sum of the rewards"}  # the dataset's own episode return
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        returns = cache.get("returns", {}) if cache.get("setting") == setting else {}
        bar = self.bar(len(candidates) * per_policy,
                       sum(c["policy_id"] in returns for c in candidates) * per_policy,
                       f"play {self.task}-random candidates")
        unplayed = [c for c in candidates if c["policy_id"] not in returns]
        for policy_id, candidate_returns in play_candidates(
                self.task, unplayed, self.candidate_settings(), workers=self.workers,
                simulator=self.simulator):
            returns[policy_id] = candidate_returns
            write_json_atomically(cache_file, {"setting": setting, "returns": returns})
            if bar is not None:
                bar.update(per_policy)
        if bar is not None:
            bar.close()
        return [dict(candidate, returns=returns[candidate["policy_id"]])
                for candidate in candidates]

    def candidate_settings(self):
        """What, besides the simulator and the candidate, decides a random-level episode."""
        return {"work_dir": self.work_dir, "seed": self.seed,
                "episodes": self.recipe.random_episodes_per_policy,
                "max_episode_steps": self.recipe.max_episode_steps}

    def simulate_random(self, candidate, first):
        """Episodes ``first ..`` of a random-level candidate, tanh(mean), on the physics alone."""
        return simulate_candidate(self.simulator, candidate, first, **self.candidate_settings())

    def record_early_snapshots(self, folder, run_info):
        """The random level: each chosen snapshot records the episodes it was chosen by, in
        order of their target return."""
        recipe = self.recipe
        per_policy = recipe.random_episodes_per_policy
        targets, chosen = self.random_policies(run_info)

        def entries(done):
            for p in range(done // per_policy, len(chosen)):
                for k, episode in self.simulate_random(chosen[p], max(done - p * per_policy, 0)):
                    if episode.episode_return != chosen[p]["returns"][k]:
                        raise GenerateError(
                            f"{chosen[p]['policy_id']}'s random-level episode {k} returned "
                            f"{episode.episode_return!r}, not the "
                            f"{chosen[p]['returns'][k]!r} it was chosen by: the simulation is "
                            "not deterministic here; delete "
                            f"{self.work_dir / RANDOM_CANDIDATES_NAME} and run again, and report "
                            "it if it repeats")
                    yield episode, chosen[p]["policy_id"], chosen[p]["env_steps"]

        selection = {"random_selection": {
            "rule": "one per quantile (p + 0.5) / "
                    f"{len(targets)} of Table 3's random row: among the evaluated snapshots "
                    "before the band whose evaluation mean is at most the row's max, the unused "
                    f"one whose {per_policy} recorded episodes' mean return is closest, among "
                    f"those whose episodes all stay within {recipe.random_max_ratio:g} x the "
                    "row's max (any unused one if none does)",
            "targets": targets,
            "snapshots": [{"policy_id": c["policy_id"], "env_steps": c["env_steps"],
                           "mean_return": float(np.mean(c["returns"])),
                           "evaluation_mean_return": c.get("mean_return")}
                          for c in chosen]}}
        with self.writer(folder, "random", dict(run_info, **selection)) as writer:
            self.write_rendered(writer, entries(writer.num_episodes), per_policy * len(chosen),
                                f"record {self.task}-random")

    def write_medrep(self, folder, episodes, run_info, end=None):
        """The training ``episodes`` until the medium snapshot, the band or a return
        (``medrep_until``; ``end``: that ``(steps, rule)`` of :func:`medrep_end_step` when
        ``episodes`` may stop before it), evenly spaced down to medrep_episodes, rendered."""
        training_run = run_info["training_run"]
        medium_step = training_run.get("medium_policy", {}).get("policy_step")
        until, rule = end or medrep_end_step(self.recipe, training_run["evaluations"],
                                             medium_step, episode_returns(episodes))
        before, selected = medrep_indices([step for _, _, step in episodes], until,
                                          self.recipe.medrep_episodes)
        if not selected:
            raise GenerateError(f"medrep would hold no episode: {rule} came at {until} "
                                "environment steps, and none started before (the uniform "
                                "prefill's all count as step 0); check medrep_until "
                                f"({self.recipe.medrep_until!r})")
        extra = dict(run_info, medrep_selection={
            "training_episodes": len(episodes), "until_env_steps": until,
            "until": self.recipe.medrep_until, "before": len(before), "kept": len(selected),
            "rule": f"the episodes played before {rule}, evenly spaced (all when fewer than "
                    "medrep_episodes)"})
        with self.writer(folder, "medrep", extra) as writer:
            self.write_rendered(writer, (episodes[i] for i in
                                         selected[writer.num_episodes:]),
                                len(selected), f"render {self.task}-medrep")

    def record_medium(self, folder, medium, run_info):
        """The medium level: the snapshot the medium search kept plays medium_episodes
        episodes, acting as it was judged (tanh(mean), or sampled actions; car_racing: maybe
        under a speed limit)."""
        recipe = self.recipe
        policy = medium_policy(SACPolicy.load(self.work_dir / MEDIUM_POLICY_FILE),
                               medium_transform(medium))

        def entries(done):
            for _, episode in simulate_level(
                    self.simulator, policy, done, recipe.medium_episodes, seed=self.seed,
                    stream="medium", explore=medium.get("explore", False),
                    max_episode_steps=recipe.max_episode_steps):
                yield episode, medium["policy_id"], medium["policy_step"]

        with self.writer(folder, "medium", run_info) as writer:
            self.write_rendered(writer, entries(writer.num_episodes), recipe.medium_episodes,
                                f"record {self.task}-medium")


class MediumSearch:
    """The ``on_evaluation`` of the sac-state run: the first snapshot whose returns look like
    Table 3's medium row, which the dataset's fidelity checks then hold it to
    (:mod:`lqv_d4rl.fidelity`: at least 90 % of the episodes inside the paper's [min, max] band,
    the mean within +-10 % of the paper's).

    Each evaluated snapshot is judged acting deterministically (tanh(mean), the evaluation's own
    returns) and, once its evaluation mean has reached the band, also with sampled actions (the
    way V-D4RL recorded its medium data): a snapshot that walks too well with its mean action may
    be medium with its sampled ones. A mode is *promising* when at least ``min_share`` of its
    episodes lie in the band and its mean is within ``mean_tolerance`` of the paper's mean; it
    then plays ``confirm_episodes`` more, and the run stops when it is still promising with them.
    The margins are stricter than the fidelity checks so that the recorded episodes pass those
    too. The closest candidate so far is kept (``medium-policy.pt`` and ``.json``, as
    :class:`~collectors.generate.MediumPolicyTracker` keeps TIA's): ``training_progress.py``
    shows it, and a run whose budget ends without a match names it and records no medium level
    (:func:`budget_spent_message`), so that a larger budget can still find one, unless asked to
    record it (``--record-closest-medium``, :func:`closest_medium_notice`).
    Without a band (smoke) the last snapshot is kept, deterministic, and the run never stops.

    Two fixed handicaps of a snapshot that acts too well are judged too, each the same way
    (``play`` gets the transform, and the kept info records it: ``transform``,
    ``action_transform``): ``speed_limits`` (car_racing: a snapshot that reached the band drives
    with tanh(mean) under each limit, :func:`lqv_d4rl.car_racing.speed_limited_action`) and
    ``action_scales`` (dm_control: a snapshot whose mean evaluation return is above the paper's
    mean acts with its tanh(mean) scaled by each scale in turn, from the largest, until one
    brings the mean below the band).
    """

    rule = "table3"

    def __init__(self, band, paper_mean, work_dir, *, min_share=0.95, mean_tolerance=0.07,
                 confirm_episodes=30, speed_limits=(), action_scales=()):
        self.band, self.paper_mean = band, paper_mean
        self.work_dir = Path(work_dir)
        self.min_share, self.mean_tolerance = min_share, mean_tolerance
        self.confirm_episodes = confirm_episodes
        self.speed_limits = tuple(float(limit) for limit in speed_limits)
        self.action_scales = tuple(sorted((float(scale) for scale in action_scales),
                                          reverse=True))

    def shortfalls(self, returns):
        """(share of episodes missing from ``min_share``, relative mean error beyond
        ``mean_tolerance``): both 0 for a promising set of returns."""
        share = share_in_band(returns, self.band)
        error = abs(float(np.mean(returns)) - self.paper_mean) / abs(self.paper_mean)
        return max(self.min_share - share, 0.0), max(error - self.mean_tolerance, 0.0)

    def __call__(self, evaluation, agent, play=None):
        """Judge one evaluation; ``play(count, explore, transform=None)`` plays more episodes of
        the snapshot and returns their returns. True: stop, the medium snapshot is found."""
        if self.band is None:
            self._keep(evaluation, agent, False, None, evaluation.returns,
                       -float(evaluation.env_steps))
            return False
        for explore, transform, returns in self._candidates(evaluation, play):
            confirmed = False
            if play is not None and sum(self.shortfalls(returns)) == 0:
                returns = returns + play(self.confirm_episodes, explore, transform=transform)
                confirmed = True
            distance = float(sum(self.shortfalls(returns))) + (0.0 if confirmed else 1e-3)
            self._keep(evaluation, agent, explore, transform, returns, distance)
            if confirmed and distance == 0.0:
                return True
        return False

    def _candidates(self, evaluation, play):
        """``(explore, transform, returns)`` of each way of acting to judge, in order; each is
        played only when the ones before did not end the search."""
        count = len(evaluation.returns)
        yield False, None, list(evaluation.returns)
        if play is None or evaluation.mean_return < self.band[0]:
            return
        yield True, None, play(count, True)
        for limit in self.speed_limits:
            transform = ("speed_limit", limit)
            yield False, transform, play(count, False, transform=transform)
        if evaluation.mean_return <= self.paper_mean:
            return  # weaker actuators only lower the return
        for scale in self.action_scales:
            transform = ("action_scale", scale)
            returns = play(count, False, transform=transform)
            yield False, transform, returns
            if np.mean(returns) < self.band[0]:
                return  # smaller scales would only lower it further

    def _keep(self, evaluation, agent, explore, transform, returns, distance):
        """Save the snapshot and its info when it is closer than every earlier candidate (a
        confirmed match is distance 0; an unconfirmed one 0.001)."""
        best = self.load_info()
        if best is not None and distance >= best["distance"]:
            return
        agent.save(self.work_dir / MEDIUM_POLICY_FILE)
        handicap = {} if transform is None else {
            "transform": [transform[0], float(transform[1])],
            "action_transform": describe_transform(transform)}
        write_json_atomically(self.work_dir / MEDIUM_POLICY_INFO, {
            "policy_id": evaluation.policy_id, "policy_step": evaluation.env_steps,
            "explore": explore, **handicap, "returns": [float(r) for r in returns],
            "evaluation_return": float(np.mean(returns)), "rule": self.rule,
            "distance": distance, "band": None if self.band is None else list(self.band),
            "share_in_band": None if self.band is None else share_in_band(returns, self.band),
            "in_band": self.band is not None and distance == 0.0})

    def load_info(self):
        """The kept snapshot's info dict, or None before the first evaluation."""
        path = self.work_dir / MEDIUM_POLICY_INFO
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def budget_spent_message(task, state, medium, recipe, unrecorded, unsettled=()):
    """What to do when the training run spent its budget and no snapshot matched the medium row;
    ``unrecorded``: the levels asked for and not recorded; ``unsettled``: those of them the run
    cannot record without passing the band (:func:`unsettled_levels`)."""
    names = ", ".join(f"{task}-{level}" for level in unrecorded)
    best = max(state.evaluations, key=lambda e: e["mean_return"])
    low, high = recipe.medium_band
    return (f"the {task} training run spent its budget of {recipe.sac.total_steps:,} environment "
            f"steps and no evaluated snapshot matched Table 3's medium row ({low:g}..{high:g}, "
            f"mean {recipe.medium_mean:g}): the highest evaluation mean was "
            f"{best['mean_return']:.1f} (at {best['env_steps']:,} steps), the closest candidate "
            f"{medium['policy_id']}. {names} {'was' if len(unrecorded) == 1 else 'were'} not "
            f"recorded. Give the run more steps: the same "
            f"command with --max-env-steps {2 * recipe.sac.total_steps} (lqv-d4rl generate; "
            f"SACConfig.total_steps in Python) continues it from where it stopped"
            + closest_medium_hint(task, unrecorded, unsettled))


def closest_medium_hint(task, unrecorded, unsettled):
    """The budget-spent message's last sentence: how ``--record-closest-medium`` would record
    the medium level (nothing when medium is not among the ``unrecorded`` levels)."""
    if "medium" not in unrecorded:
        return ""
    if unsettled:
        names = " and ".join(f"{task}-{level}" for level in unsettled)
        return (f". Or record the closest candidate as {task}-medium alone: the same command "
                f"with --levels medium --record-closest-medium ({names} "
                f"{'needs' if len(unsettled) == 1 else 'need'} a run that passed the band)")
    return (". Or add --record-closest-medium (record_closest_medium=True) to record the "
            "closest candidate as it is, its fidelity verdicts showing how far it is from "
            "Table 3")


def unsettled_levels(recipe, levels, evaluations):
    """The random and medrep levels among ``levels`` that a run which spent its budget without a
    medium match cannot record: random takes the snapshots before the band, so it needs a run
    that reached the band; medrep too, unless it ends at the medium snapshot (then at the
    closest candidate). Such levels are recorded early once known, so any still pending are
    unsettled (:func:`levels_settle_early`)."""
    early = [level for level in ("random", "medrep") if level in levels]
    if levels_settle_early(recipe):
        return early
    if first_band_evaluation(evaluations, recipe.medium_band) is None:
        return [level for level in early if level == "random"]
    return []


def closest_medium_notice(task, state, medium, folders):
    """The warning of a medium level recorded from the closest candidate
    (``--record-closest-medium``) once the budget was spent without a match; ``folders``: the
    levels that depend on it (medium, and medrep when it ends at the medium snapshot)."""
    names = " and ".join(str(folder) for folder in folders)
    return (f"no evaluated snapshot of the {task} training run matched Table 3's medium row in "
            f"its {state.env_steps:,} environment steps; recording the closest candidate, "
            f"{medium['policy_id']} ({medium['share_in_band']:.0%} of its "
            f"{len(medium['returns'])} evaluation episodes in the band), as {task}-medium "
            f"(--record-closest-medium). Its fidelity verdicts show how far it is. To search "
            f"on, delete {names} (even if only partly written) and run the same command with "
            f"a larger --max-env-steps")


def medrep_end_step(recipe, evaluations, medium_step, episodes=None):
    """The environment steps where medrep's training episodes end under ``recipe.medrep_until``
    (None: they do not end before the run's last episode) and that rule in words;
    ``medium_step``: the medium snapshot's steps (None: not found yet); ``episodes``: the
    training episodes' ``(return, policy step)`` in run order (for a return)."""
    until = recipe.medrep_until
    if until == "medium":
        return medium_step, "the medium snapshot"
    if until == "band":
        return (first_band_evaluation(evaluations, recipe.medium_band),
                "the first evaluation whose mean return reached the band's min")
    if episodes is None:
        raise ValueError("medrep ends at a return: medrep_end_step needs the training episodes")
    step = next((step for episode_return, step in episodes if episode_return > until), None)
    return (None if step is None else int(step),
            f"the first training episode whose return exceeded {until:g}")


def levels_settle_early(recipe):
    """Whether a run's random and medrep levels are known before its medium search ends: with a
    band (not smoke) and medrep ending at the band or at a return, not at the medium snapshot."""
    return recipe.medium_band is not None and recipe.medrep_until != "medium"


def early_levels_known_at(recipe, evaluations, episodes=None):
    """The environment steps after which the run's random level (the snapshots before the band)
    and medrep (the training episodes before its end; ``episodes`` as for
    :func:`medrep_end_step`) are known: the later of the first band evaluation and medrep's end;
    None before it, or when they wait for the medium snapshot (:func:`levels_settle_early`)."""
    if not levels_settle_early(recipe):
        return None
    band = first_band_evaluation(evaluations, recipe.medium_band)
    medrep, _ = medrep_end_step(recipe, evaluations, None, episodes)
    return None if band is None or medrep is None else max(band, medrep)


def episode_returns(episodes):
    """``(return, policy step)`` of each of a run's training episodes (RecordedEpisode, policy
    id, policy step), lazily."""
    return ((episode.episode_return, step) for episode, _, step in episodes)


def evaluation_records(evaluations):
    """The run's evaluations as a dataset's provenance lists them."""
    return [{key: e[key] for key in ("env_steps", "policy_id", "mean_return", "returns",
                                     "snapshot")} for e in evaluations]


def medrep_indices(policy_steps, until, count):
    """The training episodes (indices in run order, by the steps of the snapshot that played
    each) played before ``until`` environment steps (all when None), and those medrep keeps of
    them: evenly spaced down to ``count``."""
    before = [index for index, step in enumerate(policy_steps) if until is None or step < until]
    return before, select_medrep_episodes(before, count)


def first_band_evaluation(evaluations, band):
    """Environment steps of the first evaluation of a trained actor whose mean return reached the
    band's min: where medrep ends with ``medrep_until="band"``, even when the medium search
    keeps training longer, and where the random level's candidates end. ``None`` without a band
    (smoke) or if none reached it."""
    return None if band is None else first_evaluation_reaching(evaluations, band[0])


def first_evaluation_reaching(evaluations, threshold):
    """Environment steps of the first evaluation of a trained actor (not the one at step 0)
    whose mean return reached ``threshold``; ``None`` if none did."""
    return next((e["env_steps"] for e in evaluations
                 if e["env_steps"] > 0 and e["mean_return"] >= threshold), None)


def random_candidates(evaluations, band, paper_returns, count, snapshots=()):
    """The random level's candidates: the evaluated snapshots before the band
    (:func:`first_band_evaluation`) whose evaluation mean is at most the row's max (the others
    would set the level's max) and the run's other ``snapshots`` before the band (not evaluated:
    all of them), in order of their steps; or, when fewer than ``count`` are, the ``count``
    early evaluated ones of lowest evaluation mean. Each with ``index``, which numbers its
    episodes: its position in ``evaluations``, or :data:`SNAPSHOT_INDEX_OFFSET` plus its
    position in ``snapshots``."""
    reached = first_band_evaluation(evaluations, band)
    early = [dict(e, index=i) for i, e in enumerate(evaluations)
             if reached is None or e["env_steps"] < reached]
    below = [e for e in early if e["mean_return"] <= paper_returns["max"]]
    others = [dict(s, index=SNAPSHOT_INDEX_OFFSET + k) for k, s in enumerate(snapshots)
              if reached is None or s["env_steps"] < reached]
    if len(below) + len(others) >= count:
        return sorted(below + others, key=lambda c: c["env_steps"])
    lowest = sorted(early, key=lambda e: e["mean_return"])[:count]
    return sorted(lowest, key=lambda e: e["index"])


SNAPSHOT_INDEX_OFFSET = 100_000
"""Where the random-level episode numbers of the snapshots between evaluations start (above any
run's evaluation count), so no two candidates share episodes."""


def choose_random_policies(candidates, targets, cap):
    """For each target return in turn, the unused candidate whose ``returns`` have the closest
    mean, among those with no return above ``cap`` (any unused one if none; ties: the earlier
    snapshot). Distinct, since a snapshot chosen twice would record the same episodes twice."""
    if len(candidates) < len(targets):
        raise GenerateError(
            f"the random level needs {len(targets)} distinct snapshots from before the medium "
            f"band and the training run evaluated only {len(candidates)}: evaluate more often "
            "(SACConfig.eval_every) or lower random_policies")
    unused, chosen = list(candidates), []
    for target in targets:
        pool = [c for c in unused if max(c["returns"]) <= cap] or unused
        best = min(pool, key=lambda c: (abs(float(np.mean(c["returns"])) - target),
                                        c["env_steps"]))
        chosen.append(best)
        unused.remove(best)
    return chosen


def quantile_targets(paper_returns, count):
    """``count`` returns spread like a Table 3 row: the quantiles ``(p + 0.5) / count`` of the
    piecewise-linear quantile function through its min, p25, median, p75 and max."""
    knots = (0.0, 0.25, 0.5, 0.75, 1.0)
    values = [paper_returns[key] for key in ("min", "p25", "median", "p75", "max")]
    return [float(np.interp((p + 0.5) / count, knots, values)) for p in range(count)]
