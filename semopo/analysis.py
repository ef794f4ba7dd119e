"""The analyses of the paper, for your own run: tables (CSV) and images (PNG) in an output folder.

* **Model uncertainty per branch** (paper Fig. 2 / 8): the ensemble disagreement ``u`` (the
  config's penalty formula) along observed sequences and along imagined rollouts, for the
  endogenous and the exogenous branch. The exogenous branch has its own K prior heads
  (``exo_ensemble``), trained exactly like the endogenous ones (each step's KL trains the head drawn
  for it), so the analogous quantity is the disagreement of *its* heads: on observed sequences
  the heads' predictions of s-_t from the posterior's GRU state; imagined, an action-free rollout of
  its prior. Endogenous imagination follows the trained actor. With the single-branch ablation only
  the one ("endogenous") curve exists.
* **Action entropy of sampled batches** (Fig. 6): ``lqv_d4rl.samplers.action_entropy`` of batches
  drawn by the conservative, return-curriculum and random samplers at several points of the
  curriculum (built as in training: batch shape, curriculum length, off-by-one setting).
* **Reconstructions** (Fig. 5): observation, joint reconstruction, the image decoded from the
  endogenous state alone, the exogenous branch's image and the mask, as one PNG.
* **The state gate** (models trained with ``observation="state"``, in place of the
  reconstructions): per state dimension, the mean gate g (the endogenous branch's weight) and the
  reconstruction error of the joint state, of each branch's own decoded state and of the
  exogenous-only decoder (:func:`state_gate_analysis`): which dimensions the endogenous branch
  reconstructs and the gate gives it.
"""

import csv
import json
from pathlib import Path

import numpy as np
import torch

from lqv_d4rl.networks import imagination_disagreement, state_disagreement
from lqv_d4rl.observations import dimension_names, sequence_keys
from lqv_d4rl.plots import image_grid, line_plot
from lqv_d4rl.samplers import (
    action_entropy, gather_sequences, make_sequence_sampler, mark_window_starts,
)
from lqv_d4rl.seeding import seeded_torch

from .training import make_sampler

ANALYSIS_BATCH = 16
"""Sequences per analysis batch (a sample is enough for curves of means)."""


# ---------------------------------------------------------------------------------------------
# Uncertainty per branch
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def branch_uncertainty(agent, batch, *, horizon=15, kind=None):
    """Mean ensemble disagreement per step, per branch, observed and imagined.

    Returns ``{"observed": {"endogenous": (T,), "exogenous": (T,)}, "imagined": {...: (H,)}}``
    (numpy arrays; no ``exogenous`` entry for the single-branch model). Imagination starts from
    the last posterior state of each sequence.
    """
    model = agent.world_model
    kind = kind or agent.config.penalty
    post, _ = model.observe(batch)
    observed = state_disagreement(model.rssm, post, kind)
    result = {"observed": {"endogenous": _mean_over_batch(observed)}, "imagined": {}}
    start = {key: value[:, -1] for key, value in post.items()}
    actor = lambda features: agent.behavior.policy(features, sample=False)
    imagination = model.rssm.imagine(actor, start, horizon)
    result["imagined"]["endogenous"] = _steps(imagination_disagreement(model.rssm, imagination, kind))
    if getattr(model, "separated", False):
        exo_post, _ = model.observe_exogenous(batch)
        exo_observed = state_disagreement(model.exo_rssm, exo_post, kind)
        result["observed"]["exogenous"] = _mean_over_batch(exo_observed)
        exo_start = {key: value[:, -1] for key, value in exo_post.items()}
        no_action = lambda features: torch.zeros(features.shape[0], agent.action_dim,
                                                 device=features.device)
        exo_imagination = model.exo_rssm.imagine(no_action, exo_start, horizon)
        result["imagined"]["exogenous"] = _steps(
            imagination_disagreement(model.exo_rssm, exo_imagination, kind))
    return result


def _mean_over_batch(values):
    """``(B, T)`` -> ``(T,)`` mean over sequences."""
    return values.float().mean(0).cpu().numpy()


def _steps(values):
    """``(H, N)`` -> ``(H,)`` mean over rollouts."""
    return values.float().mean(1).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Action entropy of sampled batches
# ---------------------------------------------------------------------------------------------


def sampling_action_entropy(dataset, config, *, batches=8, points=6, seed=0,
                            modes=("conservative", "conservative_literal", "return_curriculum",
                                   "random")):
    """Action entropy of batches of each sampling mode at ``points`` stages of the model phase.

    The stages (``step`` from 0 to ``model_steps``) are spaced both evenly and geometrically, so
    that the whole-phase curricula and the early part of the literal one (over after about
    n / pace updates) are resolved. At each stage ``batches`` batches of the training shape are
    drawn (their windows only: actions and first-entry flags are gathered, no images) and their
    actions pooled. Returns a list of rows ``{"mode", "step", "entropy"}``.
    """
    end = max(1, config.model_steps)
    steps = np.unique(np.concatenate([np.geomspace(1, end, points).astype(int) - 1,
                                      np.linspace(0, end - 1, points).astype(int)]))
    rows = []
    for mode in modes:
        sampler = make_sampler(dataset, mode, config, seed, recycle=False)
        for step in steps:
            sampler.set_step(int(step))
            windows = [gather_sequences(dataset, *sampler.choose_windows(), sampler.seq_len,
                                        keys=("action", "is_first")) for _ in range(batches)]
            entropy = action_entropy(np.concatenate([w["action"] for w in windows]),
                                     np.concatenate([w["is_first"] for w in windows]))
            rows.append({"mode": mode, "step": int(step), "entropy": entropy})
    return rows


# ---------------------------------------------------------------------------------------------
# Reconstructions
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruction_rows(agent, batch, *, frames=8):
    """Image rows ``{name: (frames, 64, 64, 3) uint8}`` of the first sequence of ``batch``.

    Separated model: ``observation``, ``joint``, ``endogenous`` (decoded from the endogenous state
    alone: its mask decoder's mean), ``exogenous`` (the exogenous mask decoder's mean), ``mask``
    (white = endogenous), ``exogenous_only`` (the exogenous-only decoder, if the model has one).
    Single-branch model:
    ``observation`` and ``reconstruction``.
    """
    model = agent.world_model
    length = np.asarray(batch["image"]).shape[1]
    picks = np.unique(np.linspace(0, length - 1, min(frames, length)).astype(int))
    one = {key: np.asarray(value)[:1] for key, value in batch.items()}
    rows = {"observation": np.asarray(one["image"])[0, picks]}
    post, _ = model.observe(one)
    if not getattr(model, "separated", False):
        rows["reconstruction"] = _to_pixels(model.decode(post)[0, picks])
        return rows
    exo_post, _ = model.observe_exogenous(one)
    joint, exo_only = model.decode_branches(post, exo_post)
    rows["joint"] = _to_pixels(joint.mean[0, picks])
    rows["endogenous"] = _to_pixels(joint.endo_mean[0, picks])
    rows["exogenous"] = _to_pixels(joint.exo_mean[0, picks])
    rows["mask"] = _to_pixels(joint.mask[0, picks].expand(-1, -1, -1, 3) - 0.5)
    if exo_only is not None:
        rows["exogenous_only"] = _to_pixels(exo_only[0, picks])
    return rows


@torch.no_grad()
def state_gate_analysis(agent, batch, names=None):
    """Per state dimension, what the gate of a separated state model does on a batch.

    Returns ``{"dimension": [name, ...], "gate": (S,), "error_joint": (S,), "error_endogenous":
    (S,), "error_exogenous": (S,), "error_exogenous_only": (S,) or None}`` (numpy arrays): the mean
    over the batch's steps of the gate g (1: the endogenous branch's state is used) and the mean
    squared error against the observed state of the joint state, of each branch's own decoded
    state (``JointState.endo_mean`` / ``exo_mean``) and of the exogenous-only decoder. ``names``
    label the dimensions (default ``state[i]``). A dimension the endogenous branch reconstructs
    has a small ``error_endogenous``; one the action-free branch predicts has a small
    ``error_exogenous``; the gate says which of the two the joint state uses.
    """
    model = agent.world_model
    if not getattr(model, "separated", False) or model.observation_key != "state":
        raise ValueError("the state gate belongs to a separated model trained with "
                         "observation='state'")
    post, _ = model.observe(batch)
    exo_post, _ = model.observe_exogenous(batch)
    joint, exo_only = model.decode_branches(post, exo_post)
    target = model.to_tensors(batch)["state"].float()

    def per_dimension(values):
        return values.float().reshape(-1, values.shape[-1]).mean(0).cpu().numpy()

    size = target.shape[-1]
    return {
        "dimension": list(names) if names is not None else [f"state[{i}]" for i in range(size)],
        "gate": per_dimension(joint.gate),
        "error_joint": per_dimension((joint.mean - target) ** 2),
        "error_endogenous": per_dimension((joint.endo_mean.float() - target) ** 2),
        "error_exogenous": per_dimension((joint.exo_mean.float() - target) ** 2),
        "error_exogenous_only": (None if exo_only is None
                                 else per_dimension((exo_only.float() - target) ** 2)),
    }


def _to_pixels(mean):
    """Decoder means in ``x/255 - 0.5`` space -> uint8 pixels."""
    return ((mean.float().clamp(-0.5, 0.5) + 0.5) * 255).round().to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Writing it all
# ---------------------------------------------------------------------------------------------


def run_analysis(agent, dataset, out_dir, *, seed=0, horizon=15):
    """Write the three analyses into ``out_dir``; returns ``{name: path}`` of the files written.

    Files: ``uncertainty.csv`` / ``uncertainty.png``, ``action_entropy.csv`` /
    ``action_entropy.png``, ``reconstruction.png`` (rows listed in ``reconstruction_rows.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = agent.config
    sampler = make_sequence_sampler(dataset, "random", batch_size=min(ANALYSIS_BATCH, config.batch_size),
                                    seq_len=config.seq_len, seed=seed, recycle=False,
                                    keys=sequence_keys(config.observation))
    batch = mark_window_starts(sampler.sample())
    written = {}
    with seeded_torch(seed):
        written.update(_write_uncertainty(agent, batch, out_dir, horizon))
        if config.observation != "state":
            written.update(_write_reconstruction(agent, batch, out_dir))
        elif getattr(agent.world_model, "separated", False):
            written.update(_write_state_gate(agent, batch, dimension_names(dataset), out_dir))
    written.update(_write_action_entropy(dataset, config, out_dir, seed))
    return written


def _write_uncertainty(agent, batch, out_dir, horizon):
    curves = branch_uncertainty(agent, batch, horizon=horizon)
    rows = [{"rollout": rollout, "branch": branch, "step": step, "disagreement": float(value)}
            for rollout, by_branch in curves.items() for branch, values in by_branch.items()
            for step, value in enumerate(values)]
    csv_path = _write_csv(out_dir / "uncertainty.csv", rows)
    series = {f"{branch} ({rollout})": (np.arange(len(values)), values)
              for rollout, by_branch in curves.items() for branch, values in by_branch.items()}
    png_path = line_plot(series, out_dir / "uncertainty.png",
                         title=f"Ensemble disagreement per branch (penalty {agent.config.penalty})",
                         xlabel="step along the observed sequence / imagined rollout",
                         ylabel="disagreement u")
    return {"uncertainty_csv": csv_path, "uncertainty_png": png_path}


def _write_reconstruction(agent, batch, out_dir):
    rows = reconstruction_rows(agent, batch)
    length = np.asarray(batch["image"]).shape[1]
    picks = np.unique(np.linspace(0, length - 1, min(8, length)).astype(int))
    path = image_grid(rows, out_dir / "reconstruction.png",
                      title="SeMOPO decomposition of one sequence (white mask = endogenous)",
                      column_labels=[f"t={t}" for t in picks])
    (out_dir / "reconstruction_rows.json").write_text(json.dumps(list(rows), indent=2) + "\n")
    return {"reconstruction_png": path}


def _write_state_gate(agent, batch, names, out_dir):
    gate = state_gate_analysis(agent, batch, names if names else None)
    columns = [key for key in ("gate", "error_joint", "error_endogenous", "error_exogenous",
                               "error_exogenous_only") if gate[key] is not None]
    rows = [{"dimension": name, **{key: float(gate[key][index]) for key in columns}}
            for index, name in enumerate(gate["dimension"])]
    csv_path = _write_csv(out_dir / "state_gate.csv", rows)
    return {"state_gate_csv": csv_path,
            "state_gate_png": plot_state_gate(gate, out_dir / "state_gate.png")}


def plot_state_gate(gate, path):
    """Two panels over the state dimensions: the mean gate g, and each decoder's squared error
    (log scale); returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = gate["dimension"]
    x = np.arange(len(names))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.28 * len(names) + 2), 6.0),
                                         dpi=120, sharex=True)
    top.bar(x, gate["gate"], color="tab:blue")
    top.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    top.set_ylim(0, 1)
    top.set_ylabel("mean gate g (1 = endogenous)")
    top.set_title("SeMOPO state gate per dimension")
    for key, label in (("error_endogenous", "endogenous branch alone"),
                       ("error_exogenous", "exogenous branch alone"),
                       ("error_exogenous_only", "exogenous-only decoder"),
                       ("error_joint", "joint (gated)")):
        if gate.get(key) is not None:
            bottom.plot(x, np.maximum(gate[key], 1e-8), marker="o", markersize=3, label=label)
    bottom.set_yscale("log")
    bottom.set_ylabel("squared error")
    bottom.legend(fontsize=7)
    bottom.set_xticks(x, names, rotation=90, fontsize=6)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def _write_action_entropy(dataset, config, out_dir, seed):
    rows = sampling_action_entropy(dataset, config, seed=seed)
    csv_path = _write_csv(out_dir / "action_entropy.csv", rows)
    series = {}
    for mode in dict.fromkeys(row["mode"] for row in rows):
        picked = [row for row in rows if row["mode"] == mode]
        series[mode] = (np.array([row["step"] for row in picked]),
                        np.array([row["entropy"] for row in picked]))
    png_path = line_plot(series, out_dir / "action_entropy.png",
                         title="Action entropy of sampled batches (paper Fig. 6)",
                         xlabel="model update", ylabel="action entropy (nats)")
    return {"action_entropy_csv": csv_path, "action_entropy_png": png_path}


def _write_csv(path, rows):
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
