"""The one trainer: every method of the paper is a configuration of this loop.

Per optimizer step, for each micro-batch of B pairs (from the ``BatchSource``):
  1. winners and losers share noise eps and timestep t ~ timestep_sampler;
  2. the policy runs on the concatenated 2B batch with gradients (B winners alone for a
     winners-only objective such as sft), the reference without (objectives that need no
     reference, sft and mapo, skip the reference pass);
  3. loss = the objective's loss (``method.objectives``: a built-in, or a function named by
     import path) with weight = lambda(t).
Then the optimizer steps, and the reference-update rule decides: at multiples of tau the
reference becomes (a mix with) the policy, D(ref, init) is measured by the
``DivergenceMonitor`` and averaged over processes, and past delta the reference freezes or
returns to init. Every ``monitor_every`` steps the divergences of policy and reference from
init are logged.

Randomness is a function of (seed, step): data order, noise and timesteps come from
generators seeded per step, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import math
import time
from contextlib import closing, nullcontext
from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import CheckpointError, ConfigError
from ..method.losses import PreferenceLoss
from ..method.objectives import PairForward
from ..method.reference_update import Action, ReferenceUpdater
from ..method.timesteps import make_timestep_sampler, reward_scale
from .backends import Backend, Conditioning, load_backend
from .batches import BatchSource, StepBatch
from .checkpoint import has_checkpoint, load_checkpoint, load_sharded_into, save_checkpoint, save_sharded_checkpoint
from .costs import PassCounts
from .data import PreferencePairs
from .latent_cache import LatentCache
from .modelset import POLICY, REFERENCE, build_model_set
from .monitor import DivergenceMonitor
from .optimizers import make_optimizer
from .processes import from_main_process
from .run_log import RunLog
from .seeding import step_generator
from .sharding import check_resume_layout, full_tensor, is_sharded, make_accelerator, reshard, shard_frozen
from .stopping import TrainingDiverged, TrainingInterrupted, stop_requests

__all__ = ["Trainer"]


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        pairs: PreferencePairs,
        run_dir: Path,
        run_log: RunLog | None,
        accelerator=None,
        progress: bool = True,
        latent_cache: LatentCache | None = None,
        on_snapshot=None,
    ):
        from diffusers.optimization import get_scheduler

        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.on_snapshot = on_snapshot  # called with the step at each of training.snapshot_steps
        self.accelerator = acc = accelerator or make_accelerator(
            mixed_precision=config.model.mixed_precision, cpu=not torch.cuda.is_available()
        )
        self.sharded = is_sharded(acc)  # FSDP2: the policy and its frozen copies sharded over the ranks
        if config.model.offload_frozen and not self.sharded:
            raise ConfigError(
                "model.offload_frozen offloads the frozen copies' FSDP shards: it needs an FSDP launch "
                "(accelerate launch --config_file examples/accelerate/fsdp-1node.yaml ...); got a run without FSDP"
            )
        self.log = run_log if acc.is_main_process else None
        method, training = config.method, config.training
        self.objective = method.resolved_objective()
        # With the latent cache the VAE and text encoders are never loaded: batches come encoded.
        # A sharded denoiser stays on the CPU until each copy is sharded (no whole copy on the device).
        self.backend: Backend = load_backend(
            config.model,
            device=str(acc.device),
            encoders=latent_cache is None,
            denoiser_device="cpu" if self.sharded else None,
        )
        if config.model.gradient_checkpointing:
            self.backend.denoiser.enable_gradient_checkpointing()
        self.models = build_model_set(
            self.backend.denoiser,
            reference_mode=method.reference,
            lora_rank=config.model.lora_rank,
            lora_targets=self.backend.lora_targets,
            seed=training.seed,
            prepare_frozen=(
                (lambda module: shard_frozen(acc, module, offload=config.model.offload_frozen))
                if self.sharded
                else None
            ),
        )
        self.sampler = make_timestep_sampler(
            method.timestep_sampler, self.backend.num_train_timesteps, gamma=method.gamma, bins=method.bins
        )
        self.lambdas = reward_scale(method.reward_scale, self.backend.alphas_cumprod).to(acc.device)
        self.updater = ReferenceUpdater(method.reference_rule())
        self.learning_rate = training.effective_learning_rate(acc.num_processes)
        self.accumulation = training.accumulation(acc.num_processes)
        optimizer = make_optimizer(training, self.models.trainable_parameters(), self.learning_rate)
        self.lr_scheduler = get_scheduler(
            training.lr_scheduler,
            optimizer,
            num_warmup_steps=training.lr_warmup_steps,
            num_training_steps=training.max_steps,
        )
        # Only the policy is prepared (DDP across processes, or sharded by FSDP2 with its optimizer);
        # the frozen models run locally (or were sharded above).
        self.policy_forward, self.optimizer = acc.prepare(self.models.policy_module, optimizer)
        self.models.after_prepare()
        self.batches = BatchSource(
            pairs,
            self.backend,
            batch_size=training.batch_size,
            seed=training.seed,
            winners_only=self.objective.winners_only,
            latent_cache=latent_cache,
            random_flip=config.data.random_flip,
            num_workers=config.data.resolved_num_workers(acc.num_processes),
            process_index=acc.process_index,
            num_processes=acc.num_processes,
            device=acc.device,
        )
        self.monitor = DivergenceMonitor(
            self.batches,
            self.backend,
            self.models,
            acc,
            size=training.monitor_size,
            seed=training.seed,
            reference_syncs=method.reference == "sync",
        )
        self.passes = self.monitor.passes = PassCounts()
        self.step, self.elapsed, self.skipped_steps = 0, 0.0, 0
        self.nonfinite_steps = 0  # skipped for a non-finite loss or gradient (also in skipped_steps)

    # -- one micro-batch ----------------------------------------------------------------
    def _micro_step(self, batch: StepBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        method, backend, device = self.config.method, self.backend, self.accelerator.device
        num_pairs = batch.num_pairs
        noise = torch.randn(batch.x0[:num_pairs].shape, generator=generator).to(device)
        timesteps = self.sampler.sample(num_pairs, generator=generator).to(device)
        copies = batch.x0.shape[0] // num_pairs  # 2 for preference pairs, 1 for winners only
        noise, timesteps_all = noise.repeat(copies, 1, 1, 1), timesteps.repeat(copies)
        x_t = backend.add_noise(batch.x0, noise, timesteps_all)
        target = backend.target(batch.x0, noise, timesteps_all)
        cond = batch.cond.repeat(copies)
        with self.accelerator.autocast(), self.models.use(POLICY, self.policy_forward) as policy:
            model_pred = backend.predict(policy, x_t, timesteps_all, cond)
        self.passes.add("policy", x_t.shape[0], backward=True)
        ref_pred = None
        if self.objective.needs_reference:
            with torch.no_grad(), self.accelerator.autocast(), self.models.use(REFERENCE) as reference:
                ref_pred = backend.predict(reference, x_t, timesteps_all, cond)
            self.passes.add("reference", x_t.shape[0])
        forward = PairForward(
            num_pairs, target, model_pred, ref_pred, self.lambdas[timesteps], backend.num_train_timesteps
        )
        out = self._checked(self.objective(forward, method, **method.params))
        values = {"loss": out.loss}
        if out.accuracy is not None:  # objectives on pairs; a winners-only one has no margin
            values.update(accuracy=out.accuracy, margin=out.margin.mean())
        model_w, model_l = forward.halves(forward.model_err.detach())
        values["model_err_w"] = model_w.mean()
        if len(model_l):
            values["model_err_l"] = model_l.mean()
        if ref_pred is not None:
            ref_w, ref_l = forward.halves(forward.ref_err)
            values.update(ref_err_w=ref_w.mean(), ref_err_l=ref_l.mean())
        return values

    def _checked(self, out) -> PreferenceLoss:
        """An objective of the user's own must return a PreferenceLoss with a scalar loss: one line if not."""
        if not isinstance(out, PreferenceLoss) or not torch.is_tensor(out.loss) or out.loss.dim() != 0:
            got = (
                type(out).__name__
                if not isinstance(out, PreferenceLoss)
                else f"a loss of shape {tuple(torch.as_tensor(out.loss).shape)}"
            )
            raise ConfigError(
                f"method.objective: {self.objective.name} returned {got}; it must return a "
                "refbench.method.losses.PreferenceLoss whose loss is a scalar tensor"
            )
        return out

    def _drop_captions(self, batch: StepBatch, step: int, micro: int) -> StepBatch:
        """Caption dropout (official --proportion_empty_prompts): each pair trains on the empty
        prompt with probability ``data.caption_dropout``, winner and loser alike. Its coins come
        from a stream of their own, so the noise and timesteps are those of a run without it."""
        share = self.config.data.caption_dropout
        if not share:
            return batch
        generator = step_generator(
            self.config.training.seed, "caption-dropout", step, micro, self.accelerator.process_index
        )
        dropped = torch.rand(batch.num_pairs, generator=generator) < share
        if not dropped.any():  # decided on the CPU, where the coins are: no wait for the device
            return batch
        dropped = dropped.to(batch.cond.hidden.device)
        empty = self.batches.empty_conditioning(batch.num_pairs)

        def keep(mine, other):
            return torch.where(dropped.view(-1, *[1] * (mine.dim() - 1)), other.to(mine.dtype), mine)

        cond = Conditioning(
            keep(batch.cond.hidden, empty.hidden), {k: keep(v, empty.added[k]) for k, v in batch.cond.added.items()}
        )
        return StepBatch(batch.x0, cond, batch.num_pairs)

    # -- one optimizer step ---------------------------------------------------------------
    def _optimizer_step(self, step: int) -> dict[str, torch.Tensor]:
        """Accumulate the step's micro-batches and apply the update, unless its loss or gradient is
        not finite on any process (then nobody applies it). Returns the micro-batch means."""
        training, acc = self.config.training, self.accelerator
        accumulation = self.accumulation
        totals: dict[str, torch.Tensor] = {}
        batch = None
        nonfinite_loss = torch.zeros(1, device=acc.device)  # micro-batches with a NaN/Inf loss
        for micro in range(accumulation):
            micro_batch = self.batches.micro_batch((step - 1) * accumulation + micro)
            if micro_batch is None:  # every image of this micro-batch was unreadable
                continue
            batch = self._drop_captions(micro_batch, step, micro)
            generator = step_generator(training.seed, "step", step, micro, acc.process_index)
            # Gradients are all-reduced across processes once, on the last micro-batch.
            context = acc.no_sync(self.policy_forward) if micro < accumulation - 1 else nullcontext()
            with context:
                values = self._micro_step(batch, generator)
                nonfinite_loss += (~torch.isfinite(values["loss"].detach())).any().float()
                acc.backward(values["loss"] / accumulation)
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / accumulation
        grad_norm = acc.clip_grad_norm_(self.models.trainable_parameters(), training.max_grad_norm)
        # A non-finite loss (an Inf loss can have finite gradients) or gradient norm on any process:
        # the step is skipped on every process, so it never reaches the weights.
        if acc.num_processes > 1:
            nonfinite_loss = acc.reduce(nonfinite_loss, reduction="sum")
        # Both checks in one read from the device (the step's only wait for it, besides logging).
        finite = torch.stack(
            [nonfinite_loss.sum() == 0, torch.isfinite(torch.as_tensor(grad_norm)).to(acc.device).all()]
        )
        loss_ok, grad_ok = finite.tolist()
        nonfinite = None
        if batch is None:
            self.skipped_steps += 1  # nothing usable in this step
        elif loss_ok and grad_ok:
            self.optimizer.step()
        elif loss_ok and acc.scaler is not None:
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
        if nonfinite and self.log:
            self.log.event(step, nonfinite, None)
        return totals

    # -- reference update -----------------------------------------------------------------
    def _update_reference(self, step: int) -> dict[str, float]:
        if not self.updater.should_sync(step):
            return {}
        rule = self.updater.rule
        self.models.sync_reference(rule.mixup_alpha)
        if rule.mixup_alpha == 1.0:  # a hard copy: the policy holds the reference's weights, so the same errors
            measured = self.monitor.divergences((REFERENCE,))
            measured = {POLICY: measured[REFERENCE], REFERENCE: measured[REFERENCE]}
        else:
            measured = self.monitor.divergences((POLICY, REFERENCE))
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
        if self.log:
            self.log.costs(
                self.passes.rows(self.config.name, processes=self.accelerator.num_processes, seconds=self.elapsed)
            )
        committed = self.log.flush() if self.log else True
        acc, syncs = self.accelerator, self.config.method.reference == "sync"
        state = {
            "step": self.step,
            "elapsed": self.elapsed,
            "skipped_steps": self.skipped_steps,
            "nonfinite_steps": self.nonfinite_steps,
            "passes": self.passes.state_dict(),
            "updater": self.updater.state_dict(),
        }
        if self.sharded:  # every rank writes its shards: the main process's word decides for all
            (committed,) = from_main_process(committed)
            if committed:
                full_reference = syncs and not self.models.lora  # a LoRA reference is in the policy's module
                reference = self.models.reference_module if full_reference else None
                reshard(self.policy_forward, *([reference] if reference else []))
                save_sharded_checkpoint(
                    self._checkpoint_dir(),
                    acc,
                    policy=self.policy_forward,
                    reference=reference,
                    optimizer=self.optimizer,
                    lr_scheduler=self.lr_scheduler.state_dict(),
                    state={**state, "sharded": {"processes": acc.num_processes, "reference": full_reference}},
                )
            return
        if acc.is_main_process and committed:
            save_checkpoint(
                self._checkpoint_dir(),
                policy=self.models.policy_state(),
                reference=self.models.reference_state() if syncs else None,
                optimizer=self.optimizer.state_dict(),
                lr_scheduler=self.lr_scheduler.state_dict(),
                state=state,
            )
        acc.wait_for_everyone()

    def restore(self, saved: dict | None = None) -> bool:
        """Continue from a checkpoint (``saved``, as ``load_checkpoint`` returns it, or the run's own);
        False when the run has none. Weights that do not fit this run's model are a CheckpointError."""
        if saved is None:
            if not has_checkpoint(self._checkpoint_dir()):
                return False
            saved = load_checkpoint(self._checkpoint_dir())
        check_resume_layout(saved, sharded=self.sharded, num_processes=self.accelerator.num_processes)
        try:
            if self.sharded:
                reference = self.models.reference_module if saved["state"]["sharded"]["reference"] else None
                reshard(self.policy_forward, *([reference] if reference else []))
                load_sharded_into(
                    saved["folder"],
                    self.accelerator,
                    policy=self.policy_forward,
                    reference=reference,
                    optimizer=self.optimizer,
                )
                self.models.reference_version += 1
            else:
                self.models.load_policy_state(saved["policy"])
                if saved["reference"] is not None:
                    self.models.load_reference_state(saved["reference"])
                self.optimizer.load_state_dict(saved["optimizer"])
            self.lr_scheduler.load_state_dict(saved["lr_scheduler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"the checkpoint in {self._checkpoint_dir()} does not fit this run's model or "
                f"optimizer ({reason}); it was made by another configuration"
            ) from None
        state = saved["state"]
        self.step, self.elapsed, self.skipped_steps = state["step"], state["elapsed"], state["skipped_steps"]
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self.passes.load_state_dict(state.get("passes"))
        self.updater.load_state_dict(state["updater"])
        return True

    def process_report(self) -> list[dict]:
        """Per process: a checksum of the policy and reference weights and the reference events.
        With DDP every process must hold the same weights and have taken the same decisions."""
        from accelerate.utils import gather_object

        def checksum(tensors) -> float:  # of whole tensors: under FSDP, gathered (every rank calls this)
            return float(sum(full_tensor(t.detach()).double().abs().sum() for t in tensors))

        reference = self.models.reference_state().values() if self.config.method.reference == "sync" else []
        mine = {
            "process": self.accelerator.process_index,
            "policy_checksum": checksum(self.models.policy_state().values()),
            "reference_checksum": checksum(reference),
            "events": [vars(e) for e in self.updater.events],
        }
        return gather_object([mine])

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm.auto import tqdm

        training, acc = self.config.training, self.accelerator
        bar = tqdm(
            total=training.max_steps,
            initial=self.step,
            desc=self.config.name,
            unit="step",
            disable=not (self.progress and acc.is_main_process),
            dynamic_ncols=True,
        )
        last_divergence: dict[str, float | None] = {}
        # closing(bar): the bar ends its line even when the loop stops early, so what follows starts a line.
        with stop_requests() as requested, closing(self.batches), closing(bar):
            while self.step < training.max_steps:
                started = time.perf_counter()
                step = self.step + 1
                totals = self._optimizer_step(step)
                self.step = step
                measured = self._update_reference(step)
                if not measured and step % training.monitor_every == 0:
                    which = (POLICY, REFERENCE) if self.config.method.reference == "sync" else (POLICY,)
                    measured = self.monitor.divergences(which)
                if measured:
                    last_divergence = {"div_policy": measured.get(POLICY), "div_ref": measured.get(REFERENCE, 0.0)}
                self.elapsed += time.perf_counter() - started

                metrics: dict[str, float] = {}
                logged = self.log and step % training.log_every == 0
                # Means over processes, read from the device only for the store or the progress bar
                # (the same condition on every process: the reduce is collective).
                if totals and (step % training.log_every == 0 or self.progress):
                    stacked = torch.stack(list(totals.values())).to(acc.device)
                    metrics = dict(zip(totals, acc.reduce(stacked, reduction="mean").cpu().tolist()))
                if logged:
                    row = {**metrics, **(last_divergence if measured else {})}
                    row = {
                        k: v if v is None or math.isfinite(v) else None for k, v in row.items()
                    }  # NULL, not NaN, in SQL
                    self.log.metrics(step, **row, lr=self.lr_scheduler.get_last_lr()[0], seconds=self.elapsed)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{metrics.get('loss', float('nan')):.4f}",
                    acc=f"{metrics.get('accuracy', float('nan')):.2f}",
                    d_ref=f"{(last_divergence.get('div_ref') or 0.0):.2e}",
                    refresh=False,
                )
                # Before the step's checkpoint: a run resumed from step c has every snapshot up to c.
                if self.on_snapshot and step in training.snapshot_steps:
                    self.on_snapshot(step)
                self._stop_if_asked(step, requested["stop"])

    def _stop_if_asked(self, step: int, stop: bool) -> None:
        """Checkpoint on schedule, and stop (on every process together) after Ctrl-C / SIGTERM or
        once too many steps were not finite."""
        training, acc = self.config.training, self.accelerator
        if acc.num_processes > 1:  # stop together, or the others wait forever
            flag = torch.tensor([float(stop)], device=acc.device)
            stop = bool(acc.reduce(flag, reduction="sum").item() > 0)
        if self.nonfinite_steps >= training.max_nonfinite_steps:  # the same count on every process
            if self.log:
                self.log.flush()
            raise TrainingDiverged(
                f"{self.nonfinite_steps} steps had a non-finite loss or gradient, the last at step {step} "
                f"(training.max_nonfinite_steps = {training.max_nonfinite_steps}); none of them reached the weights"
            )
        if stop or step % training.checkpoint_every == 0 or step == training.max_steps:
            self.save()
        if stop:
            raise TrainingInterrupted(step)
