"""Runs test code in a fresh Python whose CPU backend has n fake devices.

XLA reads the device count once, when jax is first imported, so multi-device tests need their own
process (engineering standards: `XLA_FLAGS=--xla_force_host_platform_device_count=8`). The code
run there may import `assert_fsdp_sharded` from here.
"""

import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import jax

from sgrec_jax.core.distributed import xla_flags_with_host_devices
from sgrec_jax.core.sharding import MIN_FSDP_SIZE

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_on_fake_devices(n: int, code: str, timeout: int = 180) -> str:
    """Runs `code` with n CPU devices from the repository root; returns its stdout."""
    env = {**os.environ, "XLA_FLAGS": xla_flags_with_host_devices(n), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def assert_fsdp_sharded(state: Any, fsdp: int) -> list[str]:
    """Asserts a train state is FSDP-sharded: each array of its params and optimizer state with at
    least MIN_FSDP_SIZE elements keeps 1/fsdp of itself on a device, and Adam's mu and nu are
    among them. Returns those arrays' paths."""
    big = [(jax.tree_util.keystr(path), x) for path, x in
           jax.tree_util.tree_leaves_with_path((state.params, state.opt_state))
           if x.size >= MIN_FSDP_SIZE]
    names = [name for name, _ in big]
    assert any("mu" in n for n in names) and any("nu" in n for n in names), names
    for name, x in big:
        assert x.addressable_shards[0].data.size == x.size // fsdp, (name, x.sharding)
    return names
