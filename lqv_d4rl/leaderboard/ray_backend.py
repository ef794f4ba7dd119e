"""The Ray backend: each run is a Ray task with a fraction of a GPU, on an existing cluster.

Install the extra (``pip install 'lqv-d4rl[ray]'``), start a cluster (``ray start --head`` on one
machine, ``ray start --address HEAD:6379`` on the others) and pass ``--backend ray --ray-address
HEAD:6379`` (without an address a local Ray instance is started). A run asks for
``1 / runs_per_gpu`` GPU where the cluster has GPUs, else ``threads_per_run`` CPUs.

Where the workers write: if a worker sees the driver's output folder (the same machine, or a shared
file system, recognised by a token file the driver writes there), the run works in its folder in
place, and an interrupted run resumes from its checkpoint. Otherwise the run works in a scratch
folder on the worker, and when it ends the worker sends every file of the run folder back and the
driver writes them to ``<out>/runs/<method>/<dataset>/seed<k>/``: the same layout either way. Each
worker needs the datasets under the same ``--root`` (or ``--download`` to fetch them there).
"""

import dataclasses
import os
import tempfile
import uuid
from pathlib import Path

from ..errors import LQVError
from ..runs import EVAL_NAME
from .runner import Outcome, execute_run, record_error

TOKEN_NAME = ".leaderboard-token"


class RayNotInstalledError(LQVError, ImportError):
    """``--backend ray`` without the ``ray`` package."""


def import_ray():
    """``ray``, or a :class:`RayNotInstalledError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError("--backend ray needs the 'ray' package: pip install "
                                   "'lqv-d4rl[ray]' (or use --backend local)") from None
    return ray


def write_token(out):
    """The token that tells a worker it sees the driver's output folder (written once per folder)."""
    path = Path(out) / TOKEN_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex)
    return path.read_text().strip()


def run_on_ray(tasks, out, *, address=None, runs_per_gpu=1, threads_per_run=1, ship="auto",
               on_outcome=None):
    """Run every task as a Ray task; returns their outcomes in the order of ``tasks``.

    ``ship``: ``auto`` (work in place where the worker sees ``out``), ``always`` (always work in a
    scratch folder and send the files back; what a cluster without a shared file system does).
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    token = write_token(out)
    gpus = ray.cluster_resources().get("GPU", 0)
    options = {"num_cpus": threads_per_run or 1}
    if gpus:
        options["num_gpus"] = 1.0 / runs_per_gpu
    remote = ray.remote(max_retries=0)(_ray_run).options(**options)
    pending = {remote.remote(task, token, str(out), ship): index for index, task in enumerate(tasks)}
    outcomes = [None] * len(tasks)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        task = tasks[index]
        try:
            outcome, files = ray.get(ready[0])
        except Exception as err:  # noqa: BLE001  (a worker that died: recorded, the others go on)
            message = f"the Ray task failed: {_last_error_line(err)}"
            outcome, files = Outcome(task, "failed", error=message), None
            record_error(task.folder, None, message)
        if files:
            _write_files(Path(task.folder), files)
        outcome = dataclasses.replace(outcome, task=task)
        outcomes[index] = outcome
        if on_outcome:
            on_outcome(outcome)
    return outcomes


def _last_error_line(err):
    """The line of a Ray error that names the exception (Ray puts it last, after the traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()
             and not line.strip().startswith("^")]
    return lines[-1] if lines else type(err).__name__


def _ray_run(task, token, out, ship):
    """A Ray task: one run, in place or in a scratch folder whose files are sent back."""
    import ray

    device = "cuda" if ray.get_gpu_ids() else "cpu"
    if ship == "auto" and _sees(out, token):
        return execute_run(task, device), None
    scratch = Path(tempfile.gettempdir()) / "lqv-leaderboard" / token / \
        Path(task.folder).relative_to(out)
    outcome = execute_run(dataclasses.replace(task, folder=str(scratch)), device)
    return outcome, _read_files(scratch)


def _sees(out, token):
    try:
        return (Path(out) / TOKEN_NAME).read_text().strip() == token
    except OSError:
        return False


def _read_files(folder):
    """``{relative path: bytes}`` of every file of a run folder but its lock."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith(".leaderboard")}


def _write_files(folder, files):
    """Write a run's files into ``folder``, ``eval.json`` last (it marks the run finished)."""
    for name, data in sorted(files.items(), key=lambda item: item[0] == EVAL_NAME):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
