"""Probability distributions used by the world models and the actor.

Everything here is a ``torch.distributions.Distribution`` so that ``log_prob``, ``entropy`` and
``torch.distributions.kl_divergence`` work as usual:

* latent states: :func:`categorical_latent` (32 groups x 32 classes, straight-through samples, the
  DreamerV2 / SeMOPO latent) and :func:`gaussian_latent` (diagonal Normal, the Dreamer-v1 / TIA latent);
* actions: :class:`TruncatedNormal` (DreamerV2 default for continuous control) and
  :class:`TanhNormal` (Dreamer-v1 / TIA);
* observations: :func:`image_log_likelihood`, a unit-variance Normal over all pixels.

Statistics are promoted to float32 before a distribution is built, so losses stay accurate when the
networks run under ``torch.autocast``.
"""

import math

import torch
import torch.distributions as td
import torch.nn.functional as F
from torch.distributions.utils import lazy_property

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class OneHotStraightThrough(td.Distribution):
    """One-hot categorical whose ``rsample`` passes gradients straight through to the probabilities.

    The sample is the one-hot vector in the forward pass; its gradient is the gradient of the
    class probabilities (``sample + probs - probs.detach()``), as in DreamerV2. ``log_prob``,
    ``entropy``, ``mean``, ``mode`` and ``kl_divergence`` are those of
    ``torch.distributions.OneHotCategorical``.

    Written out rather than built on ``OneHotCategorical`` because that one builds a validating
    ``Categorical`` inside (whatever ``validate_args`` says) and samples with ``torch.multinomial``,
    which both read values back to the host: on a GPU every latent step would wait for the device.
    Here nothing validates and samples are Gumbel-max draws (``argmax(logits + Gumbel noise)``, an
    exact categorical sample), so building and sampling never synchronize.
    """

    arg_constraints = {"logits": td.constraints.independent(td.constraints.real, 1)}
    support = td.constraints.one_hot
    has_rsample = True

    def __init__(self, logits, validate_args=False):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    @lazy_property
    def probs(self):
        """Class probabilities ``softmax(logits)``."""
        return self.logits.exp()

    @property
    def mean(self):
        """The class probabilities."""
        return self.probs

    @property
    def variance(self):
        """``probs * (1 - probs)`` per class."""
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape=torch.Size()):
        """A one-hot sample (no gradients): Gumbel-max, ``argmax(logits - log(-log U))``."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            uniform = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
            # U = 0 gives Gumbel noise -inf: that class is not drawn (never one drawn spuriously)
            index = (self.logits.expand(shape) - torch.log(-torch.log(uniform))).argmax(-1, keepdim=True)
            return torch.zeros(shape, dtype=self.logits.dtype, device=self.logits.device).scatter_(
                -1, index, 1.0)

    def rsample(self, sample_shape=torch.Size()):
        """A one-hot sample carrying straight-through gradients to ``probs``."""
        sample = self.sample(sample_shape)
        probs = self.probs
        return sample + probs - probs.detach()

    def log_prob(self, value):
        """Log-probability of the class marked by the one-hot ``value`` (its largest entry); the
        value's own gradient is not used (as in ``OneHotCategorical``)."""
        shape = torch.broadcast_shapes(value.shape, self.logits.shape)
        index = value.argmax(-1, keepdim=True).expand(*shape[:-1], 1)
        return self.logits.expand(shape).gather(-1, index).squeeze(-1)

    def entropy(self):
        """``-sum_k p_k log p_k``."""
        logits = self.logits.clamp(min=torch.finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    @property
    def mode(self):
        """The most likely class as a one-hot vector, with straight-through gradients."""
        index = self.logits.argmax(-1, keepdim=True)
        one_hot = torch.zeros_like(self.logits).scatter_(-1, index, 1.0)
        return one_hot + self.probs - self.probs.detach()


@td.register_kl(OneHotStraightThrough, OneHotStraightThrough)
def _kl_one_hot_straight_through(p, q):
    """``sum_k p_k (log p_k - log q_k)``, with ``OneHotCategorical``'s conventions for zero
    probabilities (inf where only q is 0, 0 where p is 0), written with ``torch.where`` instead of
    boolean indexing (which synchronizes with the GPU)."""
    terms = p.probs * (p.logits - q.logits)
    terms = torch.where(q.probs == 0, math.inf, terms)
    return torch.where(p.probs == 0, 0.0, terms).sum(-1)


def categorical_latent(logits):
    """Independent one-hot categoricals over the last two axes ``(..., groups, classes)``.

    The event shape is ``(groups, classes)``; ``log_prob`` and ``kl_divergence`` sum over groups.
    """
    base = OneHotStraightThrough(logits.float())
    return td.Independent(base, 1, validate_args=False)


def gaussian_latent(mean, std):
    """Diagonal Normal over the last axis (event shape ``(stoch,)``)."""
    base = td.Normal(mean.float(), std.float(), validate_args=False)
    return td.Independent(base, 1, validate_args=False)


def image_log_likelihood(mean, target):
    """Log-likelihood of ``target`` under a Normal(mean, 1) over the last three (image) axes.

    Equal to ``-0.5 * sum((target - mean)**2) - 0.5 * D * log(2*pi)`` with D pixels x channels, i.e.
    a summed MSE up to a constant: the image term of DreamerV2, TIA and SeMOPO.
    Returns one value per image (the leading axes of ``mean``).
    """
    if mean.shape != target.shape:
        raise ValueError(
            f"image mean has shape {tuple(mean.shape)} but the target has {tuple(target.shape)}; "
            "decode to the same layout as the target (channels last, see preprocess_image)"
        )
    squared = (target.float() - mean.float()).pow(2)
    size = mean.shape[-1] * mean.shape[-2] * mean.shape[-3]
    return -0.5 * squared.sum((-3, -2, -1)) - size * _LOG_SQRT_2PI


def unit_normal(mean, event_dims):
    """Normal(mean, 1) treating the last ``event_dims`` axes as one event (reward / value heads)."""
    base = td.Normal(mean.float(), torch.ones_like(mean, dtype=torch.float32), validate_args=False)
    return td.Independent(base, event_dims, validate_args=False) if event_dims else base


def bernoulli(logits, event_dims):
    """Bernoulli over ``logits`` treating the last ``event_dims`` axes as one event (discount head)."""
    base = td.Bernoulli(logits=logits.float(), validate_args=False)
    return td.Independent(base, event_dims, validate_args=False) if event_dims else base


class TruncatedNormal(td.Distribution):
    """Normal(loc, scale) truncated to ``[low, high]``, with reparameterized samples.

    Sampling inverts the CDF (``loc + scale * Phi^-1(Phi(a) + u (Phi(b) - Phi(a)))``), so gradients
    flow to ``loc`` and ``scale``. The entropy is exact. This is the DreamerV2 action distribution
    (there built on ``tfd.TruncatedNormal``); its elements are independent, wrap it in
    ``Independent`` for a vector action.
    """

    arg_constraints = {"loc": td.constraints.real, "scale": td.constraints.positive}
    has_rsample = True
    _eps = 1e-6

    def __init__(self, loc, scale, low=-1.0, high=1.0, validate_args=False):
        self.loc, self.scale = torch.broadcast_tensors(loc.float(), scale.float())
        self.low, self.high = float(low), float(high)
        self._alpha = (self.low - self.loc) / self.scale
        self._beta = (self.high - self.loc) / self.scale
        self._cdf_alpha = _normal_cdf(self._alpha)
        self._mass = (_normal_cdf(self._beta) - self._cdf_alpha).clamp_min(self._eps)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def support(self):
        """The interval ``[low, high]``."""
        return td.constraints.interval(self.low, self.high)

    def rsample(self, sample_shape=torch.Size()):
        """A sample in ``[low, high]`` differentiable with respect to ``loc`` and ``scale``."""
        shape = self._extended_shape(sample_shape)
        uniform = torch.rand(shape, device=self.loc.device, dtype=self.loc.dtype)
        cdf = (self._cdf_alpha + uniform * self._mass).clamp(self._eps, 1 - self._eps)
        value = self.loc + self.scale * _normal_icdf(cdf)
        return value.clamp(self.low, self.high)

    def sample(self, sample_shape=torch.Size()):
        """A sample without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        """Log-density of ``value`` (inside ``[low, high]``) under the truncated Normal."""
        standard = (value - self.loc) / self.scale
        return -0.5 * standard.pow(2) - _LOG_SQRT_2PI - self.scale.log() - self._mass.log()

    def entropy(self):
        """The exact entropy of the truncated Normal."""
        pdf_alpha = _normal_pdf(self._alpha)
        pdf_beta = _normal_pdf(self._beta)
        correction = (self._alpha * pdf_alpha - self._beta * pdf_beta) / (2 * self._mass)
        return 0.5 + _LOG_SQRT_2PI + self.scale.log() + self._mass.log() + correction

    @property
    def mean(self):
        """The mean of the truncated Normal (not ``loc``)."""
        pdf_difference = _normal_pdf(self._alpha) - _normal_pdf(self._beta)
        return self.loc + self.scale * pdf_difference / self._mass

    @property
    def mode(self):
        """``loc`` clamped to ``[low, high]``: the deterministic action used for evaluation."""
        return self.loc.clamp(self.low, self.high)


class TanhNormal(td.Distribution):
    """``tanh(x)`` with ``x ~ Normal(loc, scale)``: the Dreamer-v1 / TIA action distribution.

    ``log_prob`` clamps actions slightly inside (-1, 1) so that actions on the boundary (as stored in
    datasets) stay finite. The entropy has no closed form; :meth:`entropy` returns a Monte-Carlo
    estimate ``-mean(log_prob(samples))`` with ``entropy_samples`` reparameterized samples, so its
    gradient reaches ``loc`` and ``scale``. Elements are independent; wrap in ``Independent``.
    """

    arg_constraints = {"loc": td.constraints.real, "scale": td.constraints.positive}
    support = td.constraints.interval(-1.0, 1.0)
    has_rsample = True
    _clip = 1 - 1e-6

    def __init__(self, loc, scale, entropy_samples=16, validate_args=False):
        self.base = td.Normal(loc.float(), scale.float(), validate_args=False)
        self.entropy_samples = entropy_samples
        super().__init__(self.base.batch_shape, validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        """``tanh`` of a reparameterized Normal sample."""
        return torch.tanh(self.base.rsample(sample_shape))

    def sample(self, sample_shape=torch.Size()):
        """A sample without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        """Log-density of ``value`` (clamped just inside (-1, 1)) with the tanh Jacobian."""
        value = value.float().clamp(-self._clip, self._clip)
        pre_tanh = torch.atanh(value)
        # log |d tanh(x)/dx| = log(1 - tanh(x)^2), written stably with softplus.
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return self.base.log_prob(pre_tanh) - log_det

    def entropy(self):
        """Monte-Carlo entropy estimate from ``entropy_samples`` reparameterized samples."""
        pre_tanh = self.base.rsample((self.entropy_samples,))
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return -(self.base.log_prob(pre_tanh) - log_det).mean(0)

    @property
    def mode(self):
        """``tanh(loc)``: the deterministic action used for evaluation."""
        return torch.tanh(self.base.loc)


def _normal_pdf(x):
    return torch.exp(-0.5 * x.pow(2) - _LOG_SQRT_2PI)


def _normal_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _normal_icdf(p):
    return math.sqrt(2) * torch.erfinv(2 * p - 1)
