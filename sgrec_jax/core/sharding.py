"""Device mesh and sharding rules: data parallelism plus FSDP-sharded parameters.

    mesh = make_mesh(data=-1, fsdp=2)                  # ("data", "fsdp") = (n // 2, 2)
    shardings = shard_params(abstract_state, mesh)     # one NamedSharding per array
    batch = host_to_global(numpy_batch, mesh)          # leading axis split over all devices

Every device holds a different slice of the batch: its leading axis is split over both mesh axes
together. A parameter (or an optimizer moment of the same shape) with at least `min_fsdp_size`
elements is split along its largest dimension that the fsdp axis size divides, so each device
stores 1/fsdp of it; smaller arrays are replicated, since splitting them would cost more in
gathers than it saves in memory. `jit` inserts the all-gathers and reduce-scatters.

The mesh axes are `AxisType.Auto` (jax 0.10 defaults `jax.make_mesh` to Explicit): with Auto the
compiler propagates shardings through the model, so model code needs no sharding annotations and
runs unchanged on one device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# 16k elements (64 KiB in float32): below this an all-gather costs more than the memory it saves.
MIN_FSDP_SIZE = 2**14


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp") mesh over the first data * fsdp of `devices` (default: all devices).

    `data=-1` takes all devices the fsdp axis leaves. The product must divide the device count,
    so a smaller mesh (e.g. one device for a reference run) is allowed.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if fsdp < 1:
        raise ValueError(f"fsdp must be >= 1, got {fsdp}")
    if data == -1:
        if n % fsdp:
            raise ValueError(f"fsdp={fsdp} does not divide the device count {n}")
        data = n // fsdp
    if data < 1:
        raise ValueError(f"data must be >= 1 or -1, got {data}")
    if n % (data * fsdp):
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} = {data * fsdp} devices does not divide "
            f"the device count {n}"
        )
    return jax.make_mesh(
        (data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices[: data * fsdp],
    )


def param_partition_spec(
    shape: Sequence[int], fsdp_size: int, min_fsdp_size: int = MIN_FSDP_SIZE
) -> PartitionSpec:
    """The FSDP rule for one array: split its largest fsdp-divisible dimension, or replicate.

    Ties go to the earliest such dimension, so the choice depends on the shape alone.
    """
    if fsdp_size == 1 or math.prod(shape) < min_fsdp_size:
        return PartitionSpec()
    divisible = [d for d, size in enumerate(shape) if size % fsdp_size == 0]
    if not divisible:
        return PartitionSpec()
    axis = max(divisible, key=lambda d: (shape[d], -d))
    return PartitionSpec(*(FSDP_AXIS if d == axis else None for d in range(len(shape))))


def shard_params(tree: Any, mesh: Mesh, min_fsdp_size: int = MIN_FSDP_SIZE) -> Any:
    """A NamedSharding for every array in `tree` (arrays or ShapeDtypeStructs) by the FSDP rule.

    Applied to a whole train state, optimizer moments get the same sharding as their parameters
    because they have the same shapes.
    """
    fsdp_size = mesh.shape[FSDP_AXIS]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, param_partition_spec(x.shape, fsdp_size, min_fsdp_size)),
        tree,
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (scalars, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (example) axis split over all mesh devices, the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def host_to_global(batch: Any, mesh: Mesh) -> Any:
    """Assembles each process's host-local numpy batch into global, batch-sharded jax.Arrays.

    Every process passes its own rows (as `data.pipeline.train_iterator` yields them); the global
    batch is their concatenation in process order. The local leading axis must split evenly over
    this process's devices in the mesh.
    """
    sharding = batch_sharding(mesh)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def to_global(path: Any, x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % local_devices:
            raise ValueError(
                f"batch field {jax.tree_util.keystr(path)} has shape {x.shape}; its leading "
                f"axis must split evenly over this process's {local_devices} mesh devices"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(to_global, batch)
