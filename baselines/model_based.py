"""What the latent-model baselines (Offline DV2, LOMPO) share around their agents: the run's
samplers and batch streams and how they are checkpointed, reading an agent's state back from a run
folder, and the analysis hook (the uncertainty of the ensemble at dataset states,
:mod:`baselines.uncertainty`)."""

from pathlib import Path

import numpy as np
import torch

from lqv_d4rl.batch_stream import BatchStream, sampler_position, set_sampler_position
from lqv_d4rl.runs import load_checkpoint_file, rng_state, set_rng_state
from lqv_d4rl.samplers import make_sequence_sampler

RESUMABLE_FIELDS = ("policy_steps", "log_every", "checkpoint_every", "eval_episodes",
                    "eval_max_steps")
"""Config fields a resumed run may change: the length of its last phase and how it is logged,
checkpointed and evaluated."""


class RunBatches:
    """The uniform sequence samplers of a run, one per use (e.g. ``("model", "policy")``), and their
    batch streams (:class:`lqv_d4rl.batch_stream.BatchStream`: drawn ahead of the computation, or
    gathered on the GPU when the dataset fits there), one stream open at a time.

    :meth:`state` is each sampler's position after the last batch training consumed, so that a
    checkpoint resumes to the same batches. ``keys`` narrows the step keys of the batches (e.g.
    :data:`lqv_d4rl.observations.STATE_SEQUENCE_KEYS`: a state model never reads a frame).
    """

    def __init__(self, dataset, config, seed, device, uses=("model", "policy"), keys=None):
        seeds = np.random.SeedSequence(seed).generate_state(len(uses))
        self.samplers = {use: make_sequence_sampler(dataset, "random", batch_size=config.batch_size,
                                                    seq_len=config.seq_len, seed=int(value),
                                                    keys=keys)
                         for use, value in zip(uses, seeds)}
        self.positions = {use: sampler_position(sampler) for use, sampler in self.samplers.items()}
        self.device = device
        self.streams = {}

    def next(self, use):
        """The next batch of the sampler ``use`` (tensors on the device)."""
        if use not in self.streams:
            self.close()  # one stream at a time: one background thread, one dataset copy on a GPU
            self.streams[use] = BatchStream(self.samplers[use], self.device)
        return self.streams[use].next()

    def state(self):
        """``{use: position after the last consumed batch}``, checkpoint-safe."""
        for use, stream in self.streams.items():
            self.positions[use] = stream.state()
        return dict(self.positions)

    def restore(self, positions):
        """Put every sampler back where :meth:`state` found it."""
        for use, sampler in self.samplers.items():
            set_sampler_position(sampler, positions[use])
            self.positions[use] = positions[use]

    def close(self):
        """Stop the open stream, keeping its consumed position."""
        self.state()
        for stream in self.streams.values():
            stream.close()
        self.streams = {}


def checkpoint_state(agent, batches):
    """The checkpoint of a run: the agent's state, the samplers' consumed positions and the global
    torch RNG."""
    return {"agent": agent.state_dict(), "samplers": batches.state(), "rng": rng_state()}


def restore(state, agent, batches):
    """Load what :func:`checkpoint_state` saved into ``agent``, ``batches`` and the torch RNG."""
    agent.load_state_dict(state["agent"])
    batches.restore(state["samplers"])
    set_rng_state(state["rng"])


def agent_state(run_dir, version):
    """The agent's state in the checkpoint of ``run_dir`` (read on the CPU with ``weights_only``);
    a clear error when there is none or it was written by another checkpoint ``version``."""
    state = load_checkpoint_file(run_dir)
    if state is None:
        raise FileNotFoundError(f"{Path(run_dir) / 'checkpoint.pt'} does not exist: train the run "
                                "first")
    state = state["agent"]
    if state.get("version") != version:
        raise ValueError(f"the checkpoint in {run_dir} has version {state.get('version')!r}, not "
                         f"{version}: it was written by another version of this algorithm")
    return state


def detached(metrics):
    """Metric values as detached float tensors (not Python floats: converting every update would
    wait for the GPU every time)."""
    return {key: torch.as_tensor(value).detach().float() for key, value in metrics.items()}


def analyse(run_dir, dataset, out_dir, device="cpu"):
    """The algorithms' ``analyse`` hook: the uncertainty of the run's ensemble at random dataset
    states (the paper's Fig. 7 for this one model), a table and a figure in ``out_dir``; returns
    ``{name: path}``."""
    from .uncertainty import compare_uncertainty

    return compare_uncertainty([run_dir], dataset, out_dir, device=device)
