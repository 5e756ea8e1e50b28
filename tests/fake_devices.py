"""Runs test code in a fresh Python whose CPU backend has n fake devices.

XLA reads the device count once, when jax is first imported, so multi-device tests need their own
process (engineering standards: `XLA_FLAGS=--xla_force_host_platform_device_count=8`).
"""

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_on_fake_devices(n: int, code: str, timeout: int = 180) -> str:
    """Runs `code` with n CPU devices from the repository root; returns its stdout."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout
