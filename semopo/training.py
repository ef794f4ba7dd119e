"""Training SeMOPO in a run folder: ``model_steps`` world-model updates, then ``policy_steps``
actor-critic updates, with metrics, checkpoints and resume from :class:`lqv_d4rl.runs.Run`.

The platform calls :func:`train_in_run` (``lqv-d4rl train semopo ...``); :func:`train` is the short
form for Python::

    agent = semopo.train(data, semopo.preset("smoke"), seed=0, log_dir="runs/demo")

A checkpoint holds the agent, both samplers' positions and random states, and the global torch RNG,
so that a run stopped at any update and resumed gives the same agent as an uninterrupted one on CPU.
"""

import shutil
import tempfile

import numpy as np
import torch

from lqv_d4rl.batch_stream import BatchStream, sampler_position, set_sampler_position
from lqv_d4rl.observations import sequence_keys, state_size
from lqv_d4rl.runs import Run, rng_state, set_rng_state
from lqv_d4rl.samplers import make_sequence_sampler

from .agent import SeMOPOAgent
from .config import ConfigError, SeMOPOConfig

CURRICULUM_MODES = ("conservative", "conservative_literal", "conservative_policy",
                    "return_curriculum")


def train_in_run(dataset, config, run, device="cpu"):
    """Train (or finish training) SeMOPO on ``dataset`` in ``run``; returns the agent.

    This is ``ALGORITHM.train``: the run folder gives the seed, the log and the checkpoint.
    """
    trainer = _Trainer(dataset, config, run, device)
    trainer.restore()
    agent = trainer.agent
    try:
        model_done = run.phase(
            "model", total=config.model_steps, done=lambda: agent.model_updates,
            update=lambda: agent.train_model_step(trainer.next_batch("model")),
            checkpoint=trainer.save, log_every=config.log_every,
            checkpoint_every=config.checkpoint_every, description="world model",
            postfix=("model_loss", f"{config.observation}_log_prob"))
        if model_done:
            run.phase(
                "policy", total=config.policy_steps, done=lambda: agent.policy_updates,
                update=lambda: agent.train_policy_step(trainer.next_batch("policy")),
                checkpoint=trainer.save, log_every=config.log_every,
                checkpoint_every=config.checkpoint_every, description="policy",
                postfix=("imagined_return", "penalty"))
    finally:
        trainer.close()
    return agent


def train(dataset, config=None, *, device="cpu", seed=0, log_dir=None, resume=False,
          progress=False, root=None, stop_after=None):
    """Train SeMOPO on ``dataset`` and return the :class:`SeMOPOAgent` (Python short form).

    Args:
        dataset: a ``lqv_d4rl.Dataset``, or a dataset id / folder for ``lqv_d4rl.load_dataset``.
        config: a :class:`SeMOPOConfig` (default: the paper's settings).
        device: torch device for the networks (``"cuda"`` for full-size runs).
        seed: seeds parameter initialization, the samplers, the ensemble-head draws and latent samples.
        log_dir: the run folder (``config.json``, ``metrics.csv``, ``checkpoint.pt``); None trains in
            a temporary folder that is removed afterwards.
        resume: continue the run in ``log_dir`` from its checkpoint.
        progress: show tqdm progress bars.
        root: dataset root used when ``dataset`` is an id.
        stop_after: stop after this many updates (both phases counted), checkpointed; continue
            with ``resume=True``.
    """
    from lqv_d4rl.dataset import load_dataset

    from .algorithm import ALGORITHM

    config = config or SeMOPOConfig()
    if not hasattr(dataset, "episode_lengths"):
        dataset = load_dataset(dataset, root=root)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    folder = log_dir if log_dir is not None else tempfile.mkdtemp(prefix="semopo-run-")
    try:
        run = Run.open(folder, ALGORITHM, config, dataset, seed=seed, device=device, resume=resume,
                       stop_after=stop_after, progress=progress)
        try:
            return train_in_run(dataset, config, run, device)
        finally:
            run.close()
    finally:
        if log_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def make_sampler(dataset, mode, config, seed, *, frozen_step=None, **options):
    """A sequence sampler of ``mode`` with the config's batch shape and curriculum settings
    (``options`` such as ``recycle`` go to ``lqv_d4rl.samplers.make_sequence_sampler``)."""
    if mode == "conservative":
        options.update(order=config.conservative_order,
                       initial_trajectories=config.conservative_initial,
                       curriculum_steps=config.effective_curriculum_steps)
    elif mode == "conservative_literal":
        options["pace"] = config.conservative_pace
    elif mode == "conservative_policy":
        options["curriculum_steps"] = config.effective_curriculum_steps
    elif mode == "return_curriculum":
        options.update(curriculum_steps=config.effective_curriculum_steps,
                       replicate_off_by_one=config.replicate_off_by_one,
                       unique_returns=config.unique_returns)
    if mode in CURRICULUM_MODES:
        options["frozen_step"] = frozen_step
    options.setdefault("keys", sequence_keys(config.observation))
    return make_sequence_sampler(dataset, mode, batch_size=config.batch_size,
                                 seq_len=config.seq_len, seed=int(seed), **options)


class _Trainer:
    """The agent, the samplers of its two phases and their batch streams, and their checkpoint.

    Batches come through a :class:`lqv_d4rl.batch_stream.BatchStream` (drawn ahead of the
    computation, or gathered on the GPU); the checkpoint records each sampler's position after the
    last batch training consumed, so a resumed run sees the same batches.
    """

    PHASES = ("model", "policy")

    def __init__(self, dataset, config, run, device):
        self.run, self.config, self.device = run, config, device
        state_dim = state_size(dataset, config.observation)  # fails clearly without states
        torch.manual_seed(run.seed)
        self.agent = SeMOPOAgent(dataset.action_dim, config, task=dataset.task, device=device,
                                 seed=run.seed, state_dim=state_dim)
        model_seed, policy_seed = np.random.SeedSequence(run.seed).generate_state(2)
        self.samplers = {
            "model": make_sampler(dataset, config.sampling, config, model_seed),
            # the policy phase's start states: a curriculum stays where the model phase left it
            "policy": make_sampler(dataset, config.policy_sampling, config, policy_seed,
                                   frozen_step=config.model_steps),
        }
        self.positions = {phase: sampler_position(self.samplers[phase]) for phase in self.PHASES}
        self.streams = {}

    def next_batch(self, phase):
        """The next training batch of ``phase`` (its stream starts on first use)."""
        if phase not in self.streams:
            self.close()  # one phase at a time: one background thread, one copy on the GPU
            self.streams[phase] = BatchStream(self.samplers[phase], self.device)
        return self.streams[phase].next()

    def save(self):
        """Checkpoint the agent, the samplers' consumed positions and the global torch RNG."""
        for phase, stream in self.streams.items():
            self.positions[phase] = stream.state()
        self.run.save_checkpoint({"agent": self.agent.state_dict(), "samplers": self.positions,
                                  "rng": rng_state()})

    def restore(self):
        """Continue from the run's checkpoint, if it has one."""
        state = self.run.load_checkpoint()
        if state is None:
            return
        self.agent.load_state_dict(state["agent"])
        for phase in self.PHASES:
            set_sampler_position(self.samplers[phase], state["samplers"][phase])
            self.positions[phase] = state["samplers"][phase]
        set_rng_state(state["rng"])
        if self.agent.policy_updates:
            self.run.truncate_metrics("policy", self.agent.policy_updates)
        else:
            self.run.truncate_metrics("model", self.agent.model_updates)

    def close(self):
        """Stop the batch streams, keeping their consumed positions."""
        for phase, stream in self.streams.items():
            self.positions[phase] = stream.state()
            stream.close()
        self.streams = {}
