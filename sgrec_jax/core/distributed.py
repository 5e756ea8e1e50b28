"""Joins the processes of a multi-host run (`jax.distributed`) before any JAX work.

    initialize_distributed(config.distributed)   # first thing in an entry point
    if is_primary_process(): write_json(...)     # one copy of each run-level file

A run spans several processes (TPU pod hosts, GPU nodes, or local CPU processes in tests) when
the config or the environment asks for it:

- `config.distributed.enabled`: coordinator_address ("host:port" of process 0), num_processes
  and process_id are taken from the config where set, else detected by JAX (Cloud TPU slices,
  SLURM, Open MPI), so on a TPU pod `--config.distributed.enabled=True` is enough;
- the environment: `JAX_COORDINATOR_ADDRESS` (JAX's own variable) with `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID` (read here; left unset, JAX detects them from the cluster as above).

Each process then sees every device of the run in `jax.devices()`; the mesh spans them all, the
data pipeline gives each process its block of every batch (`jax.process_index()`), Orbax writes
each process's shards of one checkpoint, and only process 0 writes logs and result files.
Cross-process collectives on CPU use gloo (JAX's default `jax_cpu_collectives_implementation`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
from absl import logging

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def initialize_distributed(
    settings: Any, environ: Mapping[str, str] | None = None
) -> bool:
    """Calls `jax.distributed.initialize` if `settings` or the environment ask for it.

    Args:
      settings: the `distributed` config section: enabled (bool), coordinator_address ("" =
        detect), num_processes (0 = detect), process_id (-1 = detect), initialization_timeout
        (seconds to wait for the other processes).
      environ: the environment (default os.environ).

    Returns:
      Whether this process joined a distributed run. Must run before anything touches a JAX
      backend (jax.devices(), any computation); a second call is a no-op.
    """
    environ = os.environ if environ is None else environ
    from_env = bool(environ.get(COORDINATOR_ENV))
    if not (settings.enabled or from_env):
        return False
    if jax.distributed.is_initialized():
        return True
    num_processes = settings.num_processes or _env_int(environ, NUM_PROCESSES_ENV)
    process_id = settings.process_id if settings.process_id >= 0 else None
    if process_id is None:
        process_id = _env_int(environ, PROCESS_ID_ENV)
    coordinator = settings.coordinator_address or environ.get(COORDINATOR_ENV) or None
    logging.info(
        "joining a distributed run: coordinator %s, process %s of %s (None = detected)",
        coordinator, process_id, num_processes,
    )
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        initialization_timeout=settings.initialization_timeout,
    )
    logging.info(
        "process %d of %d: %d local of %d devices", jax.process_index(), jax.process_count(),
        jax.local_device_count(), jax.device_count(),
    )
    return True


def is_primary_process() -> bool:
    """Whether this process writes the run's shared files (logs, caches, results): process 0."""
    return jax.process_index() == 0


def xla_flags_with_host_devices(devices: int, environ: Mapping[str, str] = os.environ) -> str:
    """XLA_FLAGS for a child process whose CPU backend has `devices` devices: this process's
    flags (`environ`'s XLA_FLAGS, kept so its compiler options carry over) plus
    --xla_force_host_platform_device_count. XLA reads the count once, when jax is first imported,
    so a different device count needs a fresh process (benchmarks, multi-device tests)."""
    if devices < 1:
        raise ValueError(f"a child process needs at least 1 host device, got {devices}")
    flags = environ.get("XLA_FLAGS", "")
    return f"{flags} --xla_force_host_platform_device_count={devices}".strip()
