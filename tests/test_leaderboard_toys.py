"""A real but trivial learner for the leaderboard's scheduling tests: behaviour cloning of the mean
action.

``mean_bc`` learns one action vector by minibatch SGD on the squared error to the dataset's actions
(the mean action minimizes it) and plays it whatever it sees. It goes through the whole platform
contract (config with documented fields, presets, ``run.phase``, checkpoints with RNG state, resume,
a picklable policy), in seconds. Two switches serve the runner's tests: ``fail_at`` raises at an
update (a failing run) and ``update_seconds`` slows every update (a run long enough to be killed
in the middle). This module holds no tests; test_leaderboard*.py import it, and worker processes
import it again by name.
"""

import contextlib
import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from lqv_d4rl import algorithms
from lqv_d4rl.algorithms import Algorithm, ConfigError

DATASET = "walker_walk-medrep"
FAST_REPS = {"aggregate": 500, "improvement": 200, "profile": 200}
"""Bootstrap replicates for tests (the defaults take a few seconds more)."""


@dataclass
class MeanBCConfig:
    """Behaviour cloning of the mean action (a test learner)."""

    updates: int = 30
    """SGD updates (a test value)."""
    batch_size: int = 8
    """Actions per minibatch (a test value)."""
    lr: float = 0.2
    """SGD step size (a test value)."""
    eval_episodes: int = 1
    """Evaluation episodes (a test value)."""
    eval_max_steps: int | None = 3
    """Agent steps per evaluation episode (a test value: short episodes keep tests fast)."""
    log_every: int = 10
    """Updates between metric rows (platform convention)."""
    checkpoint_every: int = 10
    """Updates between checkpoints (platform convention)."""
    fail_at: int | None = None
    """Raise RuntimeError at this update (tests of failed runs)."""
    update_seconds: float = 0.0
    """Sleep this long in every update (tests that kill a run in the middle)."""

    def __post_init__(self):
        if self.updates < 1:
            raise ConfigError(f"updates must be at least 1, got {self.updates}")


PRESETS = {"paper": {"updates": 60}, "smoke": {}}


def session_starts(run_dir):
    """The update each training session of the run in ``run_dir`` started from (0, then where
    each resume picked up)."""
    from lqv_d4rl.runs import read_metrics

    return [int(row["value"]) for row in read_metrics(run_dir) if row["metric"] == "session_start"]


def dataset_actions(dataset):
    """The actions that behaviour policies took (entry 0 of an episode holds no action)."""
    return np.asarray(dataset.actions)[~np.asarray(dataset.is_first)]


def train(dataset, config, run, device):
    """Fit the mean action by SGD on minibatches drawn with the run's seed; resumable."""
    import torch

    from lqv_d4rl.runs import rng_state, set_rng_state

    actions = torch.as_tensor(dataset_actions(dataset), dtype=torch.float32)
    rng = np.random.default_rng(run.seed)
    mean = torch.zeros(actions.shape[1], requires_grad=True)
    optimizer = torch.optim.SGD([mean], lr=config.lr)
    state = {"step": 0}
    saved = run.load_checkpoint()
    if saved is not None:
        with torch.no_grad():
            mean.copy_(saved["mean"])
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"], [rng])
        state["step"] = int(saved["step"])
        run.truncate_metrics("bc", state["step"])
    run.log("bc", state["step"], {"session_start": state["step"]})  # tests see where it resumed

    def update():
        if config.fail_at is not None and state["step"] + 1 >= config.fail_at:
            raise RuntimeError(f"mean_bc failed on purpose at update {state['step'] + 1}")
        if config.update_seconds:
            time.sleep(config.update_seconds)
        batch = actions[torch.as_tensor(rng.integers(0, len(actions), config.batch_size))]
        loss = ((mean - batch) ** 2).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state["step"] += 1
        return {"loss": loss.detach()}

    def checkpoint():
        run.save_checkpoint({"mean": mean.detach().clone(), "optimizer": optimizer.state_dict(),
                             "rng": rng_state([rng]), "step": state["step"]})

    run.phase("bc", total=config.updates, done=lambda: state["step"], update=update,
              checkpoint=checkpoint, log_every=config.log_every,
              checkpoint_every=config.checkpoint_every)


class MeanActionPolicy:
    """Plays the learnt mean action, clipped to [-1, 1]."""

    def __init__(self, mean):
        self.mean = np.clip(np.asarray(mean, dtype=np.float32), -1.0, 1.0)

    def reset(self):
        """Nothing to reset."""

    def __call__(self, observation):
        return self.mean.copy()


def load(run_dir, device="cpu"):
    """The policy of the run in ``run_dir``."""
    from lqv_d4rl.runs import load_checkpoint_file

    return MeanActionPolicy(load_checkpoint_file(run_dir)["mean"].numpy())


ALGORITHM = Algorithm(name="mean_bc", config_class=MeanBCConfig, presets=PRESETS, train=train,
                      load=load, summary="Behaviour cloning of the mean action (a test learner).")


def variant(name, **smoke):
    """The same learner under another name, with its smoke preset changed."""
    return dataclasses.replace(ALGORITHM, name=name, presets={**PRESETS, "smoke": smoke})


@contextlib.contextmanager
def registered(*learners):
    """Register ``learners`` (:class:`Algorithm` s) for the duration of the block."""
    for learner in learners:
        algorithms.register(learner.name, learner)
    try:
        yield
    finally:
        for learner in learners:
            algorithms.unregister(learner.name)
