"""Pinning the CPU kernels, so that the same seed gives the same bytes on every x86-64 machine.

PyTorch (its own vectorized kernels and Intel MKL's matrix products), oneDNN and Mesa's llvmpipe
renderer each pick code for the instruction set of the CPU they run on: AVX2 on one machine,
AVX-512 on another. The vector width decides how sums are split, so the last bits of a float
differ between machines, and a policy acting in a chaotic simulator turns a last-bit difference
into another episode. Measured on walker_walk's random level of the CPU recipe (200 episodes,
physics only): ATen's AVX2 kernels give mean return 45.2 and max 90.9, its default (scalar)
kernels mean 45.6 and max 81.7 on the same machine, with the same seed. The same-seed runs whose
statistics disagreed between DATASETS.md and a user's machine differed this way.

:func:`pin_cpu_kernels` therefore sets, before torch, MKL or Mesa start (``import lqv_d4rl`` calls
it), where the CPU has AVX2 and FMA (Linux, x86-64)::

    ATEN_CPU_CAPABILITY=avx2      PyTorch's own kernels
    MKL_CBWR=AVX2                 MKL's conditional numerical reproducibility: AVX2 code paths
    ONEDNN_MAX_CPU_ISA=AVX2       oneDNN (convolutions)
    LP_NATIVE_VECTOR_WIDTH=256    Mesa llvmpipe (MuJoCo's EGL rendering): 256-bit vectors

These values replace any already set (a stray ``ATEN_CPU_CAPABILITY=default`` would change the
bytes too); ``LQV_D4RL_PIN_CPU_KERNELS=0`` turns the pinning off (faster on AVX-512 machines, at
the cost of machine-dependent bytes). A program that imports torch before ``lqv_d4rl`` gets
torch's own choice; ``generate`` warns when that differs from the pinned one. On
other machines (no AVX2, ARM, macOS) nothing is pinned and bytes may differ from x86-64 AVX2 ones.
:func:`kernel_settings` says what is in effect; ``generate`` records it in each manifest.
"""

import os

PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "LP_NATIVE_VECTOR_WIDTH": "256",
}
"""Environment variable -> value that pins it to the AVX2 code path."""

OPT_OUT = "LQV_D4RL_PIN_CPU_KERNELS"


def cpu_has_avx2(cpuinfo="/proc/cpuinfo"):
    """True when the CPU flags list ``avx2`` and ``fma`` (False where they cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return False


def pin_cpu_kernels(environ=None, *, cpuinfo="/proc/cpuinfo"):
    """Set :data:`PINNED` in ``environ`` (default ``os.environ``) unless opted out or the CPU lacks
    AVX2; returns the pinned variables (empty when nothing was pinned)."""
    environ = os.environ if environ is None else environ
    if not pinning_wanted(environ) or not cpu_has_avx2(cpuinfo):
        return {}
    environ.update(PINNED)
    return dict(PINNED)


def pinning_wanted(environ=None):
    """False when ``LQV_D4RL_PIN_CPU_KERNELS=0`` turns the pinning off."""
    environ = os.environ if environ is None else environ
    return environ.get(OPT_OUT, "1") != "0"


def unpinned_torch_kernels():
    """A sentence saying why torch's kernels are not the pinned ones, or None when they are (or
    when nothing is pinned on this machine: no AVX2, or opted out)."""
    import torch

    if not pinning_wanted() or not cpu_has_avx2():
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        return None
    return (f"torch uses its {capability} CPU kernels, not the pinned AVX2 ones (was torch "
            "imported before lqv_d4rl?); the bytes may differ from other machines'")


def kernel_settings():
    """What decides the CPU arithmetic here: torch's kernel capability (when torch is loaded) and
    the pinning variables as set (None where unset). JSON-able."""
    import sys

    settings = {key: os.environ.get(key) for key in PINNED}
    torch = sys.modules.get("torch")
    if torch is not None:
        settings["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return settings
