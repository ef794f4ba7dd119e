"""Seeding torch for a block of code without disturbing anyone else's random numbers, and the
switches that make CUDA computations repeatable."""

import contextlib
import os


@contextlib.contextmanager
def seeded_torch(seed):
    """Run the body with torch's global RNGs (the CPU one and, once CUDA is in use, every CUDA
    device's) seeded with ``seed``; restore all of them afterwards."""
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def make_cuda_deterministic():
    """Ask CUDA for repeatable results (same seed, same bytes), at some cost in speed:
    deterministic algorithms where torch has them (warning where it has none), cuDNN without
    benchmarking, and cuBLAS with a fixed workspace. Call before the first CUDA operation."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
