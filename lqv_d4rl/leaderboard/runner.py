"""Running the grid: one run folder per (method, dataset, seed), each run in its own process.

A run goes through :func:`lqv_d4rl.experiment.run_experiment` with ``resume=True``: a finished run
(``eval.json`` present) is skipped, an unfinished one continues from its last checkpoint, a new one
starts. A run that raises is recorded in ``error.json`` in its folder (type, message, traceback) and
the others go on; the next start of the leaderboard tries it again. Every write in a run folder is
atomic and each run holds an exclusive lock on its folder while it works, so the runner can be
killed at any moment (workers die with it) and started again: it loses at most the updates since
each unfinished run's last checkpoint, and no finished run.

Backends:

* ``local`` (:class:`LocalScheduler`): worker processes on this machine. With GPUs, ``runs_per_gpu``
  runs share each visible GPU (small models leave a big GPU mostly idle) and runs are spread over
  all of them; each worker sees only its GPU (``CUDA_VISIBLE_DEVICES``). On a CPU-only machine
  ``workers`` runs (default: cores / ``threads_per_run``) go at once.
* ``inline``: one run after another in this process (for debugging; no isolation).
* ``ray``: see :mod:`lqv_d4rl.leaderboard.ray_backend`.
"""

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..runs import EVAL_NAME, is_finished
from .grid import RunSpec

ERROR_NAME = "error.json"
LOG_NAME = "leaderboard.log"
LOCK_NAME = ".leaderboard.lock"
BACKENDS = ("local", "ray", "inline")


@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs to do one run (picklable)."""

    spec: RunSpec
    """Which run: method, dataset, seed."""
    folder: str
    preset: str
    root: str | None = None
    eval_episodes: int | None = None
    eval_workers: int = 1
    rgb_background: bool = False
    video_dir: str | None = None
    analyse: bool = False
    threads: int | None = 1
    """torch CPU threads of the run (None: torch's default). A fixed count keeps CPU results
    identical however many runs share the machine."""
    algorithm: object = None
    """The :class:`lqv_d4rl.algorithms.Algorithm` when it was registered at run time (a worker
    process cannot find it by name); None for installed algorithms."""

    @property
    def label(self):
        """``method dataset seedK``."""
        return self.spec.label


@dataclass
class Outcome:
    """What became of one run: ``status`` is ``finished``, ``skipped`` (finished earlier),
    ``failed`` (``error`` holds the message) or ``busy`` (another process holds its folder)."""

    task: RunTask
    status: str
    seconds: float = 0.0
    error: str | None = None
    normalized_score: float | None = None


# ---------------------------------------------------------------------------------- one run


def execute_run(task, device="cpu"):
    """Do one run in ``task.folder`` on ``device`` (train or resume, evaluate); returns its
    :class:`Outcome`. Exceptions of the run are recorded in ``error.json``, not raised."""
    folder = Path(task.folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with folder_lock(folder) as locked:
        if not locked:
            return Outcome(task, "busy", error=f"another process is running {folder}")
        if is_finished(folder):
            return Outcome(task, "skipped", normalized_score=_score(folder))
        (folder / ERROR_NAME).unlink(missing_ok=True)
        try:
            _train_and_evaluate(task, device)
        except (KeyboardInterrupt, SystemExit):
            raise  # stopped from outside: the run is unfinished, not failed
        except BaseException as err:  # noqa: BLE001  (recorded, then the next run goes on)
            message = record_error(folder, err)
            return Outcome(task, "failed", time.perf_counter() - started, error=message)
    return Outcome(task, "finished", time.perf_counter() - started, normalized_score=_score(folder))


def _train_and_evaluate(task, device):
    import torch

    from .. import algorithms
    from ..experiment import run_experiment

    if task.threads is not None:
        torch.set_num_threads(task.threads)
    spec = task.spec
    if task.algorithm is not None and spec.method not in algorithms.names():
        algorithms.register(spec.method, task.algorithm)
    with open(Path(task.folder) / LOG_NAME, "a") as log:
        def echo(message):
            print(message, file=log, flush=True)

        echo(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {task.label} on {device} (pid {os.getpid()})")
        result = run_experiment(
            spec.method, spec.dataset, preset=task.preset, out=task.folder, seed=spec.seed,
            device=device, root=task.root, resume=True, eval_episodes=task.eval_episodes,
            eval_workers=task.eval_workers, rgb_background=task.rgb_background,
            video_dir=task.video_dir, analyse=task.analyse, progress=False, echo=echo)
    if result is None:
        raise RuntimeError("training stopped before it finished")


def record_error(folder, err, message=None):
    """Write ``error.json`` (type, one-line message, traceback, time) in run folder ``folder``;
    returns the message."""
    message = message or f"{type(err).__name__}: {err}".strip().splitlines()[0]
    record = {"type": type(err).__name__ if err is not None else "WorkerDied", "message": message,
              "traceback": "".join(traceback.format_exception(err)) if err is not None else "",
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / ERROR_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return message


def _score(folder):
    try:
        return float(json.loads((Path(folder) / EVAL_NAME).read_text())["normalized_score_table1"])
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def folder_lock(folder):
    """Hold an exclusive ``flock`` on ``<folder>/.leaderboard.lock``; yields False (at once) when
    another process holds it. The kernel releases it when the holder dies, however it dies."""
    handle = open(Path(folder) / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


# ---------------------------------------------------------------------------------- scheduling


def device_slots(device, runs_per_gpu, workers=None, threads_per_run=1):
    """The device of each worker slot.

    ``device`` ``cpu``: ``workers`` slots (default: CPU cores / ``threads_per_run``, at least 1).
    ``cuda``: ``runs_per_gpu`` slots on every visible GPU, interleaved so that the first runs
    spread over all GPUs. ``cuda:N``: ``runs_per_gpu`` slots on GPU N.
    """
    if device == "cpu":
        count = workers or max(1, (os.cpu_count() or 1) // max(1, threads_per_run or 1))
        return ["cpu"] * count
    import torch

    if device == "cuda":
        gpus = [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    else:
        gpus = [device]
    return [gpu for _ in range(runs_per_gpu) for gpu in gpus]


class LocalScheduler:
    """Runs tasks in worker processes, one process per run, at most one run per slot at a time."""

    def __init__(self, slots, *, on_outcome=None, poll_seconds=0.5):
        self.slots = list(slots)
        self.on_outcome = on_outcome or (lambda outcome: None)
        self.poll_seconds = poll_seconds

    def run(self, tasks):
        """Run every task; returns their outcomes in the order of ``tasks``."""
        import multiprocessing
        from multiprocessing.connection import wait

        context = multiprocessing.get_context("spawn")  # torch, CUDA and MuJoCo are not fork-safe
        pending = list(enumerate(tasks))
        free = list(range(len(self.slots)))
        running = {}  # sentinel -> (process, index, task, slot, started)
        outcomes = [None] * len(tasks)
        try:
            while pending or running:
                while pending and free:
                    index, task = pending.pop(0)
                    slot = free.pop(0)
                    process = context.Process(target=_worker_main,
                                              args=(task, self.slots[slot], os.getpid()),
                                              name=f"lqv-leaderboard {task.label}")
                    with only_gpu(self.slots[slot]):
                        process.start()
                    running[process.sentinel] = (process, index, task, slot, time.perf_counter())
                for sentinel in wait(list(running), timeout=self.poll_seconds):
                    process, index, task, slot, started = running.pop(sentinel)
                    process.join()
                    free.append(slot)
                    outcomes[index] = _outcome_of_process(task, process.exitcode,
                                                          time.perf_counter() - started)
                    self.on_outcome(outcomes[index])
        finally:
            for process, *_ in running.values():
                process.terminate()
            for process, *_ in running.values():
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
        return outcomes


@contextlib.contextmanager
def only_gpu(device):
    """While a worker for ``device`` (``cuda:N``) starts, ``CUDA_VISIBLE_DEVICES`` names only GPU N
    (a spawned process copies the environment when it starts, before anything can touch CUDA)."""
    if not device.startswith("cuda:"):
        yield
        return
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    index = int(device.split(":", 1)[1])
    visible = saved.split(",") if saved else None  # N counts the GPUs this process sees
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _worker_main(task, device, runner_pid):
    """Entry point of a worker process: die with the runner, log to the run folder, and exit 0
    (finished or skipped), 1 (failed, in error.json) or 3 (busy). A ``cuda:N`` slot's worker sees
    only that GPU (:func:`only_gpu`), as ``cuda``."""
    _die_with_parent(runner_pid)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if device.startswith("cuda"):
        device = "cuda"
    Path(task.folder).mkdir(parents=True, exist_ok=True)
    with open(Path(task.folder) / LOG_NAME, "a") as log:
        os.dup2(log.fileno(), 1)  # also what C libraries (MuJoCo, EGL) print
        os.dup2(log.fileno(), 2)
        outcome = execute_run(task, device)
    sys.exit({"finished": 0, "skipped": 0, "failed": 1, "busy": 3}[outcome.status])


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _die_with_parent(runner_pid):
    """Ask Linux to SIGTERM this process when the runner that started it dies (even by SIGKILL);
    elsewhere workers outlive a killed runner, and the folder lock keeps a restart from running
    their runs twice."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != runner_pid:  # the runner died before prctl took effect
        os._exit(128 + signal.SIGTERM)


def _outcome_of_process(task, exitcode, seconds):
    folder = Path(task.folder)
    if exitcode == 0:
        status = "finished" if is_finished(folder) else "failed"
        if status == "finished":
            return Outcome(task, status, seconds, normalized_score=_score(folder))
        return Outcome(task, "failed", seconds, error=record_error(
            folder, None, "the worker exited without writing eval.json"))
    if exitcode == 3:
        return Outcome(task, "busy", seconds, error=f"another process is running {folder}")
    if exitcode == 1 and (folder / ERROR_NAME).exists():
        return Outcome(task, "failed", seconds, error=read_error(folder)["message"])
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else exitcode
        why = " (out of memory?)" if exitcode == -signal.SIGKILL else ""
        message = f"the worker process was killed by {name}{why}"
    else:
        message = f"the worker process exited with code {exitcode}"
    return Outcome(task, "failed", seconds, error=record_error(folder, None, message))


def read_error(folder):
    """The ``error.json`` of a run folder, or None."""
    try:
        return json.loads((Path(folder) / ERROR_NAME).read_text())
    except (OSError, ValueError):
        return None


def run_inline(tasks, device="cpu", on_outcome=None):
    """Run every task here, one after another; returns their outcomes."""
    outcomes = []
    for task in tasks:
        outcomes.append(execute_run(task, device))
        if on_outcome:
            on_outcome(outcomes[-1])
    return outcomes
