"""Optimizer wrapper, mixed precision helpers and parameter counting.

``precision`` is one of ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``. Mixed precision is
used only on CUDA (``torch.autocast``); on CPU every precision runs in float32, so the same config
runs everywhere. ``"float16"`` also scales the loss with a ``GradScaler`` (SeMOPO trained in fp16);
``"bfloat16"`` needs no scaling.

On CUDA, Adam runs fused (one kernel for all parameters); that is also what keeps float16 loss
scaling free of host syncs (the GradScaler hands its inf/NaN flag to the fused kernel instead of
reading it on the host at every step).
"""

import contextlib

import torch

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
"""Adam options that choose how it computes, not what: a checkpoint's values do not replace ours."""


def check_precision(precision):
    """Raise a ValueError for an unknown precision name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")


def uses_autocast(device, precision):
    """True if computations on ``device`` should run under autocast for this ``precision``."""
    check_precision(precision)
    return torch.device(device).type == "cuda" and PRECISIONS[precision] is not None


def autocast(device, precision="float32"):
    """A context manager: ``torch.autocast`` on CUDA with a mixed precision, else a no-op."""
    if not uses_autocast(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=PRECISIONS[precision])


def count_parameters(module, trainable_only=True):
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class Optimizer:
    """Adam with gradient clipping and optional fp16 loss scaling, for one group of parameters.

    ``step(loss)`` zeroes the gradients, backpropagates into *these parameters only* (so an actor
    loss that flows through the world model leaves the world model's ``.grad`` untouched), clips
    the global gradient norm to ``clip``, decays the weights and updates.

    Weight decay is DreamerV2's (``common/tfutils.py`` ``Optimizer`` with ``wd``, used by
    DreamerV2, V-D4RL's Offline DV2 and the released SeMOPO): after the gradients are taken and
    clipped and *before* the Adam step, every parameter of the group is multiplied by
    ``1 - weight_decay`` (its ``wd_pattern`` default ``.*`` matches every variable). It is not
    scaled by the learning rate and not added to the gradient (unlike ``torch.optim.Adam``'s
    ``weight_decay``).

    Args:
        name: used as a prefix of the returned metrics, e.g. ``"model"``.
        parameters: an iterable of parameters (or a module).
        lr, eps: Adam settings (DreamerV2: eps 1e-5).
        clip: global gradient-norm clip (100 in all four algorithms); ``None`` disables it.
        weight_decay: DreamerV2's decoupled decay, applied before each step (0: none).
        precision: mixed precision name; ``"float16"`` on CUDA enables a GradScaler.
        device: where the parameters live (decides whether loss scaling is active).
    """

    def __init__(self, name, parameters, lr, eps=1e-5, clip=100.0, weight_decay=0.0,
                 precision="float32", device="cpu"):
        if isinstance(parameters, torch.nn.Module):
            parameters = parameters.parameters()
        self.name = name
        self.parameters = [p for p in parameters if p.requires_grad]
        if not self.parameters:
            raise ValueError(f"optimizer {name!r} got no trainable parameters")
        if not 0 <= weight_decay < 1:
            raise ValueError(f"weight_decay must lie in [0, 1), got {weight_decay!r}")
        self.clip = clip
        self.weight_decay = weight_decay
        fused = True if all(p.device.type == "cuda" for p in self.parameters) else None
        self.optimizer = torch.optim.Adam(self.parameters, lr=lr, eps=eps, fused=fused)
        scaling = uses_autocast(device, precision) and precision == "float16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaling)

    def step(self, loss, retain_graph=False):
        """Update the parameters from ``loss``; returns ``{name_loss, name_grad_norm}`` (tensors)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(inputs=self.parameters, retain_graph=retain_graph)
        return {f"{self.name}_loss": loss.detach(), **self._update()}

    def gradients(self, loss, retain_graph=False):
        """This group's gradients of ``loss`` (scaled by the fp16 loss scale when it is on), taken
        but not applied; apply them with ``apply_gradients(gradients, scaled=True)``.

        For groups that share parameters (SeMOPO's per-branch optimizers share the joint mask
        decoder): every group's gradients must be taken at the same point, before any of them
        steps (see :func:`step_together`).
        """
        return torch.autograd.grad(self.scaler.scale(loss), self.parameters,
                                   retain_graph=retain_graph, allow_unused=True)

    def apply_gradients(self, gradients, scaled=False):
        """Update the parameters from gradients computed elsewhere (one per parameter in
        ``self.parameters`` order, ``None`` for none); returns ``{name_grad_norm}``.

        ``scaled=True``: the gradients come from :meth:`gradients` of this optimizer (scaled by
        its fp16 loss scale). ``scaled=False``: plain gradients, e.g. of losses whose gradients are
        taken in one ``torch.autograd.grad`` call and then split between several optimizers (TIA's
        two branches); they bypass the fp16 loss scaler, so this refuses to run when loss scaling
        is on (``precision="float16"`` on CUDA): use ``"bfloat16"``, which needs no scaling, or
        :meth:`step`. Clipping and weight decay are this group's own, as in :meth:`step`.
        """
        if self.scaler.is_enabled() and not scaled:
            raise RuntimeError(
                f"optimizer {self.name!r} scales float16 losses, but apply_gradients takes "
                "unscaled gradients computed elsewhere (they may underflow in float16); use "
                "precision 'bfloat16' or 'float32', or Optimizer.step(loss)"
            )
        for parameter, gradient in zip(self.parameters, gradients, strict=True):
            parameter.grad = gradient
        return self._update()

    def _update(self):
        """Unscale, clip, decay and step on the gradients held in ``.grad``; returns
        ``{name_grad_norm}`` (the norm before clipping)."""
        self.scaler.unscale_(self.optimizer)
        norm = self._clip_gradients()
        self._decay()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {f"{self.name}_grad_norm": norm.detach()}

    @torch.no_grad()
    def _decay(self):
        # DreamerV2 multiplies before apply_gradients, so the decay does not touch this step
        if self.weight_decay:
            torch._foreach_mul_(self.parameters, 1.0 - self.weight_decay)

    def _clip_gradients(self):
        """Clip the global gradient norm to ``clip`` (if set); returns the norm before clipping."""
        if self.clip is not None:
            return torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        return torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in self.parameters if p.grad is not None])
        )

    def state_dict(self):
        """Optimizer and scaler state, for checkpoints."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, saved on this device or another one.

        Load the checkpoint on the CPU (``map_location="cpu"``): Adam's moments go to each
        parameter's device, its step counters stay on the CPU (a step counter on the GPU would be
        read back once per parameter per update) unless this optimizer is fused. The
        implementation (fused or not) stays this optimizer's own. A run saved without loss scaling
        (float32, bfloat16, or float16 on a CPU) leaves an empty scaler state: an active scaler then
        starts from its initial scale, as a fresh run does.
        """
        own = [{key: group[key] for key in _IMPLEMENTATION_FLAGS if key in group}
               for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, flags in zip(self.optimizer.param_groups, own):
            group.update(flags)
            on_device = group.get("fused") or group.get("capturable")
            for parameter in group["params"]:
                step = self.optimizer.state.get(parameter, {}).get("step")
                if torch.is_tensor(step):
                    self.optimizer.state[parameter]["step"] = (
                        step.to(parameter.device, torch.float32) if on_device else step.cpu())
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])


def step_together(*updates):
    """Step several optimizers, each on its own loss, from gradients all taken before any step.

    ``updates`` are ``(optimizer, loss)`` pairs whose losses share one graph. This is how the
    released SeMOPO steps its two branch optimizers (``SeparatedWorldModel.train`` computes both
    tapes' gradients from the same forward pass), which matters where their parameter groups
    overlap: a parameter in two groups gets two Adam steps, each from its own loss's gradient at
    the same point. Returns the merged metrics (``{name}_loss``, ``{name}_grad_norm``).
    """
    gradients = [optimizer.gradients(loss, retain_graph=index < len(updates) - 1)
                 for index, (optimizer, loss) in enumerate(updates)]
    metrics = {}
    for (optimizer, loss), grads in zip(updates, gradients):
        metrics[f"{optimizer.name}_loss"] = loss.detach()
        metrics.update(optimizer.apply_gradients(grads, scaled=True))
    return metrics
