"""Count the points where a computation waits for its device: host syncs.

Reading a value of a GPU tensor on the host (``bool(t)``, ``t.item()``, ``t.tolist()``, ``int(t)``,
``t.cpu()``), running an operator whose output size depends on the values (``nonzero``, boolean
masks, ``torch.multinomial``'s checks) or copying host memory to it without ``non_blocking``
makes the CPU wait until the GPU has finished everything queued before it. One such wait per training update is the price of logging; one per time step of
a 50-step RSSM loop keeps the GPU idle most of the time. :func:`count_host_syncs` makes the number a
measured figure::

    with count_host_syncs("cuda") as syncs:
        agent.train_model_step(batch)
    print(syncs.total, syncs.by_kind, syncs.where.most_common(3))

Only tensors on devices of type ``device_type`` are counted: host tensors (the CPU generators that
draw ensemble heads, Adam's step counters) cost no device wait.

A machine without a GPU measures the same figure with ``device_type="meta"``: put the networks and
the batch on the ``meta`` device (shapes without values; every operator of the training code runs
there) and the host-side tensors stay on the CPU, exactly as on a GPU. A meta tensor has no values
to read, so while counting, a read gets a stand-in (1 for a scalar, zeros for ``tolist`` or a copy to
the host); where control flow depends on it the run is no longer meaningful, but it is counted.
"""

import collections
import contextlib
import threading
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPERATORS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select",
                  "aten::multinomial", "aten::_unique2", "aten::unique_consecutive",
                  "aten::unique_dim", "aten::repeat_interleave")
"""Operators that read device values on the host (``_local_scalar_dense`` is what ``bool``,
``item``, ``int`` and ``float`` of a tensor run; ``multinomial`` checks its input with one). Copies
between the host and the device are recognised separately."""

_PROJECT = str(Path(__file__).resolve().parents[1])
_state = threading.local()


class HostSyncCounter(TorchDispatchMode):
    """The counts of one :func:`count_host_syncs` block.

    Attributes:
        by_kind: ``Counter`` of ``bool``, ``item``, ``tolist`` (the Python calls), ``scalar`` (other
            scalar reads: ``int(t)``, ``float(t)``, reads inside operators), ``to_host`` (copies to
            the CPU), ``from_host`` (blocking copies from the CPU: CUDA waits for the stream
            before such a copy; ``non_blocking=True`` from pinned memory does not) and operator
            names such as ``aten::nonzero``.
        where: ``Counter`` of ``(kind, "file:line")``, the innermost line of this project's code
            that caused each sync.
    """

    def __init__(self, device_type):
        super().__init__()
        self.device_type = torch.device(device_type).type
        self.by_kind = collections.Counter()
        self.where = collections.Counter()

    @property
    def total(self):
        """All syncs counted."""
        return sum(self.by_kind.values())

    def watches(self, tensor):
        """True for a tensor on the watched device type."""
        return isinstance(tensor, torch.Tensor) and tensor.device.type == self.device_type

    def record(self, kind):
        """Count one sync of ``kind`` at the calling line of this project."""
        self.by_kind[kind] += 1
        self.where[(kind, _caller())] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = self._sync_kind(func._schema.name, args, kwargs)
        if kind is not None and not (kind == "scalar" and getattr(_state, "python_call", False)):
            self.record(kind)
        if kind is not None and self.device_type == "meta":
            return _stand_in(kind, func, args, kwargs)
        return func(*args, **kwargs)

    def _sync_kind(self, name, args, kwargs):
        """What kind of sync the operator is on the watched device, or None."""
        if name == "aten::_to_copy":
            target = kwargs.get("device")
            target = None if target is None else torch.device(target).type
            if self.watches(args[0]) and target == "cpu":
                return "to_host"
            if args[0].device.type == "cpu" and target == self.device_type \
                    and not kwargs.get("non_blocking", False):
                return "from_host"
            return None
        if name == "aten::copy_":
            destination, source = args[0], args[1]
            if self.watches(source) and destination.device.type == "cpu":
                return "to_host"
            blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
            if self.watches(destination) and source.device.type == "cpu" and blocking:
                return "from_host"
            return None
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        if name in SYNC_OPERATORS and any(self.watches(tensor) for tensor in tensors):
            return "scalar" if name == "aten::_local_scalar_dense" else name
        return None


def _stand_in(kind, func, args, kwargs):
    """What an operator on meta tensors returns while counting (meta tensors hold no values)."""
    if kind == "scalar":
        return torch.ones((), dtype=args[0].dtype).item()
    if kind == "to_host":
        if func._schema.name == "aten::copy_":
            return args[0].zero_()
        return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
    return func(*args, **kwargs)  # from_host and value-dependent operators: as they are


def _caller():
    for frame in reversed(traceback.extract_stack()[:-3]):
        if frame.filename.startswith(_PROJECT) and "site-packages" not in frame.filename \
                and not frame.filename.endswith("host_syncs.py"):
            return f"{Path(frame.filename).relative_to(_PROJECT)}:{frame.lineno}"
    return "?"


def _patched(counter, kind, original, stand_in):
    def method(tensor, *args, **kwargs):
        if not counter.watches(tensor):
            return original(tensor, *args, **kwargs)
        counter.record(kind)
        _state.python_call = True
        try:
            if counter.device_type == "meta":
                return stand_in(tensor)
            return original(tensor, *args, **kwargs)
        finally:
            _state.python_call = False
    return method


@contextlib.contextmanager
def count_host_syncs(device_type="cuda"):
    """Count host syncs on tensors of ``device_type`` while the block runs: the operators this
    thread runs, and the Python reads (``bool``, ``item``, ``tolist``) of every thread. Yields the
    :class:`HostSyncCounter` (see the module docstring)."""
    counter = HostSyncCounter(device_type)
    stand_ins = {
        "__bool__": ("bool", lambda tensor: True),
        "item": ("item", lambda tensor: torch.ones((), dtype=tensor.dtype).item()),
        "tolist": ("tolist", lambda tensor: torch.zeros(tensor.shape, dtype=tensor.dtype).tolist()),
    }
    originals = {name: getattr(torch.Tensor, name) for name in stand_ins}
    for name, (kind, stand_in) in stand_ins.items():
        setattr(torch.Tensor, name, _patched(counter, kind, originals[name], stand_in))
    try:
        with counter:
            yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
