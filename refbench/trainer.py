"""The one trainer: every method of the paper is a configuration of this loop.

Per optimizer step, for each micro-batch of B pairs:
  1. winners and losers share noise eps and timestep t ~ timestep_sampler;
  2. the policy runs on the concatenated 2B batch with gradients, the reference without
     (reference-free objectives, sft and mapo, skip the reference pass);
  3. loss = the objective's loss (objectives.OBJECTIVES: dpo, dspo, kto, mapo) with
     weight = lambda(t), or the SFT loss on winners.
Then the optimizer steps, and the reference-update rule decides: at multiples of tau the
reference becomes (a mix with) the policy, D(ref, init) is measured on a few winners and
averaged over processes, and past delta the reference freezes or returns to init. Every
``monitor_every`` steps the divergences of policy and reference from init are logged.

Randomness is a function of (seed, step): data order, noise and timesteps come from
generators seeded per step, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import hashlib
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .backends import Backend, Conditioning, load_backend
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import RunConfig
from .data import PreferencePairs
from .divergence import divergence
from .losses import per_sample_error, sft_loss
from .modelset import POLICY, REFERENCE, build_model_set
from .objectives import OBJECTIVES, PairForward
from .reference_update import Action, ReferenceUpdater
from .run_log import RunLog
from .timesteps import make_timestep_sampler, reward_scale


def step_generator(seed: int, *keys: object) -> torch.Generator:
    """A generator whose state depends only on (seed, keys): no RNG state to checkpoint."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class PairOrder:
    """Pair indices of every micro-batch: epochs of seeded permutations, split across processes."""

    def __init__(self, num_pairs: int, seed: int):
        self.num_pairs, self.seed = num_pairs, seed
        self._permutations: dict[int, np.ndarray] = {}

    def indices(self, micro_step: int, batch_size: int, process: int, num_processes: int) -> list[int]:
        start = (micro_step * num_processes + process) * batch_size
        out = []
        for position in range(start, start + batch_size):
            epoch, offset = divmod(position, self.num_pairs)
            if epoch not in self._permutations:
                self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)}
            out.append(int(self._permutations[epoch][offset]))
        return out


@dataclass
class StepBatch:
    x0: torch.Tensor  # (2B, ...) winners then losers (winners only for SFT)
    cond: Conditioning  # (B, ...)
    pairs: int


class TrainingInterrupted(Exception):
    """Raised at a step boundary after Ctrl-C / SIGTERM, once the checkpoint is saved."""


class TrainingDiverged(Exception):
    """Raised at a step boundary once ``training.max_nonfinite_steps`` steps had a non-finite loss
    or gradient (none of them reached the weights); the metrics logged so far are flushed."""


@contextmanager
def stop_requests():
    """Turn Ctrl-C and SIGTERM into a flag the loop reads between steps, so a stop never
    lands half-way through an optimizer step (whose state would then not match its count)."""
    requested = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested["stop"]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        requested["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    def __init__(self, config: RunConfig, pairs: PreferencePairs, run_dir: Path, run_log: RunLog | None,
                 accelerator=None, progress: bool = True):
        from accelerate import Accelerator

        self.config, self.pairs, self.run_dir, self.progress = config, pairs, Path(run_dir), progress
        self.accelerator = accelerator or Accelerator(mixed_precision=config.model.mixed_precision, cpu=not torch.cuda.is_available())
        self.log = run_log if self.accelerator.is_main_process else None
        method, training = config.method, config.training
        self.backend: Backend = load_backend(config.model, device=str(self.accelerator.device))
        if config.model.gradient_checkpointing:
            self.backend.unet.enable_gradient_checkpointing()
        self.models = build_model_set(self.backend.unet, reference_mode=method.reference, lora_rank=config.model.lora_rank)
        self.sampler = make_timestep_sampler(method.timestep_sampler, self.backend.num_train_timesteps,
                                             gamma=method.gamma, bins=method.bins)
        self.lambdas = reward_scale(method.reward_scale, self.backend.alphas_cumprod).to(self.accelerator.device)
        self.updater = ReferenceUpdater(method.reference_rule())
        self.learning_rate = training.effective_learning_rate(self.accelerator.num_processes)
        # foreach: one kernel per parameter group instead of a Python loop per tensor (bit-identical results)
        optimizer = torch.optim.AdamW(self.models.trainable_parameters(), lr=self.learning_rate, foreach=True,
                                      weight_decay=training.weight_decay)
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(training.lr_scheduler, optimizer, num_warmup_steps=training.lr_warmup_steps,
                                          num_training_steps=training.max_steps)
        # Only the policy is wrapped (DDP across processes); the frozen models run locally.
        self.policy_forward, self.optimizer = self.accelerator.prepare(self.models.policy_module, optimizer)
        self.order = PairOrder(len(pairs), training.seed)
        self.step, self.elapsed, self.skipped_steps = 0, 0.0, 0
        self.nonfinite_steps = 0  # skipped for a non-finite loss or gradient (also in skipped_steps)
        self._monitor = None
        self._encoded: dict[int, tuple[torch.Tensor, Conditioning] | None] | None = {} if config.data.cache_latents else None

    # -- data ---------------------------------------------------------------------------
    def _batch(self, micro_step: int) -> StepBatch | None:
        acc, training = self.accelerator, self.config.training
        indices = self.order.indices(micro_step, training.batch_size, acc.process_index, acc.num_processes)
        if self._encoded is not None:  # data.cache_latents: encode each pair once, reuse every epoch
            return self._cached_batch(indices)
        collated = PreferencePairs.collate([self.pairs[i] for i in indices])
        if collated is None:
            return None
        captions, winners, losers = collated
        return self._encode(captions, winners, losers)

    def _encode(self, captions: list[str], winners: np.ndarray, losers: np.ndarray) -> StepBatch:
        images = winners if self.config.method.objective == "sft" else np.concatenate([winners, losers])
        with torch.no_grad():
            x0 = self.backend.encode_images(images)
            cond = self.backend.encode_text(captions)
        return StepBatch(x0, cond, len(captions))

    def _cached_batch(self, indices: list[int]) -> StepBatch | None:
        """VAE latents and text embeddings kept in memory (on the CPU) per pair after their first use."""
        missing = [i for i in indices if i not in self._encoded]
        usable = [(i, item) for i, item in ((i, self.pairs[i]) for i in missing) if item is not None]
        if usable:
            captions, winners, losers = PreferencePairs.collate([item for _, item in usable])
            fresh = self._encode(captions, winners, losers)
            n = fresh.pairs
            for k, (i, _) in enumerate(usable):
                x0 = fresh.x0[[k]] if fresh.x0.shape[0] == n else fresh.x0[[k, n + k]]
                self._encoded[i] = (x0.cpu(), fresh.cond.select(slice(k, k + 1)).to("cpu"))
        for i in missing:
            self._encoded.setdefault(i, None)  # unreadable: skipped from now on, counted once
        entries = [self._encoded[i] for i in indices if self._encoded[i] is not None]
        if not entries:
            return None
        device = self.accelerator.device
        x0 = torch.cat([e[0][:1] for e in entries] + [e[0][1:] for e in entries]).to(device)
        hidden = torch.cat([e[1].hidden for e in entries]).to(device)
        added = {k: torch.cat([e[1].added[k] for e in entries]).to(device) for k in entries[0][1].added}
        return StepBatch(x0, Conditioning(hidden, added), len(entries))

    # -- one micro-batch ----------------------------------------------------------------
    def _micro_step(self, batch: StepBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        method, backend, device = self.config.method, self.backend, self.accelerator.device
        pairs = batch.pairs
        noise = torch.randn(batch.x0[:pairs].shape, generator=generator).to(device)
        timesteps = self.sampler.sample(pairs, generator=generator).to(device)
        copies = batch.x0.shape[0] // pairs  # 2 for preference pairs, 1 for SFT
        noise, timesteps_all = noise.repeat(copies, 1, 1, 1), timesteps.repeat(copies)
        x_t = backend.add_noise(batch.x0, noise, timesteps_all)
        target = backend.target(batch.x0, noise, timesteps_all)
        cond = batch.cond.repeat(copies)
        with self.accelerator.autocast(), self.models.use(POLICY, self.policy_forward) as policy:
            model_pred = backend.predict(policy, x_t, timesteps_all, cond)
        if method.objective == "sft":
            model_err = per_sample_error(model_pred, target)
            return {"loss": sft_loss(model_err), "model_err_w": model_err.detach().mean()}
        ref_pred = None
        if method.reference != "none":  # reference-free objectives (mapo) never run a reference
            with torch.no_grad(), self.accelerator.autocast(), self.models.use(REFERENCE) as reference:
                ref_pred = backend.predict(reference, x_t, timesteps_all, cond)
        forward = PairForward(pairs, target, model_pred, ref_pred, self.lambdas[timesteps], backend.num_train_timesteps)
        out = OBJECTIVES[method.objective](method, forward)
        model_w, model_l = forward.halves(forward.model_err.detach())
        values = {"loss": out.loss, "accuracy": torch.tensor(out.accuracy), "margin": out.margin.mean(),
                  "model_err_w": model_w.mean(), "model_err_l": model_l.mean()}
        if ref_pred is not None:
            ref_w, ref_l = forward.halves(forward.ref_err)
            values.update(ref_err_w=ref_w.mean(), ref_err_l=ref_l.mean())
        return values

    # -- divergence monitor -------------------------------------------------------------
    def _monitor_set(self) -> tuple[torch.Tensor, Conditioning, torch.Tensor, torch.Tensor]:
        """The divergence monitor's fixed inputs: winners of a few pairs drawn once per process,
        timesteps spread evenly over [0, T) and noise fixed once. With the same inputs at every
        measurement (common random numbers), D is a smooth function of the weights: it stays
        constant while the reference is frozen, and the delta decision does not hinge on which
        images and timesteps a step happened to draw."""
        if self._monitor is None:
            acc, backend = self.accelerator, self.backend
            size = min(self.config.training.monitor_size, len(self.pairs))
            generator = step_generator(self.config.training.seed, "monitor", acc.process_index)
            chosen = torch.randperm(len(self.pairs), generator=generator)[: size * 4].tolist()
            items = [item for item in (self.pairs[i] for i in chosen) if item is not None][:size]
            captions, winners, _ = PreferencePairs.collate(items)
            with torch.no_grad():
                x0, cond = backend.encode_images(winners), backend.encode_text(captions)
            count = len(captions)
            timesteps = ((torch.arange(count) + 0.5) * backend.num_train_timesteps / count).long().to(acc.device)
            noise = torch.randn(x0.shape, generator=generator).to(acc.device)
            self._monitor = (x0, cond, timesteps, noise)
            self._monitor_cache: dict[str, tuple[int, torch.Tensor]] = {}  # frozen models' errors, see _monitor_errors
        return self._monitor

    @torch.no_grad()
    def _monitor_errors(self, name: str) -> torch.Tensor:
        """Per-sample errors of one model on the monitor set. The inputs never change, so the
        frozen models' errors are computed once and reused: the initial model's for the whole run,
        the reference's until its weights next change (``models.reference_version``: a sync, a
        re-init, a load). Only the policy, which moves every step, runs at every measurement."""
        if name == REFERENCE and self.config.method.reference != "sync":
            name = "initial"  # a fixed reference is the initial model
        version = {"initial": 0, REFERENCE: self.models.reference_version}.get(name)  # None: never cached
        x0, cond, timesteps, noise = self._monitor_set()
        cached = self._monitor_cache.get(name)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        backend = self.backend
        x_t, target = backend.add_noise(x0, noise, timesteps), backend.target(x0, noise, timesteps)
        with self.accelerator.autocast(), self.models.use(name) as module:
            # The initial model runs in its module's own mode, as it always has (with LoRA that is the
            # shared UNet's train mode; switching it changes D in the last bits); the others in eval.
            was_training = module.training
            if name != "initial":
                module.eval()
            errors = backend.errors(module, x_t, timesteps, cond, target)
            module.train(was_training)
        if version is not None:
            self._monitor_cache[name] = (version, errors)
        return errors

    @torch.no_grad()
    def _divergences(self, which: tuple[str, ...]) -> dict[str, float]:
        """D(model, init) for each named model on the monitor set, averaged over processes so
        every process takes the same decision."""
        init_err = self._monitor_errors("initial")
        values = [divergence(self._monitor_errors(name), init_err) for name in which]
        reduced = self.accelerator.reduce(torch.stack(values).float().to(self.accelerator.device), reduction="mean")
        return {name: float(v) for name, v in zip(which, reduced.cpu())}

    # -- reference update -----------------------------------------------------------------
    def _update_reference(self, step: int) -> dict[str, float]:
        if not self.updater.should_sync(step):
            return {}
        rule = self.updater.rule
        self.models.sync_reference(rule.mixup_alpha)
        if rule.mixup_alpha == 1.0:  # a hard copy: the policy holds the reference's weights, so the same errors
            measured = self._divergences((REFERENCE,))
            measured = {POLICY: measured[REFERENCE], REFERENCE: measured[REFERENCE]}
        else:
            measured = self._divergences((POLICY, REFERENCE))
        action = self.updater.after_sync(step, measured[REFERENCE])
        if action is Action.REINIT:
            self.models.reset_reference()
            measured[REFERENCE] = 0.0
        if self.log:
            for event in self.updater.events:
                if event.step == step:
                    self.log.event(step, event.kind, event.divergence)
        return measured

    # -- checkpoints ----------------------------------------------------------------------
    def _checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def save(self) -> None:
        # Metrics and events first: a checkpoint at step N promises that every row up to N is
        # committed, since a run resumed from it starts at N + 1 and never logs them again. While the
        # store stays busy, the previous checkpoint is kept and the next one tries again.
        committed = self.log.flush() if self.log else True
        if self.accelerator.is_main_process and committed:
            save_checkpoint(
                self._checkpoint_dir(),
                policy=self.models.policy_state(),
                reference=self.models.reference_state() if self.config.method.reference == "sync" else None,
                optimizer=self.optimizer.state_dict(), lr_scheduler=self.lr_scheduler.state_dict(),
                state={"step": self.step, "elapsed": self.elapsed, "skipped_steps": self.skipped_steps,
                       "nonfinite_steps": self.nonfinite_steps,
                       "updater": self.updater.state_dict()},
            )
        self.accelerator.wait_for_everyone()

    def restore(self) -> bool:
        if not has_checkpoint(self._checkpoint_dir()):
            return False
        saved = load_checkpoint(self._checkpoint_dir())
        self.models.load_policy_state(saved["policy"])
        if saved["reference"] is not None:
            self.models.load_reference_state(saved["reference"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.lr_scheduler.load_state_dict(saved["lr_scheduler"])
        state = saved["state"]
        self.step, self.elapsed, self.skipped_steps = state["step"], state["elapsed"], state["skipped_steps"]
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self.updater.load_state_dict(state["updater"])
        return True

    def process_report(self) -> list[dict]:
        """Per process: a checksum of the policy and reference weights and the reference events.
        With DDP every process must hold the same weights and have taken the same decisions."""
        from accelerate.utils import gather_object

        def checksum(tensors) -> float:
            return float(sum(t.detach().double().abs().sum() for t in tensors))

        reference = self.models.reference_state().values() if self.config.method.reference == "sync" else []
        mine = {"process": self.accelerator.process_index, "policy_checksum": checksum(self.models.policy_state().values()),
                "reference_checksum": checksum(reference), "events": [vars(e) for e in self.updater.events]}
        return gather_object([mine])

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm.auto import tqdm

        training = self.config.training
        accumulation = training.gradient_accumulation_steps
        bar = tqdm(total=training.max_steps, initial=self.step, desc=self.config.name, unit="step",
                   disable=not (self.progress and self.accelerator.is_main_process), dynamic_ncols=True)
        last_divergence = {}
        with stop_requests() as requested:
            self._loop(training, accumulation, bar, last_divergence, requested)
        bar.close()

    def _loop(self, training, accumulation, bar, last_divergence, requested) -> None:
        while self.step < training.max_steps:
            started = time.perf_counter()
            step = self.step + 1
            totals: dict[str, torch.Tensor] = {}
            batch = None
            nonfinite_loss = torch.zeros(1, device=self.accelerator.device)  # micro-batches with a NaN/Inf loss
            for micro in range(accumulation):
                micro_batch = self._batch((step - 1) * accumulation + micro)
                if micro_batch is None:  # every image of this micro-batch was unreadable
                    continue
                batch = micro_batch
                generator = step_generator(training.seed, "step", step, micro, self.accelerator.process_index)
                # Gradients are all-reduced across processes once, on the last micro-batch.
                context = self.accelerator.no_sync(self.policy_forward) if micro < accumulation - 1 else nullcontext()
                with context:
                    values = self._micro_step(batch, generator)
                    nonfinite_loss += (~torch.isfinite(values["loss"].detach())).any().float()
                    self.accelerator.backward(values["loss"] / accumulation)
                for key, value in values.items():
                    totals[key] = totals.get(key, 0.0) + value.detach().float() / accumulation
            grad_norm = self.accelerator.clip_grad_norm_(self.models.trainable_parameters(), training.max_grad_norm)
            # A non-finite loss (an Inf loss can have finite gradients) or gradient norm on any process:
            # the step is skipped on every process, so it never reaches the weights.
            if self.accelerator.num_processes > 1:
                nonfinite_loss = self.accelerator.reduce(nonfinite_loss, reduction="sum")
            loss_ok, grad_ok = nonfinite_loss.item() == 0, bool(torch.isfinite(torch.as_tensor(grad_norm)))
            nonfinite = None
            if batch is None:
                self.skipped_steps += 1  # nothing usable in this step
            elif loss_ok and grad_ok:
                self.optimizer.step()
            elif loss_ok and self.accelerator.scaler is not None:
                # fp16 loss scaling: an overflowing gradient is the scaler's to handle; its step skips the
                # update and lowers the scale (never calling it would keep the scale too high for good).
                self.optimizer.step()
                self.skipped_steps += 1
            else:
                self.skipped_steps += 1
                self.nonfinite_steps += 1
                nonfinite = "nonfinite-loss" if not loss_ok else "nonfinite-grad"
            self.optimizer.zero_grad(set_to_none=True)
            self.lr_scheduler.step()
            self.step = step
            if nonfinite and self.log:
                self.log.event(step, nonfinite, None)

            measured = self._update_reference(step)
            if not measured and step % training.monitor_every == 0:
                which = (POLICY, REFERENCE) if self.config.method.reference == "sync" else (POLICY,)
                measured = self._divergences(which)
            if measured:
                last_divergence = {"div_policy": measured.get(POLICY), "div_ref": measured.get(REFERENCE, 0.0)}
            self.elapsed += time.perf_counter() - started

            metrics: dict[str, float] = {}
            if totals:
                stacked = torch.stack(list(totals.values())).to(self.accelerator.device)
                metrics = dict(zip(totals, self.accelerator.reduce(stacked, reduction="mean").cpu().tolist()))
            if self.log and step % training.log_every == 0:
                row = {**metrics, **(last_divergence if measured else {})}
                row = {k: v if v is None or math.isfinite(v) else None for k, v in row.items()}  # NULL, not NaN, in SQL
                self.log.metrics(step, **row, lr=self.lr_scheduler.get_last_lr()[0], seconds=self.elapsed)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", acc=f"{metrics.get('accuracy', float('nan')):.2f}",
                            d_ref=f"{(last_divergence.get('div_ref') or 0.0):.2e}", refresh=False)
            stop = requested["stop"]
            if self.accelerator.num_processes > 1:  # stop together, or the others wait forever
                flag = torch.tensor([float(stop)], device=self.accelerator.device)
                stop = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
            if self.nonfinite_steps >= training.max_nonfinite_steps:  # the same count on every process
                if self.log:
                    self.log.flush()
                raise TrainingDiverged(
                    f"{self.nonfinite_steps} steps had a non-finite loss or gradient, the last at step {step} "
                    f"(training.max_nonfinite_steps = {training.max_nonfinite_steps}); none of them reached the weights")
            if stop or step % training.checkpoint_every == 0 or step == training.max_steps:
                self.save()
            if stop:
                raise TrainingInterrupted(step)

