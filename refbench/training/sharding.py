"""Sharded training: FSDP2 through accelerate's FSDP plugin.

``accelerate launch --config_file fsdp.yaml -m refbench train ...`` with ``distributed_type: FSDP``
and ``fsdp_version: 2`` shards the policy with accelerate's own preparation (``accelerator.prepare``:
``fully_shard`` per block of the plugin's wrap policy, its mixed precision, its mesh). refbench
adds what accelerate does not know about:

- the frozen copies (the initial model, and the reference when it syncs) are sharded the same way,
  by the same accelerate function (``fsdp2_prepare_model``), so that each parameter's shard sits on
  the same rank in all three models; every reference rule is then elementwise on local shards
  (copy, soft mix, re-initialise), with no communication and no whole model on any rank.
  ``model.offload_frozen`` keeps the frozen copies' shards in CPU memory (FSDP2's CPU offload);
- checkpoints are accelerate's sharded state (``torch.distributed.checkpoint`` folders, one per
  model and one for the optimizer, written by every rank), see ``checkpoint.py``;
- the final output is gathered to rank 0 on the CPU (one full copy, there) and written as the
  same diffusers folder or LoRA file as an unsharded run.

accelerate selects FSDP only on GPU-like devices; on a machine without a GPU (gloo processes)
refbench promotes accelerate's state to FSDP after it starts, so that the code path tested on CPUs
is the one that runs on GPUs (FSDP2 itself runs on gloo).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from ..errors import CheckpointError, ConfigError

__all__ = [
    "check_resume_layout",
    "fsdp_requested",
    "full_tensor",
    "is_sharded",
    "local_shards",
    "make_accelerator",
    "reshard",
    "shard_frozen",
]


def fsdp_requested() -> bool:
    """True under ``accelerate launch`` with an FSDP configuration (or ``--use_fsdp``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _check_plugin(plugin) -> None:
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType

    if plugin.fsdp_version != 2:
        raise ConfigError(
            f"the accelerate config asks for FSDP version {plugin.fsdp_version}; refbench shards with FSDP2 "
            "only: set fsdp_version: 2 in fsdp_config"
        )
    if plugin.state_dict_type != StateDictType.SHARDED_STATE_DICT:
        raise ConfigError(
            f"the accelerate config asks for fsdp_state_dict_type {plugin.state_dict_type.name}; refbench's "
            "checkpoints under FSDP are sharded (each rank writes its shards) and its final outputs are full "
            "diffusers folders: set fsdp_state_dict_type: SHARDED_STATE_DICT"
        )


def make_accelerator(**kwargs):
    """accelerate's ``Accelerator(**kwargs)``; under an FSDP launch, with FSDP2 on CPUs too."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if fsdp_requested() and os.environ.get("FSDP_VERSION", "1") != "2":  # before accelerate builds an FSDP1 plugin
        raise ConfigError(
            f"the accelerate config asks for FSDP version {os.environ.get('FSDP_VERSION', '1')}; refbench shards "
            "with FSDP2 only: set fsdp_version: 2 in fsdp_config"
        )
    accelerator = Accelerator(**kwargs)
    if not fsdp_requested():
        return accelerator
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        # The plugin reads the launch's FSDP_* settings, as accelerate's own start does on GPUs.
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        accelerator.state.distributed_type = DistributedType.FSDP
    if accelerator.distributed_type == DistributedType.FSDP:
        _check_plugin(accelerator.state.fsdp_plugin)
    return accelerator


def is_sharded(accelerator) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False))


@contextmanager
def _offload(plugin, offload: bool):
    """The plugin's CPU offload for the frozen copies only (the policy keeps the launch's setting)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    saved = plugin.cpu_offload
    plugin.cpu_offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if offload else OffloadPolicy()
    try:
        yield
    finally:
        plugin.cpu_offload = saved


def shard_frozen(accelerator, module: torch.nn.Module, *, offload: bool = False) -> torch.nn.Module:
    """A frozen copy sharded as accelerate shards the policy (same wrap policy, mesh and precision)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    module.requires_grad_(False).eval()
    with _offload(accelerator.state.fsdp_plugin, offload):
        return fsdp2_prepare_model(accelerator, module)


def reshard(*modules: torch.nn.Module) -> None:
    """Put every FSDP unit of ``modules`` back in its sharded state (a no-op for other modules).

    FSDP2 leaves the root unit gathered after a forward pass (its heuristic for the root), and a
    frozen copy never runs the backward pass that would reshard it: before its parameters are
    read or written as shards (a reference update, a checkpoint), they are resharded."""
    from torch.distributed.fsdp import FSDPModule

    for module in modules:
        for unit in module.modules():
            if isinstance(unit, FSDPModule):
                unit.reshard()


def local_shards(tensors):
    """Each tensor's shard on this rank (the tensor itself when it is not sharded), sharing its
    storage: what the reference rules write in place."""
    from torch.distributed.tensor import DTensor

    return [t.to_local() if isinstance(t, DTensor) else t for t in tensors]


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (gathered from every rank for a shard; collective: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def check_resume_layout(saved: dict | None, *, sharded: bool, num_processes: int) -> None:
    """A checkpoint resumes under the layout that wrote it: sharded by the same number of ranks, or
    unsharded. (The data split and the accumulation follow the number of processes, so another
    world size would not continue the same run.)"""
    if saved is None:
        return
    layout = saved["state"].get("sharded")
    if layout is None and sharded:
        raise CheckpointError(
            "this run's checkpoint was written without FSDP (data parallel); resume it the same way, "
            "without the FSDP accelerate config"
        )
    if layout is not None and not sharded:
        raise CheckpointError(
            f"this run's checkpoint is sharded by FSDP over {layout['processes']} processes; resume it with "
            f"accelerate launch --config_file <the FSDP config> --num_processes {layout['processes']}"
        )
    if layout is not None and layout["processes"] != num_processes:
        raise CheckpointError(
            f"this run's checkpoint is sharded over {layout['processes']} processes and this launch has "
            f"{num_processes}; resume with --num_processes {layout['processes']} (the data split and the "
            "accumulation follow the number of processes)"
        )
