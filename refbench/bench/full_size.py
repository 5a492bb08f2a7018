"""`refbench bench --full-size`: SD1.5 and SDXL at their real sizes, from configs shipped here.

The UNet, VAE and text encoders are built from the architectures' published configurations
(each backend's ``full_size``; random weights, nothing is fetched), saved as a pipeline folder
with an offline byte-level tokenizer, and trained through the real trainer at 512 / 1024 px,
batch 1 pair, with the presets' precision and gradient checkpointing. Per (model, method,
fine-tuning): the seconds per optimizer step of one micro-batch and the peak memory (on a GPU
the allocator's peak, on a CPU the process's peak RSS, which includes every earlier case of the
same run).
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import torch

__all__ = ["build_full_size_pipeline", "full_size_bench", "parameter_counts"]

TEXT_COMMON = dict(vocab_size=49408, max_position_embeddings=77)


def _full_size(kind: str) -> dict:
    """The released model's configurations, from the kind's backend."""
    from ..errors import ConfigError
    from ..model_kinds import MODEL_KINDS
    from ..training.backends import backend_class

    spec = backend_class(kind).full_size
    if spec is None:
        having = [name for name in MODEL_KINDS if backend_class(name).full_size is not None]
        raise ConfigError(f"no full-size configuration for {kind}; valid: {', '.join(having)}")
    return spec


def _modules(kind: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = _full_size(kind)
    texts = [CLIPTextModel(CLIPTextConfig(**TEXT_COMMON, **spec["text"][0]))]
    if len(spec["text"]) > 1:
        texts.append(CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_COMMON, **spec["text"][1])))
    return UNet2DConditionModel(**spec["unet"]), AutoencoderKL(**spec["vae"]), texts


def parameter_counts(kind: str) -> dict[str, int]:
    """Parameters of each part, counted on empty (meta) weights: nothing is allocated."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet, vae, texts = _modules(kind)
    counts = {"unet": sum(p.numel() for p in unet.parameters()), "vae": sum(p.numel() for p in vae.parameters())}
    for index, text in enumerate(texts):
        counts["text_encoder" + ("_2" if index else "")] = sum(p.numel() for p in text.parameters())
    return counts


def build_full_size_pipeline(folder: Path, kind: str) -> Path:
    """Random-weight ``kind`` at full size as a pipeline folder (SD1.5 ~4 GB, SDXL ~14 GB on disk)."""
    from diffusers import DDPMScheduler

    from ..toy.model import write_tokenizer_files
    from ..training.backends import backend_class

    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    unet, vae, texts = _modules(kind)
    for index, text in enumerate(texts):
        suffix = "_2" if index else ""
        write_tokenizer_files(folder / f"tokenizer{suffix}", words=[])
        text.save_pretrained(str(folder / f"text_encoder{suffix}"))
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
    ).save_pretrained(str(folder / "scheduler"))
    backend_class(kind).write_pipeline_index(folder)
    return folder


def full_size_bench(
    root: Path,
    *,
    kinds=("sd15",),
    methods=("diff-dpo", "refdpo"),
    lora_ranks=(64,),
    optimizers=("adamw",),
    steps: int = 2,
) -> list[dict]:
    """One row per case: seconds per optimizer step (after the first) and peak memory."""
    from ..config import load_config
    from ..toy.pairs import build_pairs, write_pairs
    from ..training.data import load_preference_pairs
    from ..training.sharding import make_accelerator
    from ..training.trainer import Trainer
    from .common import advance

    gpu = torch.cuda.is_available()
    rows = []
    pairs_file = write_pairs(build_pairs(8, "train", seed=0), Path(root) / "pairs.parquet")
    for kind in kinds:
        folder = build_full_size_pipeline(Path(root) / f"{kind}-full", kind)
        for method in methods:
            for rank in lora_ranks:
                for optimizer in optimizers:
                    config = load_config(
                        method=method,
                        preset=kind,
                        name=f"full-{kind}-{method}",
                        overrides={
                            "model": {"pretrained": str(folder), "lora_rank": rank, "vae": None},
                            "data": {"source": str(pairs_file), "num_workers": 0},
                            "training": {
                                "max_steps": steps,
                                "batch_size": 1,
                                "gradient_accumulation_steps": 1,
                                "optimizer": optimizer,
                                "monitor_size": 1,
                                "monitor_every": 1000,
                                "checkpoint_every": 1000,
                                "lr_warmup_steps": 0,
                            },
                        },
                    )
                    accelerator = make_accelerator(  # FSDP2 under an FSDP accelerate launch
                        mixed_precision=config.model.mixed_precision if gpu else "no", cpu=not gpu
                    )
                    if gpu:
                        torch.cuda.reset_peak_memory_stats()
                    trainer = Trainer(
                        config,
                        load_preference_pairs(config),
                        Path(root) / "runs" / config.name,
                        None,
                        accelerator=accelerator,
                        progress=False,
                    )
                    trainer.save = lambda: None
                    times = [advance(trainer, 1) for _ in range(steps)]  # the first includes warm-up
                    peak = (
                        torch.cuda.max_memory_allocated()
                        if gpu
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                    )
                    rows.append(
                        {
                            "model": kind,
                            "method": method,
                            "fine_tuning": f"LoRA {rank}" if rank else "full",
                            "optimizer": optimizer,
                            "device": "gpu" if gpu else "cpu",
                            "precision": config.model.mixed_precision if gpu else "fp32",
                            "resolution": config.model.resolution,
                            "step_seconds": times[1:] or times,
                            "peak_gb": round(peak / 2**30, 2),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
                    del trainer
    return rows
