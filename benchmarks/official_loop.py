"""Step time of refbench's diff-dpo trainer against the official Diffusion-DPO training loop.

    python benchmarks/official_loop.py [--official PATH/TO/train.py] [--trials 4] [--steps 40]
                                       [--profile] [--out benchmarks/official_loop.json]

Both sides train the same tiny random-weight SD1.5 pipeline (``refbench.tiny``, built here from
configs; nothing is downloaded) on the same toy pairs: 8 pairs per step, 32 px images (16 x 16
latents), fp32, one torch thread, accumulation 1. Three cases run in alternating trials in one
process (each repetition runs every case once, the order rotating), each trial from fresh
weights for ``--steps`` steps; a trial's figure is the median step time over steps 6-40:

- ``official``: the official loop, restated below (``official_step``; the official code is not
  imported or copied into refbench): images decoded and encoded by the VAE every step;
- ``refbench-uncached``: ``Trainer.train()`` with the sd15 preset, images decoded by its
  DataLoader and encoded every step, as the official loop does;
- ``refbench-cached``: the same with ``data.latent_cache`` (``refbench/training/latent_cache.py``):
  latents and text embeddings read from disk, no image decoded, no VAE.

The ratios are refbench / official per repetition: their median and their min-max over the
repetitions. ``--official`` checks first that the lines restated here are still in the given
train.py (SalesforceAIResearch/DiffusionDPO). ``--profile`` adds cProfile timings per step of the
parts of one uncached refbench trial and one official trial (where refbench spends beyond it).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAIRS, RESOLUTION, DATA_PAIRS = 8, 32, 64
# The official lines restated in official_step / OfficialData (train.py at HEAD 5233e75 of
# SalesforceAIResearch/DiffusionDPO), whitespace-insensitive; --official checks they still exist.
OFFICIAL_LINES = [
    'feed_pixel_values = torch.cat(batch["pixel_values"].chunk(2, dim=1))',
    "latents = vae.encode(feed_pixel_values.to(weight_dtype)).latent_dist.sample()",
    "latents = latents * vae.config.scaling_factor",
    "noise = torch.randn_like(latents)",
    "timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)",
    "timesteps = timesteps.chunk(2)[0].repeat(2)",
    "noise = noise.chunk(2)[0].repeat(2, 1, 1, 1)",
    "noisy_latents = noise_scheduler.add_noise(latents,",
    'encoder_hidden_states = text_encoder(batch["input_ids"])[0]',
    "encoder_hidden_states = encoder_hidden_states.repeat(2, 1, 1)",
    "model_losses = (model_pred - target).pow(2).mean(dim=[1,2,3])",
    "ref_losses = (ref_pred - target).pow(2).mean(dim=[1,2,3])",
    "scale_term = -0.5 * args.beta_dpo",
    "inside_term = scale_term * (model_diff - ref_diff)",
    "loss = -1 * F.logsigmoid(inside_term).mean()",
    "avg_loss = accelerator.gather(loss.repeat(args.train_batch_size)).mean()",
    "accelerator.backward(loss)",
    "accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)",
    "optimizer.step()",
    "optimizer.zero_grad()",
    "if random.random() < args.proportion_empty_prompts:",
    "combined_im = torch.cat(im_tup, dim=0) # no batch dim",
    "pixel_values = pixel_values.to(memory_format=torch.contiguous_format).float()",
]


def check_official(path: Path) -> dict[str, int]:
    """Line number in ``path`` of each restated line; SystemExit naming the ones not found."""
    squash = lambda s: "".join(s.split())  # noqa: E731
    lines = [squash(line) for line in path.read_text().splitlines()]
    found, missing = {}, []
    for wanted in OFFICIAL_LINES:
        at = next((i + 1 for i, line in enumerate(lines) if squash(wanted) in line), None)
        (missing.append(wanted) if at is None else found.__setitem__(wanted, at))
    if missing:
        raise SystemExit(f"{path}: the restated loop no longer matches train.py; not found:\n  " + "\n  ".join(missing))
    return found


class OfficialData:
    """train.py's DPO dataset transform and collate (lines 736-806): PIL decode, Resize (bilinear)
    + CenterCrop + ToTensor + Normalize([0.5], [0.5]) per image (--no_hflip: refbench's side has no
    flips either, the latent cache refuses them), winner first by label_0, the two images
    concatenated on channels; captions tokenized (empty with --proportion_empty_prompts)."""

    def __init__(self, table, tokenizer, proportion_empty_prompts: float):
        from torchvision import transforms

        self.rows = table.to_pylist()  # datasets reads the same arrow rows, memory-mapped
        self.tokenizer, self.empty = tokenizer, proportion_empty_prompts
        self.transform = transforms.Compose(
            [
                transforms.Resize(RESOLUTION, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(RESOLUTION),
                transforms.Lambda(lambda x: x),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        import torch
        from PIL import Image

        row = self.rows[index]
        images = [self.transform(Image.open(io.BytesIO(row[c])).convert("RGB")) for c in ("jpg_0", "jpg_1")]
        if row["label_0"] == 0:
            images = images[::-1]
        caption = "" if random.random() < self.empty else row["caption"]
        ids = self.tokenizer(
            [caption],
            max_length=self.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids[0]
        return {"pixel_values": torch.cat(images, dim=0), "input_ids": ids}

    @staticmethod
    def collate(examples):
        import torch

        pixel_values = torch.stack([e["pixel_values"] for e in examples])
        return {
            "pixel_values": pixel_values.to(memory_format=torch.contiguous_format).float(),
            "input_ids": torch.stack([e["input_ids"] for e in examples]),
        }


def official_step(batch, m, accelerator, beta_dpo: float, max_grad_norm: float) -> None:
    """One step of train.py's loop for --train_method dpo on SD1.5 (lines 1012-1167), fp32."""
    import torch
    import torch.nn.functional as F

    unet, ref_unet, vae, text_encoder, noise_scheduler = (
        m["unet"],
        m["ref_unet"],
        m["vae"],
        m["text_encoder"],
        m["scheduler"],
    )
    optimizer, lr_scheduler, weight_dtype = m["optimizer"], m["lr_scheduler"], torch.float32
    with accelerator.accumulate(unet):
        feed_pixel_values = torch.cat(batch["pixel_values"].chunk(2, dim=1))  # 1016
        with torch.no_grad():  # 1027-1029
            latents = vae.encode(feed_pixel_values.to(weight_dtype)).latent_dist.sample()
            latents = latents * vae.config.scaling_factor
        noise = torch.randn_like(latents)  # 1032
        bsz = latents.shape[0]
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device).long()
        timesteps = timesteps.chunk(2)[0].repeat(2)  # 1053-1055: noise and t shared by a pair
        noise = noise.chunk(2)[0].repeat(2, 1, 1, 1)
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)  # 1059
        encoder_hidden_states = text_encoder(batch["input_ids"])[0]  # 1100-1102
        encoder_hidden_states = encoder_hidden_states.repeat(2, 1, 1)
        target = noise  # 1106: epsilon prediction
        model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, added_cond_kwargs=None).sample  # 1114
        model_losses = (model_pred - target).pow(2).mean(dim=[1, 2, 3])  # 1125-1131
        model_losses_w, model_losses_l = model_losses.chunk(2)
        raw_model_loss = 0.5 * (model_losses_w.mean() + model_losses_l.mean())
        model_diff = model_losses_w - model_losses_l
        with torch.no_grad():  # 1132-1140
            ref_pred = ref_unet(noisy_latents, timesteps, encoder_hidden_states, added_cond_kwargs=None).sample.detach()
            ref_losses = (ref_pred - target).pow(2).mean(dim=[1, 2, 3])
            ref_losses_w, ref_losses_l = ref_losses.chunk(2)
            ref_diff = ref_losses_w - ref_losses_l
            raw_ref_loss = ref_losses.mean()
        scale_term = -0.5 * beta_dpo  # 1142-1145
        inside_term = scale_term * (model_diff - ref_diff)
        implicit_acc = (inside_term > 0).sum().float() / inside_term.size(0)
        loss = -1 * F.logsigmoid(inside_term).mean()
        avg_loss = accelerator.gather(loss.repeat(PAIRS)).mean()  # 1149-1157: logging
        avg_loss.item()
        accelerator.gather(raw_model_loss.repeat(PAIRS)).mean().item()
        accelerator.gather(raw_ref_loss.repeat(PAIRS)).mean().item()
        accelerator.gather(implicit_acc).mean().item()
        accelerator.backward(loss)  # 1161-1167
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(unet.parameters(), max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
    loss.detach().item(), lr_scheduler.get_last_lr()[0]  # 1186: the progress bar's postfix


class Setup:
    """The tiny pipeline, the pairs, the refbench config and the latent cache, built once."""

    def __init__(self, root: Path):
        from accelerate import Accelerator

        from refbench.config import load_config
        from refbench.tiny import build_tiny_pipeline
        from refbench.toy.pairs import build_pairs, write_pairs
        from refbench.training.data import load_preference_pairs
        from refbench.training.run import open_latent_cache

        self.root = root
        self.folder = build_tiny_pipeline(root / "sd15-tiny")
        self.table = build_pairs(DATA_PAIRS, "train", seed=1)
        source = write_pairs(self.table, root / "pairs.parquet")
        self.accelerator = Accelerator(mixed_precision="no", cpu=True)
        overrides = {
            "model": {
                "pretrained": str(self.folder),
                "resolution": RESOLUTION,
                "gradient_checkpointing": False,
                "mixed_precision": "no",
            },
            "data": {"source": str(source), "num_workers": 0, "random_flip": False},
            "training": {
                "batch_size": PAIRS,
                "gradient_accumulation_steps": 1,
                "lr_warmup_steps": 0,
                "checkpoint_every": 10**6,
            },
        }
        self.config = load_config(method="diff-dpo", preset="sd15", overrides=overrides, name="bench-diff-dpo")
        cached = copy.deepcopy(overrides)
        cached["data"].update(latent_cache=str(root / "latents"), latent_dtype="float32")
        self.cached_config = load_config(
            method="diff-dpo", preset="sd15", overrides=cached, name="bench-diff-dpo-cached"
        )
        self.pairs = load_preference_pairs(self.config)
        self.cache = open_latent_cache(
            self.cached_config, load_preference_pairs(self.cached_config), self.accelerator, progress=False
        )

    def refbench_trial(self, cached: bool, steps: int) -> list[float]:
        from refbench.training.data import load_preference_pairs
        from refbench.training.trainer import Trainer

        config = self.cached_config if cached else self.config
        config = _with_steps(config, steps)
        pairs = load_preference_pairs(config)
        trainer = Trainer(
            config,
            pairs,
            self.root / "runs" / config.name,
            None,
            accelerator=self.accelerator,
            progress=False,
            latent_cache=self.cache if cached else None,
        )
        trainer.save = lambda: None  # no checkpoints in a timed step
        ends = [time.perf_counter()]
        stop_if_asked = trainer._stop_if_asked

        def timed(step, stop):  # the last call of each step in Trainer.train()
            stop_if_asked(step, stop)
            ends.append(time.perf_counter())

        trainer._stop_if_asked = timed
        trainer.train()
        self.accelerator.free_memory()
        return [b - a for a, b in zip(ends, ends[1:])]

    def official_models(self):
        """train.py lines 560-700 for SD1.5: frozen VAE, text encoder and reference UNet, the
        policy in train mode, torch AdamW with the script's betas and eps, accelerate.prepare."""
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        folder, training = str(self.folder), self.config.training
        m = {
            "scheduler": DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
            "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").requires_grad_(False),
            "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae").requires_grad_(False),
            "ref_unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet").requires_grad_(False),
        }
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
        lr = training.effective_learning_rate(1)
        optimizer = torch.optim.AdamW(
            unet.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=training.weight_decay, eps=1e-8
        )
        lr_scheduler = get_scheduler(
            training.lr_scheduler, optimizer, num_warmup_steps=0, num_training_steps=training.max_steps
        )
        data = OfficialData(self.table, m["tokenizer"], self.config.data.caption_dropout)
        loader = torch.utils.data.DataLoader(
            data, shuffle=True, collate_fn=OfficialData.collate, batch_size=PAIRS, num_workers=0, drop_last=True
        )
        m["unet"], m["optimizer"], m["loader"], m["lr_scheduler"] = self.accelerator.prepare(
            unet, optimizer, loader, lr_scheduler
        )
        m["unet"].train()
        return m

    def official_trial(self, steps: int) -> list[float]:
        m = self.official_models()
        times, beta, max_norm = [], self.config.method.beta, self.config.training.max_grad_norm
        start = time.perf_counter()
        while len(times) < steps:
            for batch in m["loader"]:  # epochs of len(data) / PAIRS steps, as the official loop
                official_step(batch, m, self.accelerator, beta, max_norm)
                end = time.perf_counter()
                times.append(end - start)
                start = end
                if len(times) == steps:
                    break
        self.accelerator.free_memory()
        return times


def _with_steps(config, steps: int):
    import dataclasses

    return dataclasses.replace(config, training=dataclasses.replace(config.training, max_steps=steps))


def trial_figure(times: list[float]) -> float:
    """Median step time over steps 6-40 (1-based) of a trial."""
    return statistics.median(times[5:40])


def profile_parts(run) -> dict[str, float]:
    """Seconds per step of each part of ``run()`` (a trial), from cProfile's cumulative times."""
    profiler = cProfile.Profile()
    profiler.enable()
    times = run()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats
    parts = {  # part -> (file suffix, function name); the largest cumulative time among matches (the outermost)
        "data: DataLoader next (decode, transform, collate)": ("dataloader.py", "__next__"),
        "VAE encode": ("autoencoder_kl.py", "encode"),
        "text encoder": ("modeling_clip.py", "forward"),
        "tokenizer": ("tokenization_utils_base.py", "__call__"),
        "UNet forward (all)": ("unet_2d_condition.py", "forward"),
        "divergence monitor (refbench)": ("monitor.py", "divergences"),
        "backward": ("graph.py", "_engine_run_backward"),
        "grad clipping": ("accelerator.py", "clip_grad_norm_"),
        "optimizer step": ("optimizer.py", "wrapper"),
        "zero_grad": ("optimizer.py", "zero_grad"),
        "gather (official logging)": ("accelerator.py", "gather"),
        "reduce (refbench metrics)": ("accelerator.py", "reduce"),
        "caption dropout (refbench)": ("trainer.py", "_drop_captions"),
        "latent cache read (refbench)": ("latent_cache.py", "pairs"),
    }
    out = {"step": sum(times) / len(times)}
    for name, key in parts.items():
        matches = [
            cumulative
            for (file, _, function), (_, _, _, cumulative, _) in stats.items()
            if file.endswith(key[0]) and function == key[1]
        ]
        out[name] = max(matches, default=0.0) / len(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--official", type=Path, help="the official train.py: check the restated lines against it first"
    )
    parser.add_argument("--trials", type=int, default=4, help="repetitions (each runs every case once)")
    parser.add_argument("--steps", type=int, default=40, help="steps per trial (figures: steps 6-40)")
    parser.add_argument(
        "--profile", action="store_true", help="also profile one uncached refbench and one official trial"
    )
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    found = check_official(args.official) if args.official else None
    import torch

    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(Path(tmp))
        cases = {
            "official": lambda: setup.official_trial(args.steps),
            "refbench-uncached": lambda: setup.refbench_trial(False, args.steps),
            "refbench-cached": lambda: setup.refbench_trial(True, args.steps),
        }
        for run in cases.values():  # warm-up: first allocations, imports, caches
            run()
        figures = {name: [] for name in cases}
        names = list(cases)
        for rep in range(args.trials):
            for name in names[rep % 3 :] + names[: rep % 3]:
                figures[name].append(trial_figure(cases[name]()))
                print(
                    f"[{time.perf_counter() - started:6.1f} s] trial {rep + 1} {name}: "
                    f"{figures[name][-1] * 1e3:.1f} ms/step",
                    file=sys.stderr,
                    flush=True,
                )
        profile = None
        if args.profile:
            profile = {
                "refbench-uncached": profile_parts(cases["refbench-uncached"]),
                "official": profile_parts(cases["official"]),
            }
    ratios = {}
    for name in ("refbench-uncached", "refbench-cached"):
        paired = [a / b for a, b in zip(figures[name], figures["official"])]
        ratios[name] = {
            "median": statistics.median(paired),
            "min": min(paired),
            "max": max(paired),
            "per_trial": paired,
        }
    result = {
        "setup": {
            "pairs_per_step": PAIRS,
            "resolution": RESOLUTION,
            "latents": f"4x{RESOLUTION // 2}x{RESOLUTION // 2}",
            "dtype": "fp32",
            "torch_threads": torch.get_num_threads(),
            "trials": args.trials,
            "steps": args.steps,
            "figure": "median step time over steps 6-40 of each trial",
            "data_pairs": DATA_PAIRS,
            "refbench": "diff-dpo, sd15 preset (monitor every 8 steps on 32 winners, caption dropout 0.2), no flips",
            "official": "train.py's loop restated in benchmarks/official_loop.py (official_step)",
            "official_lines_checked": found,
        },
        "ratio_over_official": ratios,
        "median_seconds_per_step": {k: statistics.median(v) for k, v in figures.items()},
        "seconds_per_step_per_trial": figures,
        "profile_seconds_per_step": profile,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_after": list(os.getloadavg()),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
