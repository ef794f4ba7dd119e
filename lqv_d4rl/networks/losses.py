"""World-model losses and ensemble-disagreement penalties.

KL balancing (DreamerV2, Hafner et al. 2021, Sec. 2 and its ``kl_loss``)::

    loss = balance * max(mean KL(sg(post) || prior), free)
         + (1 - balance) * max(mean KL(post || sg(prior)), free)

with balance 0.8: 80 % of the gradient trains the prior towards the posterior, 20 % regularizes the
posterior. ``free_average=True`` (DreamerV2's default ``free_avg``, used here by default) applies free
nats to the KL averaged over batch and time, so the term stops giving gradient only once the
*average* KL is below ``free``; ``free_average=False`` clamps each element first, then averages
(Dreamer-v1 / TIA clamp the batch-mean KL, which is the ``True`` case).

Penalties for offline model-based RL: three measures of how much the K prior heads of an ensemble
RSSM disagree about the next latent. They take the per-head predictions that
:func:`ensemble_predictions` (head probabilities or means) or :func:`ensemble_log_probs` build from
``RSSM.ensemble_prior_stats``; the ensemble axis is axis 0.
"""

import torch
import torch.distributions as td

from lqv_d4rl.networks.distributions import categorical_latent, gaussian_latent

PENALTIES = ("semopo_paper", "semopo_code", "lompo")


def latent_dist(stats):
    """Distribution of a latent state dict: categorical if it has ``logits``, else Gaussian."""
    if "logits" in stats:
        return categorical_latent(stats["logits"])
    return gaussian_latent(stats["mean"], stats["std"])


def latent_kl(lhs, rhs):
    """``KL(lhs || rhs)`` of two latent stats dicts, summed over the latent (one value per state).

    Categorical: ``sum p_lhs (log p_lhs - log p_rhs)`` from log-softmax, written out because
    ``torch.distributions``' categorical KL masks with boolean indexing (a device sync on CUDA).
    Gaussian: the closed form of ``torch.distributions``.
    """
    if "logits" in lhs:
        log_p = torch.log_softmax(lhs["logits"].float(), -1)
        log_q = torch.log_softmax(rhs["logits"].float(), -1)
        return (log_p.exp() * (log_p - log_q)).sum((-2, -1))
    return td.kl_divergence(latent_dist(lhs), latent_dist(rhs))


def _detached(stats):
    return {key: value.detach() for key, value in stats.items()}


def kl_balanced(posterior, prior, balance=0.8, free=1.0, free_average=True):
    """DreamerV2 KL balancing with free nats; returns ``(loss, kl)``.

    Args:
        posterior, prior: latent state dicts (``logits`` or ``mean``/``std``) with equal leading axes,
            or a prior with an extra leading ensemble axis (the posterior broadcasts against it).
        balance: weight of the term that trains the prior, ``KL(sg(post) || prior)`` (0.8).
        free: free nats (1.0 DreamerV2 / SeMOPO; 3.0 TIA).
        free_average: apply ``free`` to the mean KL (DreamerV2 default) instead of per element.
    Returns:
        ``loss`` (scalar) and ``kl``, the unclamped ``KL(post || prior)`` per element (detached), for logging.
    """
    kl_prior_side = latent_kl(_detached(posterior), prior)
    kl_post_side = latent_kl(posterior, _detached(prior))
    if free_average:
        loss_prior_side = kl_prior_side.mean().clamp_min(free)
        loss_post_side = kl_post_side.mean().clamp_min(free)
    else:
        loss_prior_side = kl_prior_side.clamp_min(free).mean()
        loss_post_side = kl_post_side.clamp_min(free).mean()
    loss = balance * loss_prior_side + (1 - balance) * loss_post_side
    return loss, kl_post_side.detach()


def ensemble_predictions(head_stats):
    """Per-head prediction vectors ``(K, ..., D)``: class probabilities (flattened over groups x
    classes) for a categorical latent, means for a Gaussian one.

    ``head_stats`` is the output of ``RSSM.ensemble_prior_stats`` (or ``RSSM.head_stats``).
    """
    if "logits" in head_stats:
        return torch.softmax(head_stats["logits"].float(), -1).flatten(-2)
    return head_stats["mean"].float()


def ensemble_log_probs(head_stats, sample):
    """``log p_k(sample)`` of one latent sample under each of the K heads: ``(K, ...)``.

    ``sample`` is the next stochastic latent (``(..., G, C)`` one-hot or ``(..., stoch)``), e.g. the
    ``stoch`` of the imagined state; it is broadcast against every head.
    """
    stats = {key: value for key, value in head_stats.items() if key != "deter"}
    return latent_dist(stats).log_prob(sample.float())


def disagreement_semopo_paper(predictions):
    """SeMOPO paper, Eq. 2: ``u = sum_k || p_k - mean_j p_j ||^2``.

    The sum runs over the K heads and over the prediction vector (probabilities for a categorical
    latent, means for a Gaussian one). Wan et al., "SeMOPO: Learning High-quality Model and Policy
    from Low-quality Offline Visual Datasets", ICML 2024, Sec. 3.3 Eq. 2.

    Args:
        predictions: ``(K, ..., D)`` from :func:`ensemble_predictions`.
    Returns:
        ``(...)`` penalty per state.
    """
    deviation = predictions - predictions.mean(0, keepdim=True)
    return deviation.pow(2).sum(-1).sum(0)


def disagreement_semopo_code(predictions):
    """Released SeMOPO / V-D4RL Offline DV2 code (``offline_penalty_type meandis``):
    ``u = mean_k || p_k - mean_j p_j ||_F``.

    The Frobenius norm of a head's deviation over its groups x classes probabilities equals the
    Euclidean norm of the flattened vector used here. Not squared, and averaged (not summed) over
    heads, so it is on a different scale than :func:`disagreement_semopo_paper`.

    Args:
        predictions: ``(K, ..., D)`` from :func:`ensemble_predictions`.
    Returns:
        ``(...)`` penalty per state.
    """
    deviation = predictions - predictions.mean(0, keepdim=True)
    # vector_norm, not sum-of-squares.sqrt(): its gradient is 0 (not NaN) where the heads agree exactly
    return torch.linalg.vector_norm(deviation, dim=-1).mean(0)


def disagreement_lompo(log_probs):
    """LOMPO (Rafailov et al., "Offline Reinforcement Learning from Images with Latent Space
    Models", L4DC 2021): ``u = std_k log p_k(z_{t+1})``, the standard deviation over the K heads of
    the log-likelihood each head assigns to the sampled next latent.

    Uses the population standard deviation (divide by K), as ``tf.math.reduce_std`` does.

    Args:
        log_probs: ``(K, ...)`` from :func:`ensemble_log_probs`.
    Returns:
        ``(...)`` penalty per state.
    """
    return log_probs.std(0, correction=0)


def state_disagreement(rssm, states, kind="semopo_code"):
    """Disagreement ``u`` of the K prior heads of ``rssm`` at latent states ``(...)``.

    The heads share the GRU, so their K predictions of a state's latent are read off its ``deter``
    (no extra GRU step). ``kind`` is ``"semopo_paper"``, ``"semopo_code"`` or ``"lompo"`` (the
    log-likelihood of the state's own ``stoch`` under each head). Returns one value per state; the
    result keeps its gradient.
    """
    if kind not in PENALTIES:
        raise ValueError(f"unknown penalty {kind!r}; choose one of {PENALTIES}")
    stats = rssm.head_stats(states["deter"])
    if kind == "lompo":
        return disagreement_lompo(ensemble_log_probs(stats, states["stoch"]))
    predictions = ensemble_predictions(stats)
    if kind == "semopo_paper":
        return disagreement_semopo_paper(predictions)
    return disagreement_semopo_code(predictions)


def imagination_disagreement(rssm, imagination, kind="semopo_code"):
    """Disagreement ``u`` of the K prior heads at the scored states of an imagination: ``(H, N)``.

    :func:`state_disagreement` of ``imagination.scored_states()``: by default states 1..H, whose
    priors are those of the step into each of them; with ``imagination.scored == "current"``
    states 0..H-1, as DreamerV2-based code reads the penalty (V-D4RL's Offline DV2 and the
    released SeMOPO compute it on the whole imagined sequence and score states 0..H-1). The
    result keeps its gradient (it flows into the dynamics like the reward's); detach it to
    penalize without it. SeMOPO's penalized reward is ``reward - lam * u`` (lam 10 in the paper,
    5 effectively in its released command); Offline DV2 uses lam 10, LOMPO 5.
    """
    return state_disagreement(rssm, imagination.scored_states(), kind)
