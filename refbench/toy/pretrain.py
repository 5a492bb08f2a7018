"""Pretraining of the toy base models on "web-like" data (the analogue of SD1.5 on LAION).

``world="flow"`` trains the flow-matching toy world's SD3 transformer instead (``toy.flow_model``):
velocity MSE at s = sigmoid(n), n ~ N(0, 1), with the UNet world's text encoder frozen and no offset
noise; everything else below (data, caption dropout, determinism, resumption) is shared.

The UNet and the text encoder are trained jointly with the standard epsilon MSE loss on
``render_web`` images of the toy-train prompts (never a toy-test prompt), with ~10% of
captions dropped to "" so that classifier-free guidance has an unconditional model.
The web images are moderately corrupted (wrong colours, counts, shapes, blur, noise), so
the base model is imperfect in the same ways, leaving room for preference fine-tuning.

Offset noise (a per-image, per-channel constant added to the noise, as in SD fine-tunes):
SD's scaled_linear schedule keeps ~0.5% of the signal at t = T. At 16 px the image's
mean colour then survives in x_T (its noise averages over only 256 pixels), so a model
trained without offset reads the background colour from the mean of the initial noise
at sampling time (measured: correlation 0.95, backgrounds random). With offset 0.2 the
mean of x_T carries no usable signal and the model takes the colours from the prompt.
The DPO trainer can keep plain N(0, I) noise.

Determinism and resumption: every step draws its data, timesteps, noise and caption
dropout from generators seeded by (seed, step) alone, and the training state (weights,
AdamW, lr schedule, global RNG states, step) is saved every ``checkpoint_every`` steps.
So the same seed gives the same weights, and an interrupted run resumed from its state
ends with exactly the weights of an uninterrupted one. Float results depend on the torch
thread count, which is therefore fixed by ``num_threads`` (default 1) and recorded in the
state (a mismatch on resume warns). Checked: three separate runs of the default
settings (in separate processes, under different machine load) gave bit-identical weights,
equal to the committed base checkpoint; resumption is checked in the tests.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .model import build_components, encode_prompts, images_to_tensor, save_components

STATE_FILE = "train_state.pt"
MODEL_DIR = "model"


def _lr_lambda(warmup: int, steps: int, final_frac: float = 0.1):
    """Linear warmup, then cosine decay to ``final_frac`` of the peak lr."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _batch(prompts: list, step: int, seed: int, batch_size: int, caption_dropout: float):
    """The step's batch, from a generator seeded by (seed, step) only."""
    from .render import render_web

    rng = np.random.default_rng([seed, step])
    idx = rng.integers(len(prompts), size=batch_size)
    images = np.stack([render_web(prompts[i], rng) for i in idx])
    drop = rng.random(batch_size) < caption_dropout
    texts = ["" if d else prompts[i].text for i, d in zip(idx, drop)]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return images_to_tensor(images), texts, gen


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        # numpy's state as tensors/ints, so that torch.load(weights_only=True) reads it
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interruption never leaves a half-written state


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that decides the weights (a resumed run must match it exactly)."""

    steps: int = 1600
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    warmup: int = 100
    caption_dropout: float = 0.1  # share of empty captions: the unconditional model for CFG
    offset_noise: float = 0.2  # see the module docstring
    snr_gamma: float | None = None  # min-SNR-gamma loss weighting (Hang et al. 2023); None = plain MSE
    # EMA of the weights, saved as the model; None = the last weights. Off: at 1600 steps
    # with a cosine lr decay, EMA 0.999 measured no better (oracle "human" 0.574 vs 0.571).
    ema_decay: float | None = None
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # "unet": the UNet world (epsilon MSE, text encoder trained jointly); "flow": the flow-matching
    # world (velocity MSE at s ~ logit-normal(0, 1), SD3's training density; the text encoder is
    # the UNet world's, frozen). See ``toy.flow_model``.
    world: str = "unet"

    def __post_init__(self) -> None:
        if self.world not in ("unet", "flow"):
            raise ValueError(f"world must be 'unet' or 'flow', got {self.world!r}")
        if self.world == "flow" and (self.offset_noise or self.snr_gamma is not None):
            raise ValueError("the flow world uses neither offset noise nor min-SNR weighting")
        if self.steps < 1 or self.batch_size < 1 or self.warmup < 0:
            raise ValueError("steps and batch_size must be >= 1, warmup >= 0")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")


_D = PretrainSettings()  # the defaults, which made the committed checkpoint
# The flow world's committed checkpoint (toy.flow_model.FLOW_CHECKPOINT): 2400 steps were chosen,
# not tuned, to fit the 20-minute budget with room (a step took 0.29 s on one thread: 11.6 minutes).
FLOW_SETTINGS = PretrainSettings(world="flow", steps=2400, offset_noise=0.0)


def pretrain(
    out_dir: Path | str,
    *,
    steps: int = _D.steps,
    batch_size: int = _D.batch_size,
    lr: float = _D.lr,
    seed: int = _D.seed,
    resume: bool = True,
    progress: bool = True,
    checkpoint_every: int = 200,
    warmup: int = _D.warmup,
    caption_dropout: float = _D.caption_dropout,
    offset_noise: float = _D.offset_noise,
    snr_gamma: float | None = _D.snr_gamma,
    ema_decay: float | None = _D.ema_decay,
    weight_decay: float = _D.weight_decay,
    grad_clip: float = _D.grad_clip,
    stop_after: int | None = None,
    num_threads: int | None = 1,
    world: str = "unet",
) -> Path:
    """Train the toy base model; returns the folder of the saved components.

    The training settings are those of ``PretrainSettings`` (the defaults made the
    committed checkpoint, in 13.5 min on 2 cores). ``out_dir`` receives ``train_state.pt``
    (for resuming) and, when training ends, ``model/`` (``save_components``: unet,
    text_encoder, tokenizer, scheduler; the EMA weights if ``ema_decay`` is set).
    ``stop_after`` ends the run early after that step (state saved, as if interrupted)
    and then returns the state file's path instead; resuming continues to ``steps``.
    ``num_threads`` sets torch's thread count for the run (restored afterwards; None:
    leave it). The default 1 makes the weights independent of the machine's core count
    (float sums depend on the thread count) and behaves well on a busy shared machine.
    """
    config = PretrainSettings(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        warmup=warmup,
        caption_dropout=caption_dropout,
        offset_noise=offset_noise,
        snr_gamma=snr_gamma,
        ema_decay=ema_decay,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        world=world,
    )
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every must be >= 1")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _pretrain(Path(out_dir), config, resume, progress, checkpoint_every, stop_after)
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(
    out_dir: Path, cfg: PretrainSettings, resume: bool, progress: bool, checkpoint_every: int, stop_after: int | None
) -> Path:
    from .prompts import prompt_set

    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    settings = asdict(cfg)

    prompts = prompt_set("toy-train")  # never toy-test: that split measures generalisation
    flow = cfg.world == "flow"
    if flow:
        from .flow_model import build_flow_components, save_flow_components

        comps = build_flow_components(cfg.seed)
        modules = {"transformer": comps.transformer.train()}
    else:
        comps = build_components(cfg.seed)
        modules = {"unet": comps.unet.train(), "text_encoder": comps.text_encoder.train()}
    unet, sched = comps.unet, comps.noise_scheduler
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup, cfg.steps))
    ema = {k: {n: v.detach().clone() for n, v in m.state_dict().items()} for k, m in modules.items()}
    start, history, elapsed, running = 0, [], 0.0, None

    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["settings"] != settings:
            raise ValueError(
                f"{state_path} was made with other settings ({state['settings']}); "
                f"pass resume=False or use another out_dir"
            )
        if state["num_threads"] != torch.get_num_threads():
            warnings.warn(
                f"resuming with {torch.get_num_threads()} torch threads, the state was made with "
                f"{state['num_threads']}: the result may differ in the last float bits",
                stacklevel=2,
            )
        for k, m in modules.items():
            m.load_state_dict(state[k])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        ema = state["ema"]
        _set_rng_states(state["rng"])
        start, history, elapsed, running = state["step"], state["history"], state["elapsed"], state["running"]

    def save(step: int) -> None:
        _save_state(
            state_path,
            {
                "step": step,
                "settings": settings,
                "num_threads": torch.get_num_threads(),
                **{k: m.state_dict() for k, m in modules.items()},
                "ema": ema,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_sched.state_dict(),
                "rng": _rng_states(),
                "history": history,
                "elapsed": elapsed,
                "running": running,
            },
        )

    alphas = None if flow else sched.alphas_cumprod
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="pretrain", unit="step")
    t0 = time.perf_counter()
    for step in range(start, end):
        x0, texts, gen = _batch(prompts, step, cfg.seed, cfg.batch_size, cfg.caption_dropout)
        noise = torch.randn(x0.shape, generator=gen)
        if flow:
            per_sample = _flow_errors(comps, x0, noise, texts, gen)
        else:
            noise = noise + cfg.offset_noise * torch.randn(x0.shape[:2] + (1, 1), generator=gen)
            t = torch.randint(0, len(alphas), (cfg.batch_size,), generator=gen)
            noisy = sched.add_noise(x0, noise, t)
            pred = unet(noisy, t, encoder_hidden_states=encode_prompts(comps, texts)).sample
            per_sample = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))
        if cfg.snr_gamma is not None:
            snr = alphas[t] / (1 - alphas[t])
            per_sample = per_sample * torch.clamp(snr, max=cfg.snr_gamma) / snr
        loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        lr_sched.step()
        if cfg.ema_decay is not None:
            # Warmed-up decay (as diffusers' EMAModel): early averages forget the random init.
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, m in modules.items():
                    for n, v in m.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k][n].lerp_(v, 1.0 - decay)
                        else:
                            ema[k][n].copy_(v)

        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if (step + 1) % 50 == 0:
            history.append((step + 1, running))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_sched.get_last_lr()[0]:.2e}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == end:
            elapsed, t0 = elapsed + time.perf_counter() - t0, time.perf_counter()
            save(step + 1)
    if bar is not None:
        bar.close()
    if end < cfg.steps:
        return state_path

    if cfg.ema_decay is not None:
        for k, m in modules.items():
            m.load_state_dict(ema[k])
    for m in modules.values():
        m.eval()
    if flow:
        return save_flow_components(comps, out_dir / MODEL_DIR)
    return save_components(comps, out_dir / MODEL_DIR)


def _flow_errors(comps, x0: torch.Tensor, noise: torch.Tensor, texts: list[str], gen: torch.Generator) -> torch.Tensor:
    """Per-image velocity MSE at s = sigmoid(n), n ~ N(0, 1) (SD3's logit-normal training density)."""
    from ..method.flow import flow_noisy, flow_velocity, model_timesteps
    from .flow_model import encode_flow_prompts

    sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=gen))
    hidden, pooled = encode_flow_prompts(comps, texts)
    timestep = model_timesteps(sigma, comps.noise_scheduler.config.num_train_timesteps)
    pred = comps.transformer(
        hidden_states=flow_noisy(x0, noise, sigma),
        timestep=timestep,
        encoder_hidden_states=hidden,
        pooled_projections=pooled,
    ).sample
    return (pred.float() - flow_velocity(x0, noise)).pow(2).mean(dim=(1, 2, 3))
