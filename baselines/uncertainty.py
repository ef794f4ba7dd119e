"""How uncertain each model-based method's ensemble is at states of the dataset: the paper's Fig. 7/8
comparison of Offline DV2, LOMPO and SeMOPO (endogenous and exogenous branch), from trained runs.

::

    lqv-d4rl uncertainty runs/offline_dv2/walker runs/lompo/walker runs/semopo/walker --out cmp/

or in Python ``compare_uncertainty([run, ...], dataset, "cmp/")``.

The states: ``states`` (1,000) windows of ``context`` entries drawn uniformly from the dataset
(``random`` sequence sampler, seeded); each window is filtered by the run's posterior from the zero
state and its LAST posterior state is scored, so every state has seen ``context`` - 1 earlier
observations. All runs are scored on the same windows and under the same torch seed.

Two measures of how much the K prior heads of a branch disagree about a state s_t (their
predictions are read off the state's GRU state, which all heads share):

``md``  mean disagreement, ``mean_k || p_k - mean_j p_j ||``: p_k are head k's class probabilities
        (categorical latents: Offline DV2, SeMOPO) or means (Gaussian latents: LOMPO). Offline
        DV2's ``meandis`` penalty; LOMPO's ``mean`` penalty option.
``vlp`` the spread of the log-likelihoods, ``std_k log p_k(z_t)``, of the state's own latent sample
        z_t under each head: LOMPO's penalty (a standard deviation, as LOMPO computes it; the paper's
        name says variance: square it for that).

Runs trained on the dataset's stored states (``observation="state"``) are scored the same way, at
the same windows, their posteriors filtered from the states instead of the frames; their labels
end in ``[state]`` (``SeMOPO endogenous [state]``, ...) and the summary's ``observation`` column
says so.

The two measures are on different scales (``vlp`` grows with the latent's size), so each has its own
panel and column. Files written: ``state_uncertainty.csv`` (one row per run, branch, measure and
state), ``state_uncertainty_summary.csv`` / ``.md`` (mean, std, quartiles) and
``state_uncertainty.png`` (box plots).
"""

import csv
import importlib
from pathlib import Path

import numpy as np
import torch

from lqv_d4rl.errors import LQVError
from lqv_d4rl.networks import state_disagreement
from lqv_d4rl.observations import STATE_SEQUENCE_KEYS
from lqv_d4rl.runs import dataset_fingerprint, read_run_config
from lqv_d4rl.samplers import make_sequence_sampler

MEASURES = {"md": "semopo_code", "vlp": "lompo"}
"""Measure name -> the core's disagreement kind (:func:`lqv_d4rl.networks.state_disagreement`)."""

MEASURE_LABELS = {"md": "mean disagreement md = mean_k ||p_k - mean p||",
                  "vlp": "log-likelihood spread vlp = std_k log p_k(z)"}

AGENTS = {
    "semopo": ("semopo.agent", "SeMOPOAgent", "SeMOPO"),
    "offline_dv2": ("baselines.offline_dv2", "OfflineDV2Agent", "Offline DV2"),
    "lompo": ("baselines.lompo", "LOMPOAgent", "LOMPO"),
}
"""Algorithm name -> (module, agent class with ``load(run_dir, device)``, display name)."""

STATES = 1000
"""Dataset states scored by default (the paper's Fig. 7: 1,000)."""
CONTEXT = 16
"""Default window length: entries filtered up to and including each scored state."""
CHUNK = 50
"""Windows filtered per forward pass."""


class UncertaintyError(LQVError, ValueError):
    """Runs that cannot be compared (another algorithm, another dataset)."""


def model_branches(run_dir, device="cpu"):
    """``(algorithm name, [(branch label, rssm, observe function), ...])`` of a trained run of one of
    the :data:`AGENTS`: one branch, or SeMOPO's endogenous and exogenous ones (labels of a run
    trained on states end in ``[state]``)."""
    algorithm = read_run_config(run_dir)["algorithm"]
    module, class_name, display = AGENTS[algorithm]
    agent = getattr(importlib.import_module(module), class_name).load(run_dir, device=device)
    model = agent.world_model
    mark = " [state]" if run_observation(run_dir) == "state" else ""
    if not getattr(model, "separated", False):
        suffix = " (joint)" if algorithm == "semopo" else ""
        return algorithm, [(display + suffix + mark, model.rssm, model.observe)]
    return algorithm, [(f"{display} endogenous{mark}", model.rssm, model.observe),
                       (f"{display} exogenous{mark}", model.exo_rssm, model.observe_exogenous)]


def run_observation(run_dir):
    """What the run's world model observed: ``"image"`` or ``"state"`` (its config's
    ``observation``)."""
    return read_run_config(run_dir)["config"].get("observation", "image")


def state_windows(dataset, states, context, seed=0, keys=None):
    """The batches of windows whose last states are scored: ``states`` windows of ``context``
    entries, in chunks of :data:`CHUNK`, the same for the same arguments (``keys``: the step keys
    to gather, default all; the windows do not depend on them)."""
    sampler = make_sequence_sampler(dataset, "random", batch_size=CHUNK, seq_len=context,
                                    seed=seed, recycle=False, keys=keys)
    batches, left = [], states
    while left > 0:
        batch = sampler.sample()
        batches.append({key: value[:left] for key, value in batch.items()})
        left -= len(batch["action"])
    return batches


@torch.no_grad()
def branch_uncertainty(rssm, observe, batches, seed=0):
    """``{measure: (N,) numpy array}`` of the branch's heads at the last state of every window."""
    values = {measure: [] for measure in MEASURES}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in batches:
            post, _ = observe(batch)
            last = {key: value[:, -1] for key, value in post.items()}
            for measure, kind in MEASURES.items():
                values[measure].append(state_disagreement(rssm, last, kind).float().cpu().numpy())
    return {measure: np.concatenate(parts) for measure, parts in values.items()}


def compare_uncertainty(run_dirs, dataset, out_dir, *, states=None, context=None, seed=0,
                        device="cpu"):
    """Score every run's branches at the same dataset states and write the table and figure
    (see the module docstring) to ``out_dir``; returns ``{name: path}``.

    ``dataset`` is the training data of the runs; a run trained on other data is refused.
    ``states`` and ``context`` default to :data:`STATES` and :data:`CONTEXT`.
    """
    states = STATES if states is None else states
    context = CONTEXT if context is None else context
    if states < 1 or context < 1:
        raise UncertaintyError(f"states and context must be positive, got {states} and {context}")
    fingerprint = dataset_fingerprint(dataset)
    for run_dir in run_dirs:
        check_comparable(run_dir, fingerprint)
    longest = int(max(dataset.episode_lengths))
    if context > longest:
        raise UncertaintyError(f"context={context} is longer than every episode (the longest has "
                               f"{longest} entries); choose a context of at most {longest}")
    observations = {run_observation(run_dir) for run_dir in run_dirs}
    if "state" in observations and dataset.states is None:
        raise UncertaintyError("runs trained on states (observation=state) need a dataset that "
                               "stores states; this one stores none")
    keys = STATE_SEQUENCE_KEYS if observations == {"state"} else None  # no frames when unneeded
    batches = state_windows(dataset, states, context, seed, keys)
    results = []  # (label, run folder, algorithm, {measure: values})
    for run_dir in run_dirs:
        algorithm, branches = model_branches(run_dir, device)
        for label, rssm, observe in branches:
            results.append((label, Path(run_dir), algorithm,
                            branch_uncertainty(rssm, observe, batches, seed)))
    results = _unique_labels(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    title = (f"Ensemble uncertainty at {states} states of {', '.join(fingerprint['dataset_ids'])} "
             f"(paper Fig. 7)")
    return {
        "uncertainty_states_csv": _write_states(results, out_dir / "state_uncertainty.csv"),
        "uncertainty_summary_csv": _write_csv(summary, out_dir / "state_uncertainty_summary.csv"),
        "uncertainty_summary_md": _write_markdown(summary, out_dir / "state_uncertainty_summary.md"),
        "uncertainty_png": plot_uncertainty(results, out_dir / "state_uncertainty.png", title=title),
    }


def check_comparable(run_dir, fingerprint):
    """Refuse a run of an algorithm without an ensemble prior, or one trained on other data than
    the dataset of ``fingerprint``."""
    record = read_run_config(run_dir)
    if record["algorithm"] not in AGENTS:
        raise UncertaintyError(f"{run_dir} holds a {record['algorithm']} run; the uncertainty "
                               f"comparison covers {', '.join(AGENTS)}")
    trained_on = record["dataset"]
    if trained_on != fingerprint:
        raise UncertaintyError(f"{run_dir} was trained on {trained_on['dataset_ids']} "
                               f"({trained_on['episodes']} episodes), not on the dataset scored "
                               f"here ({fingerprint['dataset_ids']}, {fingerprint['episodes']} "
                               "episodes); compare runs of one dataset")


def summarize(results):
    """One row per (branch, measure): count, mean, std, median and quartiles."""
    rows = []
    for label, run_dir, algorithm, values in results:
        for measure, array in values.items():
            q25, median, q75 = np.percentile(array, [25, 50, 75])
            rows.append({"method": label, "algorithm": algorithm, "run": str(run_dir),
                         "observation": run_observation(run_dir),
                         "measure": measure, "states": len(array), "mean": float(array.mean()),
                         "std": float(array.std()), "q25": float(q25), "median": float(median),
                         "q75": float(q75)})
    return rows


def plot_uncertainty(results, path, *, title):
    """Box plots of each measure (one panel each) per method and branch; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = [label for label, *_ in results]
    figure, axes = plt.subplots(1, len(MEASURES), figsize=(4.2 * len(MEASURES) + 1.0, 4.4),
                                dpi=120, squeeze=False)
    for axis, measure in zip(axes[0], MEASURES):
        data = [values[measure] for *_, values in results]
        axis.boxplot(data, showmeans=True, showfliers=False)
        axis.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
        axis.set_title(MEASURE_LABELS[measure], fontsize=9)
        axis.set_xlabel("method (branch)")
        axis.set_ylabel(f"{measure} per state")
        axis.grid(True, axis="y", alpha=0.3)
    handles = [plt.Line2D([], [], color="tab:orange", label="median"),
               plt.Line2D([], [], marker="^", color="tab:green", linestyle="", label="mean"),
               plt.Rectangle((0, 0), 1, 1, fill=False, label="quartiles; whiskers 1.5 IQR")]
    figure.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def _unique_labels(results):
    """Labels that name two runs of one method get the run folder's name appended."""
    counts = {}
    for label, *_ in results:
        counts[label] = counts.get(label, 0) + 1
    return [(f"{label} [{run_dir.name}]" if counts[label] > 1 else label, run_dir, algorithm, values)
            for label, run_dir, algorithm, values in results]


def _write_states(results, path):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("method", "run", "measure", "state", "value"))
        for label, run_dir, _, values in results:
            for measure, array in values.items():
                writer.writerows((label, str(run_dir), measure, index, repr(float(value)))
                                 for index, value in enumerate(array))
    return path


def _write_csv(rows, path):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_markdown(rows, path):
    lines = ["| method | measure | mean | std | median | q25 | q75 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['method']} | {row['measure']} | {row['mean']:.4g} | {row['std']:.3g} | "
              f"{row['median']:.4g} | {row['q25']:.4g} | {row['q75']:.4g} |" for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
