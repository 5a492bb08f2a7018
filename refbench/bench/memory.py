"""(e) Peak memory of each method, full fine-tuning and LoRA."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

# The profiler's C++ logging (kineto) is chatty on a machine without a GPU.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

from .common import World, _log, advance, make_trainer


# -- (e) memory -------------------------------------------------------------------------------
def _profiled_peak(build_and_step: Callable[[], object]) -> tuple[int, object]:
    """Peak bytes held by torch's allocator while ``build_and_step`` runs (from the start)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = build_and_step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, out
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = build_and_step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak, out


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _state_bytes(trainer) -> int:
    """Bytes of every parameter and buffer of the models and frozen encoders, and of the optimizer state."""
    models, backend = trainer.models, trainer.backend
    modules = [models.policy_module, getattr(models, "reference_module", None), getattr(models, "initial_module", None)]
    for name in ("vae", "text_encoders", "components"):
        part = getattr(backend, name, None)
        if isinstance(part, list):
            modules += part
        elif part is not None and hasattr(part, "text_encoder"):
            modules.append(part.text_encoder)
        elif part is not None:
            modules.append(part)
    tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
    tensors += [
        v for state in trainer.optimizer.state.values() for v in state.values() if hasattr(v, "untyped_storage")
    ]
    return _unique_bytes(tensors)


def measure_memory(world: World, method: str, lora_rank: int, accelerator) -> dict:
    """Build the trainer and run 2 steps (tau = monitor_every = 2: step 2 syncs and measures)."""

    def build_and_step():
        trainer = make_trainer(
            world,
            method,
            accelerator,
            lora_rank=lora_rank,
            sections={"method": {"tau": 2}, "training": {"monitor_every": 2}},
        )
        advance(trainer, 2)
        return trainer

    gc.collect()
    peak, trainer = _profiled_peak(build_and_step)
    weights = _unique_bytes(trainer.models.policy_module.parameters())
    out = {"peak_bytes": peak, "state_bytes": _state_bytes(trainer), "unet_weight_bytes": weights}
    del trainer
    gc.collect()
    return out


def memory_table(worlds: list[World], accelerator, *, quick: bool, lora_rank: int = 4) -> dict:
    """Full fine-tuning and LoRA on each world (--quick: toy full and sd15-tiny LoRA only)."""
    table = {}
    for world in worlds:
        for lora in (0, lora_rank):
            if quick and (lora > 0) == (world.name == "toy"):
                continue
            key = f"{world.name}/{'lora' if lora else 'full'}"
            _log(f"[memory] {key}")
            row = {method: measure_memory(world, method, lora, accelerator) for method in ("diff-dpo", "refdpo")}
            diff, ref = row["diff-dpo"], row["refdpo"]
            row["refdpo_over_diffdpo"] = ref["peak_bytes"] / diff["peak_bytes"]
            row["extra_bytes"] = ref["peak_bytes"] - diff["peak_bytes"]
            row["extra_over_unet_weights"] = row["extra_bytes"] / diff["unet_weight_bytes"]
            table[key] = row
    return table
