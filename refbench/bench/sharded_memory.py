"""Memory per rank under FSDP (`refbench bench --full-size --memory-table`): arithmetic from the
released denoisers' configurations, counted on empty (meta) weights; nothing is allocated.

Per rank, for full fine-tuning with AdamW (what refbench keeps, see ``training/sharding.py``):

- the policy's shards: fp32 weights (4 bytes a parameter), fp32 gradients (4) and AdamW's two
  moments (8): 16 P / N bytes;
- the frozen copies' shards, fp32 like the policy they were copied from: the initial model, which
  is also a fixed reference (diff-dpo: one copy), and a syncing reference (refdpo: two copies),
  4 P / N bytes each; none on the device with ``model.offload_frozen`` (they wait in CPU memory);
- the gathered units: FSDP2 gathers one unit (a transformer / UNet block, the model's
  ``_no_split_modules``) at a time in the compute precision (bf16, 2 bytes) and prefetches the
  next, and the root's own parameters (embeddings, final layers) stay gathered: 2 x 2 x (largest
  unit) + 2 x (root) bytes, plus that unit's fp32 gradient before it is reduce-scattered (4 x unit).

Not counted: activations (they depend on resolution, batch and gradient checkpointing), the VAE and
text encoders (none with a latent cache; T5-XXL alone is 4.7 B parameters), allocator overhead.
N = 1 is data parallelism: every rank holds everything.
"""

from __future__ import annotations

import functools

GB = 1e9

# The released denoisers' configurations (diffusers config.json of each model's denoiser folder).
SD35_MEDIUM_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
SD35_LARGE_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=38,
    attention_head_dim=64,
    num_attention_heads=38,
    joint_attention_dim=4096,
    caption_projection_dim=2432,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
    qk_norm="rms_norm",
)

MODELS = ("sdxl", "sd35-medium", "sd35-large")
METHODS = {"diff-dpo": 1, "refdpo": 2}  # frozen copies: the initial model (= fixed reference), + a syncing reference


def _empty_denoiser(model: str):
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    from ..training.backends.sd import SDXL_FULL_SIZE

    with init_empty_weights():
        if model == "sdxl":
            return UNet2DConditionModel(**SDXL_FULL_SIZE["unet"])
        config = {"sd35-medium": SD35_MEDIUM_TRANSFORMER, "sd35-large": SD35_LARGE_TRANSFORMER}[model]
        return SD3Transformer2DModel(**config)


def fsdp_units(module) -> tuple[int, int, int]:
    """(parameters, largest unit's, root's own): the units are the modules whose class is in the
    model's ``_no_split_modules`` (accelerate's transformer-based wrap), each counting the parameters
    not inside a smaller unit; the root unit holds the rest."""
    names = set(getattr(module, "_no_split_modules", None) or ())
    counted: set[int] = set()
    units = []
    # Bottom-up, as FSDP wraps: a unit's parameters exclude those of the units inside it.
    for sub in reversed(list(module.modules())):
        if sub is not module and type(sub).__name__ in names:
            own = [p for p in sub.parameters() if id(p) not in counted]
            counted.update(id(p) for p in own)
            units.append(sum(p.numel() for p in own))
    total = sum(p.numel() for p in module.parameters())
    root = sum(p.numel() for p in module.parameters() if id(p) not in counted)
    return total, max(units, default=0), root


@functools.cache
def model_units(model: str) -> tuple[int, int, int]:
    """``fsdp_units`` of a released denoiser (counted once a process)."""
    return fsdp_units(_empty_denoiser(model))


def memory_rows(models=MODELS, ranks=(1, 2, 4, 8), offload_frozen: bool = False) -> list[dict]:
    rows = []
    for model in models:
        total, unit, root = model_units(model)
        working = (2 * 2 * unit + 4 * unit + 2 * root) / GB
        for method, copies in METHODS.items():
            for n in ranks:
                policy = 16 * total / n / GB
                frozen = 0.0 if offload_frozen else copies * 4 * total / n / GB
                gathered = working if n > 1 else 0.0  # data parallel: nothing is gathered
                rows.append(
                    {
                        "model": model,
                        "parameters_b": round(total / 1e9, 3),
                        "largest_unit_m": round(unit / 1e6, 1),
                        "method": method,
                        "ranks": n,
                        "policy_gb": round(policy, 2),
                        "frozen_gb": round(frozen, 2),
                        "gathered_gb": round(gathered, 2),
                        "per_rank_gb": round(policy + frozen + gathered, 2),
                    }
                )
    return rows


def memory_table(rows: list[dict]) -> str:
    """Markdown: one line per (model, method), one column per number of ranks."""
    ranks = sorted({row["ranks"] for row in rows})
    head = "| model | parameters | method | " + " | ".join(f"{n} rank{'s' if n > 1 else ''}" for n in ranks) + " |"
    lines = [head, "|" + "---|" * (3 + len(ranks))]
    seen = []
    for row in rows:
        key = (row["model"], row["method"])
        if key in seen:
            continue
        seen.append(key)
        cells = {r["ranks"]: r["per_rank_gb"] for r in rows if (r["model"], r["method"]) == key}
        lines.append(
            f"| {row['model']} | {row['parameters_b']:.2f} B | {row['method']} | "
            + " | ".join(f"{cells[n]:.1f} GB" for n in ranks)
            + " |"
        )
    return "\n".join(lines)
