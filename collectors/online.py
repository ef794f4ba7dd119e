"""The TIA online training loop, with the published schedule and resumable checkpoints.

:class:`OnlineTrainer` drives a :class:`collectors.tia.TIAAgent` on a vector env (all counts are
environment steps, i.e. agent steps x action repeat, as in the published code):

1. **prefill**: uniformly random actions until ``prefill_steps``; these episodes are tagged
   ``<run>-prefill`` (policy_step 0);
2. then ``pretrain_steps`` updates, and afterwards ``train_steps`` updates for every
   ``train_every`` environment steps collected (updates on batches of ``batch_size`` x ``seq_len``
   windows sampled from the :class:`~collectors.replay.EpisodeReplay`, never across episodes);
3. collection with exploration noise (``expl_noise``), each episode tagged with the snapshot that
   played it: ``<run>-step012000`` = the agent after 12,000 environment steps;
4. every ``eval_every`` environment steps an evaluation over ``eval_episodes`` episodes without
   noise; ``on_evaluation(evaluation, agent)`` may end the run by returning True (generate stops
   when the medium band is reached); the run also ends after ``max_env_steps``.

Episodes are played in rounds of ``num_envs`` (see :mod:`collectors.recorders`), and training and
evaluation happen between rounds, so each episode is played by one fixed snapshot. Every finished
training episode is reported through ``on_episode(steps, policy_id, policy_step, seed, video_ids,
index)`` (``index``: its position in the replay).

Metrics: every metric that ``agent.update`` returns is averaged over the updates of a training
point and kept (:attr:`OnlineTrainer.metrics`, the latest in the progress bar's postfix) and
written to ``<work_dir>/metrics.csv`` (``lqv_d4rl.runs`` format: ``phase,step,metric,value`` with
step = environment steps): phase ``train`` (the update metrics, ``updates`` and
``updates_per_second``), ``episode`` (``return`` of each training episode) and ``eval``
(``return``, the mean over the evaluation's episodes).

Checkpoints (``<work_dir>/``, every ``checkpoint_every`` environment steps and at the end):
``agent-<env steps>.pt`` (networks, optimizers, generators), ``replay/episodes-*.npz``
(append-only chunks of episodes) and ``state.json`` (counters, evaluations, the replay's sampling
generator), written last and atomically: it is the commit point. A new trainer on the same
``work_dir`` continues from the last checkpoint (metrics rows logged after it are dropped) and,
because every round is seeded from its position, produces exactly what the uninterrupted run would
have. After a resume, the restored episodes are reported to ``on_episode`` again first, so a
consumer always sees the whole run.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lqv_d4rl.errors import LQVError
from lqv_d4rl.format import write_json_atomically
from lqv_d4rl.runs import METRICS_NAME, MetricMeter, MetricsLog, read_metrics

from .recorders import UniformRandomPolicy, derived_seed, play_episodes, play_round
from .replay import EpisodeReplay

STATE_NAME = "state.json"
STATE_VERSION = 1
DEFAULT_CHECKPOINT_EVERY = 10_000
"""Environment steps between checkpoints (a DMC training run: one per 10 episodes)."""


class CheckpointError(LQVError, RuntimeError):
    """A training checkpoint that does not match the run asked for, or is unreadable."""


def read_checkpoint_state(state_path, version, run_settings, identity=None):
    """The saved ``state.json`` of a training run, checked against the ``version`` of its layout
    and the ``run_settings`` of the run that wants to resume it (:class:`CheckpointError` if
    unreadable or another run's). ``identity(settings)``, when given, is what of the settings
    must match (the rest, e.g. a budget, may differ)."""
    work_dir = Path(state_path).parent
    try:
        saved = json.loads(Path(state_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {state_path} ({err}); delete {work_dir} to "
                              "restart the training run from scratch") from err
    if saved.get("version") != version:
        raise CheckpointError(
            f"the checkpoint in {work_dir} was written by another lqv-d4rl (checkpoint layout "
            f"version {saved.get('version')}; this one reads {version}); delete {work_dir} (or "
            "pass overwrite) to start the training run over")
    identity = identity or (lambda settings: settings)
    if identity(saved.get("run")) != identity(run_settings):
        raise CheckpointError(
            f"the checkpoint in {work_dir} belongs to a run with other settings (stored "
            f"{saved.get('run')}, asked for {run_settings}); resume with the same "
            f"preset and options, or delete {work_dir} (or pass overwrite) to start over")
    return saved


@dataclass
class Evaluation:
    """One evaluation of the training policy (no exploration noise)."""

    env_steps: int
    """Environment steps collected when it ran (the snapshot's policy_step)."""
    policy_id: str
    """Id of the evaluated snapshot."""
    returns: list
    """Episode returns."""

    @property
    def mean_return(self):
        """Mean of :attr:`returns`."""
        return float(np.mean(self.returns))


@dataclass
class TrainerState:
    """Counters of a training run (saved in ``state.json``)."""

    env_steps: int = 0
    episodes: int = 0
    updates: int = 0
    pretrained: bool = False
    train_credit: int = 0
    """Environment steps collected since the last training point."""
    next_eval: int = 0
    finished: bool = False
    stop_reason: str = ""
    agent_file: str = ""
    evaluations: list = field(default_factory=list)
    replay_rng: dict = field(default_factory=dict)


class OnlineTrainer:
    """Trains a TIA agent online and reports every training episode (see the module docstring).

    Args:
        config: a :class:`collectors.tia.TIAConfig` (schedule and network sizes).
        venv: a vector env from :func:`collectors.vector_env.make_vector_env`.
        work_dir: folder of the checkpoints; an existing checkpoint there is resumed.
        seed: seeds the agent, the episodes and the replay sampling.
        device: torch device of the agent.
        max_env_steps: budget of the run (default ``config.total_steps``).
        max_episode_steps: cut episodes after this many agent steps (smoke runs), else the task's.
        checkpoint_every: environment steps between checkpoints (0: after every round); there is
            always one at the end of the run.
        on_episode: ``(steps, policy_id, policy_step, seed, video_ids, index)`` per episode.
        on_evaluation: ``(Evaluation, agent) -> bool``; True ends the run.
        progress: show a tqdm bar.
        settings: JSON-able settings the environments were made with (e.g. the background
            pool's description) that a resumed run must share with the checkpoint.
        action_repeat: environment steps per agent step; ``None`` takes the task's
            (``lqv_d4rl.tasks``). For vector envs of tasks outside the registry (a learning check's
            own cartpole).
    """

    def __init__(self, config, venv, *, work_dir, seed=0, device="cpu", max_env_steps=None,
                 max_episode_steps=None, checkpoint_every=DEFAULT_CHECKPOINT_EVERY, on_episode=None,
                 on_evaluation=None, progress=True, settings=None, action_repeat=None):
        from lqv_d4rl.tasks import get_task

        self.config = config
        self.venv = venv
        self.work_dir = Path(work_dir)
        self.seed = int(seed)
        self.device = device
        self.action_repeat = int(action_repeat or get_task(venv.task).action_repeat)
        self.max_env_steps = int(max_env_steps if max_env_steps is not None
                                 else config.total_steps)
        self.max_episode_steps = max_episode_steps
        self.checkpoint_every = int(checkpoint_every)
        self.on_episode = on_episode
        self.on_evaluation = on_evaluation
        self.progress = progress
        self.settings = settings or {}
        self.run_name = f"tia-seed{self.seed}"
        self.agent = None
        self.replay = None
        self.state = None
        self.metrics_log = MetricsLog(self.work_dir / METRICS_NAME)
        self.metrics = []
        """One dict per training point since this trainer started: ``env_steps``, ``updates``,
        ``updates_per_second`` and the mean of every metric ``agent.update`` returned."""
        self._last_checkpoint_steps = -1
        self._saved_count = 0  # replay episodes already in chunk files

    # -- public --------------------------------------------------------------------------------

    def snapshot_id(self, env_steps):
        """Policy id of the agent after ``env_steps`` environment steps."""
        return f"{self.run_name}-step{env_steps:06d}"

    @property
    def evaluations(self):
        """The evaluations so far, as :class:`Evaluation` objects."""
        return [Evaluation(**e) for e in self.state.evaluations]

    def run(self):
        """Train until ``on_evaluation`` says stop or the budget is spent; return the state."""
        self._restore_or_start()
        self._report_restored_episodes()
        bar = self._progress_bar()
        try:
            while not self.state.finished:
                before = self.state.env_steps
                self._collect_round()
                self._train_if_due()
                self._evaluate_if_due()
                if bar is not None:
                    self._show_status(bar)
                    bar.update(self.state.env_steps - before)
                self._checkpoint_if_due()
        finally:
            if bar is not None:
                bar.close()
        return self.state

    # -- one round -----------------------------------------------------------------------------

    def _collect_round(self):
        state = self.state
        if state.env_steps < self.config.prefill_steps:
            policy = UniformRandomPolicy(self.venv.action_dim)
            policy_id, policy_step = f"{self.run_name}-prefill", 0
        else:
            policy = self.agent
            policy_id, policy_step = self.snapshot_id(state.env_steps), state.env_steps
        first = state.episodes
        seeds = [derived_seed(self.seed, "medrep", first + i) for i in range(self.venv.num_envs)]
        episodes = play_round(self.venv, policy, seeds, explore=True,
                              max_episode_steps=self.max_episode_steps,
                              noise_seed=derived_seed(self.seed, "noise", 0, first))
        start_steps = state.env_steps
        for episode in episodes:
            index = self.replay.add_episode(episode.steps, policy_id=policy_id,
                                            policy_step=policy_step, seed=episode.seed,
                                            video_ids=episode.video_ids)
            state.env_steps += episode.num_agent_steps * self.action_repeat
            self.metrics_log.write("episode", state.env_steps, {"return": episode.episode_return})
            self._report(index)
        state.episodes = len(self.replay)
        collected = state.env_steps - start_steps
        if state.pretrained:
            state.train_credit += collected

    def _train_if_due(self):
        state, config = self.state, self.config
        if state.env_steps < config.prefill_steps:
            return
        if not state.pretrained:
            self._update(config.pretrain_steps)
            state.pretrained = True
            state.train_credit = 0
            state.next_eval = state.env_steps
            return
        points, state.train_credit = divmod(state.train_credit, config.train_every)
        self._update(points * config.train_steps)

    def _update(self, count):
        if count <= 0:
            return
        meter = MetricMeter()
        # the next batches are drawn while the agent trains (no episode is added meanwhile)
        with self.replay.batches(count, self.config.batch_size, self.config.seq_len,
                                 self.device) as batches:
            for batch in batches:
                meter.add(self.agent.update(batch))
                self.state.updates += 1
        row = {"updates": self.state.updates, **meter.flush()}
        self.metrics_log.write("train", self.state.env_steps, row)
        self.metrics.append({"env_steps": self.state.env_steps, **row})

    def _evaluate_if_due(self):
        state = self.state
        out_of_budget = state.env_steps >= self.max_env_steps
        due = state.pretrained and state.env_steps >= state.next_eval
        evaluated_now = bool(state.evaluations) and \
            state.evaluations[-1]["env_steps"] == state.env_steps
        if (due or out_of_budget) and state.pretrained and not evaluated_now:
            evaluation = self._evaluate()
            while state.next_eval <= state.env_steps:
                state.next_eval += self.config.eval_every
            if self.on_evaluation is not None and self.on_evaluation(evaluation, self.agent):
                state.finished, state.stop_reason = True, "on_evaluation"
        if out_of_budget and not state.finished:
            state.finished, state.stop_reason = True, "max_env_steps"

    def _evaluate(self):
        state = self.state
        offset = len(state.evaluations) * self.config.eval_episodes
        returns = [episode.episode_return for _, episode in play_episodes(
            self.venv, self.agent, 0, self.config.eval_episodes, seed=self.seed, stream="eval",
            explore=False, max_episode_steps=self.max_episode_steps, index_offset=offset)]
        evaluation = Evaluation(state.env_steps, self.snapshot_id(state.env_steps), returns)
        state.evaluations.append(asdict(evaluation))
        self.metrics_log.write("eval", state.env_steps, {"return": evaluation.mean_return})
        return evaluation

    def _report(self, index):
        if self.on_episode is not None:
            info = self.replay.episode_info(index)
            self.on_episode(self.replay.episode(index), info["policy_id"], info["policy_step"],
                            info["seed"], info["video_ids"], index)

    # -- checkpoints ---------------------------------------------------------------------------

    def _restore_or_start(self):
        from .tia import TIAAgent

        state_path = self.work_dir / STATE_NAME
        if not state_path.is_file():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.metrics_log.path.unlink(missing_ok=True)  # rows of a run that never checkpointed
            self.state = TrainerState()
            self.agent = TIAAgent(self.config, self.venv.action_dim, device=self.device,
                                  seed=derived_seed(self.seed, "agent"))
            self.replay = EpisodeReplay(self.venv.action_dim, seed=self.seed)
            return
        saved = read_checkpoint_state(state_path, STATE_VERSION, self._run_settings())
        self.state = TrainerState(**saved["state"])
        self.agent = TIAAgent.load(self.work_dir / self.state.agent_file, device=self.device)
        self.replay = load_replay_chunks(self.work_dir / "replay", self.venv.action_dim,
                                         self.state.episodes)
        self.replay.rng.bit_generator.state = self.state.replay_rng
        self._last_checkpoint_steps = self.state.env_steps
        self._saved_count = len(self.replay)
        self._drop_metrics_after(self.state.env_steps)

    def _drop_metrics_after(self, env_steps):
        """Remove the metrics rows logged after the checkpoint (the resumed run logs them again)."""
        path = self.metrics_log.path
        if not path.is_file():
            return
        kept = [row for row in read_metrics(path) if row["step"] <= env_steps]
        temporary = MetricsLog(path.with_name(path.name + ".tmp"))
        temporary.path.unlink(missing_ok=True)
        for row in kept:
            temporary.write(row["phase"], row["step"], {row["metric"]: row["value"]})
        if kept:
            temporary.path.replace(path)
        else:
            path.unlink()

    def _run_settings(self):
        """What must not change between a checkpoint and the run that resumes it."""
        return json.loads(json.dumps({
            "task": self.venv.task, "num_envs": self.venv.num_envs, "seed": self.seed,
            "max_episode_steps": self.max_episode_steps, "config": asdict(self.config),
            "settings": self.settings}))

    def _report_restored_episodes(self):
        for index in range(len(self.replay)):
            self._report(index)

    def _checkpoint_if_due(self):
        state = self.state
        if (state.finished or self.checkpoint_every <= 0
                or state.env_steps - self._last_checkpoint_steps >= self.checkpoint_every):
            self.save_checkpoint()

    def save_checkpoint(self):
        """Write agent, new replay episodes and counters; ``state.json`` last (the commit)."""
        state = self.state
        previous_agent = state.agent_file
        state.agent_file = f"agent-{state.env_steps:09d}.pt"
        self.agent.save(self.work_dir / state.agent_file)
        save_replay_chunk(self.replay, self.work_dir / "replay", self._saved_count)
        state.replay_rng = self.replay.rng.bit_generator.state
        write_json_atomically(self.work_dir / STATE_NAME, {
            "version": STATE_VERSION, "run": self._run_settings(), "state": asdict(state)})
        if previous_agent and previous_agent != state.agent_file:
            (self.work_dir / previous_agent).unlink(missing_ok=True)
        self._last_checkpoint_steps = state.env_steps
        self._saved_count = len(self.replay)

    # -- display -------------------------------------------------------------------------------

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.max_env_steps, initial=min(self.state.env_steps, self.max_env_steps),
                    unit="env step", desc=f"train TIA {self.venv.task}", dynamic_ncols=True)

    def _show_status(self, bar):
        postfix = {"episodes": self.state.episodes, "updates": self.state.updates}
        if self.state.evaluations:
            postfix["eval return"] = f"{Evaluation(**self.state.evaluations[-1]).mean_return:.1f}"
        if self.metrics:
            postfix.update({name: f"{value:.3g}" for name, value in self.metrics[-1].items()
                            if name not in ("env_steps", "updates")})
        bar.set_postfix(postfix, refresh=False)


# -- replay chunks -------------------------------------------------------------------------------


def _chunk_name(first):
    return f"episodes-{first:07d}.npz"


def _chunk_files(folder):
    return sorted(Path(folder).glob("episodes-*.npz"))


def save_replay_chunk(replay, folder, saved):
    """Write the replay's episodes ``saved ..`` as one chunk file (atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if saved >= len(replay):
        return
    chunk = EpisodeReplay(replay.action_dim, image_shape=replay.image_shape)
    for index in range(saved, len(replay)):
        chunk.add_episode(replay.episode(index), **replay.episode_info(index))
    chunk.save(folder / _chunk_name(saved))


def load_replay_chunks(folder, action_dim, num_episodes):
    """The replay of the first ``num_episodes`` episodes stored in the chunk files of ``folder``.

    Chunks written after the last committed checkpoint (a run that died while checkpointing) are
    ignored and removed.
    """
    replay = EpisodeReplay(action_dim)
    for path in _chunk_files(folder):
        first = int(path.stem.split("-")[1])
        if first >= num_episodes:
            path.unlink()
            continue
        if first != len(replay):
            raise CheckpointError(f"the replay chunks in {folder} have a gap before {path.name}; "
                                  f"delete {Path(folder).parent} to restart the training run")
        chunk = EpisodeReplay.load(path)
        for index in range(min(len(chunk), num_episodes - first)):
            replay.add_episode(chunk.episode(index), **chunk.episode_info(index))
    if len(replay) != num_episodes:
        raise CheckpointError(f"{folder} holds {len(replay)} episodes but the checkpoint needs "
                              f"{num_episodes}; delete {Path(folder).parent} to restart the run")
    return replay
