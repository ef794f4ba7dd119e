"""lqv_d4rl.cpu_kernels: which CPU kernels are pinned, and that a user's kernel setting does not
change the bytes a recipe records."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lqv_d4rl.cpu_kernels import PINNED, cpu_has_avx2, kernel_settings, pin_cpu_kernels

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    return str(path)


def test_the_avx2_kernels_are_pinned_where_the_cpu_has_them(tmp_path):
    environ = {"ATEN_CPU_CAPABILITY": "default"}  # a stray setting is replaced, not kept
    assert pin_cpu_kernels(environ, cpuinfo=cpuinfo(tmp_path, "fpu sse2 avx fma avx2")) == PINNED
    assert environ == PINNED
    assert PINNED == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
                      "ONEDNN_MAX_CPU_ISA": "AVX2", "LP_NATIVE_VECTOR_WIDTH": "256"}


def test_nothing_is_pinned_without_avx2_or_when_turned_off(tmp_path):
    environ = {}
    assert pin_cpu_kernels(environ, cpuinfo=cpuinfo(tmp_path, "fpu sse2 avx")) == {}
    assert pin_cpu_kernels(environ, cpuinfo=str(tmp_path / "missing")) == {}
    assert environ == {}
    opted_out = {"LQV_D4RL_PIN_CPU_KERNELS": "0"}
    assert pin_cpu_kernels(opted_out, cpuinfo=cpuinfo(tmp_path, "avx2 fma")) == {}
    assert opted_out == {"LQV_D4RL_PIN_CPU_KERNELS": "0"}


def test_kernel_settings_report_what_is_in_effect():
    import torch  # noqa: F401  (loaded, so its kernel capability is reported)

    settings = kernel_settings()
    assert set(settings) == set(PINNED) | {"torch_cpu_capability"}
    if cpu_has_avx2() and os.environ.get("LQV_D4RL_PIN_CPU_KERNELS") != "0":
        assert {key: settings[key] for key in PINNED} == PINNED


RECORD = """
import hashlib, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_generate import run_state
root = Path({root!r})
run_state(root, levels=["random"])
print(sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*/shard-*.h5")))
"""


@pytest.mark.skipif(not cpu_has_avx2(), reason="pins only on x86-64 CPUs with AVX2")
def test_torchs_scalar_kernels_requested_by_the_user_do_not_change_the_bytes(tmp_path):
    # ATen's scalar kernels change the random level's returns when not pinned (45.6 vs 45.2 mean
    # on walker_walk at full size): pinned, the bytes are those of the default environment
    hashes = []
    for name, extra in (("default", {}), ("scalar", {"ATEN_CPU_CAPABILITY": "default",
                                                     "MKL_CBWR": "COMPATIBLE"})):
        env = {k: v for k, v in os.environ.items() if k not in PINNED}
        code = RECORD.format(tests=str(REPO_ROOT / "tests"), root=str(tmp_path / name))
        done = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.append(done.stdout.strip().splitlines()[-1])
    assert hashes[0] == hashes[1]
