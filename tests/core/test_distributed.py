"""When a run joins jax.distributed; the joining itself is tested by
tests/reliability/test_multihost.py with two real processes."""

import jax
import pytest
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import (
    initialize_distributed,
    is_primary_process,
    xla_flags_with_host_devices,
)


def settings(**overrides) -> ConfigDict:
    return ConfigDict({"enabled": False, "coordinator_address": "", "num_processes": 0,
                       "process_id": -1, "initialization_timeout": 5, **overrides})


def test_single_process_unless_config_or_environment_asks():
    assert not initialize_distributed(settings(), environ={"JAX_NUM_PROCESSES": "2"})
    assert not jax.distributed.is_initialized()
    assert is_primary_process()


def test_malformed_environment_fails_before_joining():
    environ = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": "one"}
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='one'"):
        initialize_distributed(settings(), environ=environ)
    assert not jax.distributed.is_initialized()


def test_child_xla_flags_keep_this_process_flags_and_add_the_device_count():
    # The child compiles as this process does (tests/conftest.py's flags), with its own count.
    environ = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert xla_flags_with_host_devices(8, environ) == (
        "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=8")
    assert xla_flags_with_host_devices(2, {}) == "--xla_force_host_platform_device_count=2"
    with pytest.raises(ValueError, match="at least 1 host device, got 0"):
        xla_flags_with_host_devices(0, {})
