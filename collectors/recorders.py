"""Rolling out behaviour policies and recording the three LQV-D4RL levels (SeMOPO, Appendix C).

Episodes are played in **rounds**: ``num_envs`` episodes at once on a vector env, all starting
together; an environment whose episode ended waits (its policy keeps being queried on its last
frame, so the batch the policy sees never changes shape) until the round's longest episode ends.
Rounds give every episode a fixed place: episode ``k`` of a level always has the same seed, the
same batch neighbours and the same policy noise, so a run that is resumed in the middle of a level
produces the same bytes as one that never stopped.

The levels (``record_random``, ``record_policy``, and the medrep selection in
:func:`select_medrep_episodes`) each tag every episode with the policy that produced it:

* ``random``: ``num_policies`` randomly initialized TIA agents with distinct seeds, each recording
  ``episodes_per_policy`` episodes (paper recipe: 10 x 20 = 200). Policy ids
  ``tia-init00-seed0``, ..., policy_step -1 (never trained).
* ``medrep``: the episodes of the TIA training run, from its start until the policy first reaches
  the medium band (see collectors.online and collectors.generate); policy ids
  ``tia-seed0-prefill`` (uniform random prefill actions, policy_step 0) and
  ``tia-seed0-step012000`` (the snapshot after 12,000 env steps, policy_step 12000).
* ``medium``: one fixed snapshot recording every episode (paper: 200), without exploration noise
  by default.

:class:`EpisodeBuilder` turns env outputs into the entry convention of the format: entry 0 is the
observation after reset with zero action, zero reward, discount 1 and is_first; then one entry per
agent step; is_last on the final entry; is_terminal when the env terminated (discount 0). It also
keeps the ``state`` and ``physics`` vectors the environment reports in its info dicts
(``info["state"]``, ``info["physics_state"]``), which every dataset of format version 2 stores,
and, when the environment reports them (``info["features"]``: car_racing's physics-only simulator,
:class:`lqv_d4rl.car_racing.CarRacingSimulator`), the policy's observations, which differ there
from the stored ``state`` and are what a state-based learner trains on
(:attr:`RecordedEpisode.learner_steps`).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from lqv_d4rl.format import STATE_DTYPES

# Independent random streams of one generation seed (see episode_seed).
STREAMS = {"random": 11, "medrep": 12, "medium": 13, "eval": 14, "random_policy": 15,
           "noise": 16, "agent": 17, "probe": 18}


_STATE_INFO_KEYS = {"state": "state", "physics": "physics_state"}
"""Dataset array -> the env info entry that carries it."""


def derived_seed(seed, stream, *indices):
    """A 31-bit seed for item ``indices`` of random ``stream`` (a STREAMS key) of ``seed``."""
    entropy = [int(seed), STREAMS[stream], *map(int, indices)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


class EpisodeBuilder:
    """Accumulates one episode's entries and returns them as a format step dict.

    ``EpisodeBuilder(first_obs, action_dim)`` makes entry 0; :meth:`add` appends one agent step;
    :meth:`finish` returns ``{"image", "action", "reward", "discount", "is_first", "is_last",
    "is_terminal"}`` with the format's dtypes.
    """

    def __init__(self, first_obs, action_dim, video_id=-1, info=None):
        self.images = [] if first_obs is None else [np.asarray(first_obs, np.uint8)]
        self.actions = [np.zeros(action_dim, np.float32)]
        self.rewards = [0.0]
        self.discounts = [1.0]
        self.terminated = False
        self.video_ids = []
        self.states = {key: [] for key, info_key in _STATE_INFO_KEYS.items()
                       if info is not None and info_key in info}
        self.features = [] if info is not None and "features" in info else None
        self._note_video(video_id)
        self._note_states(info)

    def __len__(self):
        """Entries so far (agent steps + 1)."""
        return len(self.actions)

    def add(self, action, obs, reward, *, discount=1.0, terminated=False, video_id=-1,
            info=None):
        """Append the entry of one agent step: ``action`` led to ``obs`` and ``reward``
        (``obs`` None: no image, e.g. a physics-only rollout rendered later)."""
        if obs is not None:
            self.images.append(np.asarray(obs, np.uint8))
        self.actions.append(np.asarray(action, np.float32))
        self.rewards.append(float(reward))
        self.discounts.append(0.0 if terminated else float(discount))
        self.terminated = bool(terminated)
        self._note_video(video_id)
        self._note_states(info)

    def finish(self):
        """The episode's step dict (is_last on the final entry, is_terminal if it terminated);
        without images it has no ``image`` key."""
        length = len(self.actions)
        flags = {name: np.zeros(length, bool) for name in ("is_first", "is_last", "is_terminal")}
        flags["is_first"][0] = True
        flags["is_last"][-1] = True
        flags["is_terminal"][-1] = self.terminated
        images = {"image": np.stack(self.images)} if self.images else {}
        return {**images, "action": np.stack(self.actions),
                "reward": np.array(self.rewards, np.float32),
                "discount": np.array(self.discounts, np.float32), **flags}

    def finish_states(self):
        """The ``state`` (float32) and ``physics`` (float64) arrays the infos carried."""
        return {key: np.stack(values).astype(STATE_DTYPES[key])
                for key, values in self.states.items()}

    def finish_features(self):
        """The (L, F) float32 policy observations the infos carried (``info["features"]``), or
        None when the environment reports none (its ``state`` is the policy's observation)."""
        return None if self.features is None else np.stack(self.features).astype(np.float32)

    def _note_states(self, info):
        for key, values in self.states.items():
            if info is None or _STATE_INFO_KEYS[key] not in info:
                raise ValueError(f"the environment reported {key!r} at the start of the episode "
                                 "but not at this step")
            values.append(np.asarray(info[_STATE_INFO_KEYS[key]]))
        if self.features is not None:
            if info is None or "features" not in info:
                raise ValueError("the environment reported 'features' at the start of the "
                                 "episode but not at this step")
            self.features.append(np.asarray(info["features"]))

    def _note_video(self, video_id):
        # The background clips seen, in order of first appearance (-1 = no distractor).
        if video_id is not None and video_id >= 0 and video_id not in self.video_ids:
            self.video_ids.append(int(video_id))


@dataclass
class RecordedEpisode:
    """One finished episode of a round."""

    steps: dict
    """The step dict (format entry convention)."""
    seed: int
    """The environment seed it was reset with."""
    video_ids: list
    """Background clip ids seen, in order of first appearance."""
    states: dict = dataclasses.field(default_factory=dict)
    """The ``state`` / ``physics`` arrays (format version 2) the environment reported."""
    features: np.ndarray | None = None
    """The (L, F) policy observations when they are not the stored ``state`` (car_racing's
    physics-only simulator: :data:`lqv_d4rl.car_racing.FEATURE_FIELDS`); None otherwise. Not part
    of the dataset."""

    @property
    def all_steps(self):
        """:attr:`steps` and :attr:`states` in one dict (what a ShardWriter with states takes)."""
        return {**self.steps, **self.states}

    @property
    def learner_steps(self):
        """What a state-based learner trains on: :attr:`all_steps` with ``state`` replaced by the
        policy's observations when they differ from it (:attr:`features`)."""
        steps = self.all_steps
        return steps if self.features is None else {**steps, "state": self.features}

    @property
    def num_agent_steps(self):
        """Agent steps of the episode (entries - 1)."""
        return len(self.steps["reward"]) - 1

    @property
    def episode_return(self):
        """Sum of the episode's rewards."""
        return float(self.steps["reward"].sum(dtype=np.float64))


class UniformRandomPolicy:
    """Uniform random actions in [-1, 1] with the agent interface (the training run's prefill)."""

    def __init__(self, action_dim, seed=0):
        self.action_dim = int(action_dim)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed):
        """Restart the action stream from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def initial_state(self, batch_size):
        """No recurrent state."""
        return None

    def act(self, obs, state, is_first, *, explore=True):
        """(N, action_dim) float32 uniform actions; the state stays None."""
        actions = self.rng.uniform(-1.0, 1.0, (len(obs), self.action_dim)).astype(np.float32)
        return actions, state


def seed_policy_noise(policy, seed):
    """Make the policy's random draws in the next round depend on ``seed`` only.

    A TIA agent draws its action samples and exploration noise from its ``act_generator``; the
    prefill policy from its own numpy generator.
    """
    if hasattr(policy, "act_generator"):
        policy.act_generator.manual_seed(int(seed))
    elif hasattr(policy, "reseed"):
        policy.reseed(seed)
    else:
        raise TypeError(f"cannot seed the random draws of a {type(policy).__name__}: give it an "
                        "act_generator (torch.Generator) or a reseed(seed) method")


def play_round(venv, policy, seeds, *, explore, max_episode_steps=None, noise_seed=0):
    """Play one episode per environment of ``venv`` with ``policy``; return RecordedEpisodes.

    ``seeds``: one reset seed per environment. ``policy``: ``initial_state(n)`` and
    ``act(obs, state, is_first, explore=) -> (actions, state)``. ``max_episode_steps`` cuts
    episodes after that many agent steps (a time limit: is_last without is_terminal).
    ``noise_seed`` seeds the policy's random draws for this round (see seed_policy_noise).
    """
    num_envs = venv.num_envs
    seed_policy_noise(policy, noise_seed)
    obs, infos = venv.reset(seeds)
    builders = [EpisodeBuilder(obs[i], venv.action_dim, infos[i].get("video_id", -1), infos[i])
                for i in range(num_envs)]
    active = np.ones(num_envs, bool)
    is_first = np.ones(num_envs, bool)
    last_obs = obs.copy()
    state = policy.initial_state(num_envs)
    while active.any():
        actions, state = policy.act(last_obs, state, is_first, explore=explore)
        actions = np.asarray(actions, np.float32)
        obs, rewards, terminated, truncated, infos = venv.step(actions, active)
        for i in np.flatnonzero(active):
            builder = builders[i]
            builder.add(actions[i], obs[i], rewards[i], discount=infos[i].get("discount", 1.0),
                        terminated=terminated[i], video_id=infos[i].get("video_id", -1),
                        info=infos[i])
            last_obs[i] = obs[i]
            time_limit = max_episode_steps is not None and len(builder) - 1 >= max_episode_steps
            if terminated[i] or truncated[i] or time_limit:
                active[i] = False
        is_first[:] = False
    return [RecordedEpisode(builder.finish(), int(seed), builder.video_ids,
                            builder.finish_states())
            for builder, seed in zip(builders, seeds)]


def play_episodes(venv, policy, first, count, *, seed, stream, explore, max_episode_steps=None,
                  index_offset=0):
    """Yield ``(k, RecordedEpisode)`` for episodes ``first .. count - 1`` of one policy.

    Episode ``k`` is played in round ``k // num_envs`` with reset seed
    ``derived_seed(seed, stream, index_offset + k)``; the round's noise seed depends on its first
    episode. A ``first`` inside a round replays that round and skips its earlier episodes
    (resuming), so every episode comes out the same either way.
    """
    num_envs = venv.num_envs
    for round_start in range((first // num_envs) * num_envs, count, num_envs):
        index = index_offset + round_start
        seeds = [derived_seed(seed, stream, index + i) for i in range(num_envs)]
        noise_seed = derived_seed(seed, "noise", STREAMS[stream], index)
        episodes = play_round(venv, policy, seeds, explore=explore,
                              max_episode_steps=max_episode_steps, noise_seed=noise_seed)
        for offset, episode in enumerate(episodes):
            k = round_start + offset
            if first <= k < count:
                yield k, episode


def record_random(venv, writer, make_agent, *, num_policies, episodes_per_policy, seed,
                  explore=True, max_episode_steps=None, progress=None):
    """Record the ``random`` level: ``num_policies`` freshly initialized agents in turn.

    ``make_agent(agent_seed)`` builds an untrained agent; policy ``p`` gets seed
    ``derived_seed(seed, "random_policy", p)``. Episodes already in ``writer`` (resume) are skipped.
    ``progress``: a tqdm-like bar to ``update(1)`` per episode written.
    """
    total = num_policies * episodes_per_policy
    done = writer.num_episodes
    for policy_index in range(done // episodes_per_policy, num_policies):
        agent = make_agent(derived_seed(seed, "random_policy", policy_index))
        policy_id = f"tia-init{policy_index:02d}-seed{seed}"
        first = policy_index * episodes_per_policy
        resume_from = max(done - first, 0)
        for _, episode in play_episodes(
                venv, agent, resume_from, episodes_per_policy, seed=seed, stream="random",
                explore=explore, max_episode_steps=max_episode_steps, index_offset=first):
            writer.add_episode(episode.all_steps, policy_id=policy_id, policy_step=-1,
                               seed=episode.seed, video_ids=episode.video_ids)
            _advance(progress)
    return total


def record_policy(venv, writer, policy, *, policy_id, policy_step, episodes, seed,
                  explore=False, max_episode_steps=None, progress=None):
    """Record the ``medium`` level: ``episodes`` episodes of one fixed ``policy``.

    Episodes already in ``writer`` (resume) are skipped.
    """
    for _, episode in play_episodes(venv, policy, writer.num_episodes, episodes, seed=seed,
                                    stream="medium", explore=explore,
                                    max_episode_steps=max_episode_steps):
        writer.add_episode(episode.all_steps, policy_id=policy_id, policy_step=policy_step,
                           seed=episode.seed, video_ids=episode.video_ids)
        _advance(progress)
    return episodes


class MedrepRecorder:
    """Keeps track of the training run's episodes (the ``on_episode`` callback of the trainer).

    The steps themselves stay in the trainer's replay (which the checkpoint saves); the recorder
    keeps each episode's replay index, policy id, snapshot step and return, and finally picks
    the episodes of the medrep dataset (:func:`select_medrep_episodes`).
    """

    def __init__(self):
        self.episodes = []

    def __call__(self, steps, policy_id, policy_step, seed, video_ids, index):
        """Note one finished training episode (its index in the replay)."""
        self.episodes.append({"index": int(index), "policy_id": policy_id,
                              "policy_step": int(policy_step), "seed": int(seed),
                              "return": float(np.sum(steps["reward"], dtype=np.float64))})

    def select(self, count):
        """Replay indices of the medrep episodes (see :func:`select_medrep_episodes`)."""
        return select_medrep_episodes([e["index"] for e in self.episodes], count)


def select_medrep_episodes(indices, count):
    """Pick ``count`` of the training episodes ``indices`` (in run order), evenly spread.

    The medrep dataset covers the run from its start until the policy first reaches the medium
    band. When the run produced more than ``count`` episodes, episodes evenly spaced over it are
    kept (the first and the last always), so early random-like and late near-medium behaviour are
    both represented; when it produced fewer, all of them are kept.
    """
    indices = list(indices)
    if len(indices) <= count:
        return indices
    positions = np.round(np.linspace(0, len(indices) - 1, count)).astype(np.int64)
    return [indices[p] for p in positions]


def resimulate_states(env, steps, seed):
    """The ``state`` and ``physics`` arrays of a recorded episode, by playing its actions again.

    ``env`` is reset with the episode's ``seed`` and stepped with its stored actions (a
    ``lqv_d4rl.physics.StateSimulator`` for dm_control, else the task's env); the simulators are
    deterministic, so this gives the states the episode went through. Raises RuntimeError when a
    reward differs from the stored one (then the episode was not played in this environment).
    """
    _, info = env.reset(seed=int(seed))
    builder = EpisodeBuilder(None, env.action_space.shape[0], info=info)
    for t, (action, stored) in enumerate(zip(steps["action"][1:], steps["reward"][1:]), start=1):
        _, reward, terminated, _, info = env.step(action)
        if np.float32(reward) != stored:
            raise RuntimeError(f"replaying the episode of seed {seed}: entry {t} gives reward "
                               f"{reward}, the episode stored {stored}; it was not played in "
                               "this environment")
        builder.add(action, None, reward, discount=info["discount"], terminated=terminated,
                    info=info)
    return builder.finish_states()


def _advance(progress):
    if progress is not None:
        progress.update(1)
