"""Typed run configuration, validated on construction, and the preset files that fill it.

A run's config is built in layers, each overriding the one before:

    dataclass defaults < model preset (presets/models/NAME.toml) < method preset
    (presets/methods/NAME.toml) < --config FILE < command-line flags

Model presets carry the numbers that depend on the model (beta, tau, delta, lr, batch);
method presets carry the switches that define a method (reference mode, what happens
at delta, timestep sampler, reward scale). Every bad value raises ``ConfigError`` with
one line naming the field.
"""

from __future__ import annotations

import json
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from .config_layers import (
    accumulation_or_effective_batch,
    check_data_columns,
    coerce,
    refuse_reference_updates,
    vae_goes_with_its_model,
)
from .errors import ConfigError
from .extensions import check_params, resolve_objective
from .method.reference_update import ReferenceUpdateRule
from .method.timesteps import reward_scale_names
from .model_kinds import MODEL_KINDS

__all__ = [
    "MethodConfig",
    "ModelConfig",
    "DataConfig",
    "TrainingConfig",
    "RunConfig",
    "method_names",
    "preset_names",
    "load_config",
    "config_from_dict",
]


def _require(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field_name}: {message}")


def _check_literals(obj: Any, section: str) -> None:
    """Every Literal-typed field must hold one of its allowed values, every float field a finite
    number (TOML, JSON and the command line all accept nan and inf)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        hint = hints[f.name]
        value = getattr(obj, f.name)
        if get_origin(hint) is Literal:
            allowed = get_args(hint)
            _require(
                value in allowed, f"{section}.{f.name}", f"must be one of {', '.join(map(str, allowed))}; got {value!r}"
            )
        elif hint is float and isinstance(value, float):
            _require(math.isfinite(value), f"{section}.{f.name}", f"must be a finite number; got {value!r}")


@dataclass(frozen=True)
class MethodConfig:
    """What makes a method: its objective, reference handling and timestep treatment."""

    name: str = "refdpo"
    # a built-in of method/objectives.py (dpo: Diffusion-DPO; sft: winners only; dspo, kto, mapo:
    # the baselines), or "module:function" of your own, with its keyword arguments in params
    objective: str = "dpo"
    params: dict[str, Any] = field(default_factory=dict)
    reference: Literal["none", "fixed", "sync"] = "sync"  # none: no reference (sft, mapo)
    tau: int = 32  # sync period in optimizer steps
    delta: float = 0.005  # threshold on D(ref, init)
    on_exceed: Literal["freeze", "reinit", "none"] = "freeze"  # none: unregularised updates
    mixup_alpha: float = 1.0  # 1 = hard copy (the paper); < 1 = TR-DPO soft update
    timestep_sampler: Literal["uniform", "gamma"] = "gamma"
    gamma: float = 0.9
    bins: int = 50
    reward_scale: str = "inv-sqrt-snr"
    beta: float = 5000.0  # T of Eq. 6 folded in, as in the official code; each objective's own beta
    desirable_weight: float = 1.0  # kto: lambda_D, weight of desirable images (winners)
    undesirable_weight: float = 1.0  # kto: lambda_U, weight of undesirable images (losers)
    mapo_snr: float = 0.5  # mapo: the official --snr_value in f(e) = snr*e / (exp(snr*e) - 1)

    def __post_init__(self) -> None:
        _check_literals(self, "method")
        _require(bool(self.name), "method.name", "must not be empty")
        _require(self.tau >= 1, "method.tau", f"must be >= 1; got {self.tau}")
        _require(self.delta > 0, "method.delta", f"must be > 0; got {self.delta}")
        _require(0 < self.mixup_alpha <= 1, "method.mixup_alpha", f"must be in (0, 1]; got {self.mixup_alpha}")
        _require(0 < self.gamma <= 1, "method.gamma", f"must be in (0, 1]; got {self.gamma}")
        _require(self.bins >= 1, "method.bins", f"must be >= 1; got {self.bins}")
        _require(self.beta > 0, "method.beta", f"must be > 0; got {self.beta}")
        names = reward_scale_names()
        _require(
            self.reward_scale in names,
            "method.reward_scale",
            f"must be one of {', '.join(names)}; got {self.reward_scale!r}",
        )
        for name in ("desirable_weight", "undesirable_weight", "mapo_snr"):
            value = getattr(self, name)
            _require(value > 0, f"method.{name}", f"must be > 0; got {value}")
        objective = self.resolved_objective()
        check_params(objective, self.params)
        if not objective.needs_reference:
            _require(
                self.reference == "none",
                "method.reference",
                f"must be 'none': the {self.objective} objective is reference-free; got {self.reference!r}",
            )
        else:
            _require(
                self.reference != "none",
                "method.reference",
                f"the {self.objective} objective needs a 'fixed' or 'sync' reference",
            )

    def resolved_objective(self):
        """The ``refbench.method.objectives.Objective`` that ``objective`` names."""
        return resolve_objective(self.objective)

    def reference_rule(self) -> ReferenceUpdateRule:
        return ReferenceUpdateRule(
            mode=self.reference, tau=self.tau, delta=self.delta, on_exceed=self.on_exceed, mixup_alpha=self.mixup_alpha
        )


@dataclass(frozen=True)
class ModelConfig:
    """Which diffusion model, and how it is fine-tuned."""

    kind: str = "toy"  # one of model_kinds.MODEL_KINDS (`refbench config --list` says what each is)
    pretrained: str = "toy:base"  # "toy:base", a hub id, or a local diffusers folder
    resolution: int = 16
    lora_rank: int = 0  # 0 = full fine-tuning
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # Another VAE (hub id or local AutoencoderKL folder), as the official SDXL launcher's
    # --pretrained_vae_model_name_or_path; None: the pipeline's own.
    vae: str | None = None
    vae_fp32: bool = True  # keep the VAE in fp32 under mixed precision (False: the mixed precision's dtype)
    t5: bool = True  # SD3 only; False: text_encoder_3 = None (zeros), as diffusers allows: T5-XXL is 4.7 B
    # Under FSDP (accelerate launch with an FSDP config): keep the frozen copies' shards (the
    # initial model, a syncing reference) in CPU memory, brought to the device block by block.
    offload_frozen: bool = False

    def __post_init__(self) -> None:
        _check_literals(self, "model")
        _require(self.kind in MODEL_KINDS, "model.kind", f"must be one of {', '.join(MODEL_KINDS)}; got {self.kind!r}")
        _require(bool(self.pretrained), "model.pretrained", "must not be empty")
        _require(
            self.resolution >= 8 and self.resolution % 8 == 0,
            "model.resolution",
            f"must be a multiple of 8, >= 8; got {self.resolution}",
        )
        _require(self.lora_rank >= 0, "model.lora_rank", f"must be >= 0; got {self.lora_rank}")
        _require(
            self.vae is None or bool(self.vae), "model.vae", f"must be a hub id or folder, or unset; got {self.vae!r}"
        )
        with_t5 = [name for name, kind in MODEL_KINDS.items() if kind.t5]
        _require(
            self.t5 or MODEL_KINDS[self.kind].t5,
            "model.t5",
            f"must be true unless model.kind is {' or '.join(with_t5)} (the kinds with a T5 encoder); got false for {self.kind}",
        )


@dataclass(frozen=True)
class DataConfig:
    """Preference pairs, read into the Pick-a-Pic v2 schema (caption, jpg_0, jpg_1, label_0)."""

    # "toy" (built-in pairs), a local parquet file/folder or hub id in Pick-a-Pic v2's schema, or a
    # named source NAME:LOCATION ("hpdv2:/data/HPDv2"; `refbench data list`; docs/data.md)
    source: str = "toy"
    split: str = "train"
    max_pairs: int | None = None
    # Prompts whose pairs are left out (skip reason "held-out prompt"): a toy prompt set such as
    # "toy-val", or a text file with one prompt per line. Applied before max_pairs.
    exclude_prompts: str | None = None
    # A folder of VAE latents and text embeddings on disk (refbench cache-latents), built on
    # first use if missing; shared by every run whose model, resolution and data match.
    latent_cache: str | None = None
    latent_dtype: Literal["float16", "float32"] = "float16"  # what the cache stores
    # DataLoader workers decoding images (None: one per spare CPU core, at most 8).
    num_workers: int | None = None
    # Share of pairs trained on the empty prompt (official --proportion_empty_prompts, 0.2);
    # winner and loser share the caption, dropped or not.
    caption_dropout: float = 0.0
    # Horizontal flip of each image with probability 1/2 (official default; --no_hflip turns it
    # off). The latent cache holds unflipped images, so the two do not go together.
    random_flip: bool = False
    # A parquet's own column names (docs/data.md): caption, image_0, image_1, and label_0 (a label
    # column, 1/0/0.5 as Pick-a-Pic) or preferred ("image_0" or "image_1" is always preferred).
    columns: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_literals(self, "data")
        check_data_columns(self.columns)
        _require(bool(self.source), "data.source", "must not be empty")
        _require(bool(self.split), "data.split", "must not be empty")
        _require(
            self.exclude_prompts is None or bool(self.exclude_prompts),
            "data.exclude_prompts",
            f"must be a prompt set or a file, or unset; got {self.exclude_prompts!r}",
        )
        _require(self.max_pairs is None or self.max_pairs >= 1, "data.max_pairs", f"must be >= 1; got {self.max_pairs}")
        _require(
            self.latent_cache is None or bool(self.latent_cache),
            "data.latent_cache",
            f"must be a folder, or unset; got {self.latent_cache!r}",
        )
        _require(
            self.num_workers is None or self.num_workers >= 0,
            "data.num_workers",
            f"must be >= 0; got {self.num_workers}",
        )
        _require(
            0 <= self.caption_dropout < 1, "data.caption_dropout", f"must be in [0, 1); got {self.caption_dropout}"
        )
        _require(
            not (self.random_flip and self.latent_cache),
            "data.random_flip",
            "must be false with data.latent_cache (the cache holds unflipped centre crops); got true",
        )

    def resolved_num_workers(self, local_processes: int = 1) -> int:
        """``num_workers``, or the CPU cores left per training process after its own, at most 8."""
        if self.num_workers is not None:
            return self.num_workers
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, min(8, cores // max(1, local_processes) - 1))


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation, logging and checkpointing."""

    max_steps: int = 300
    batch_size: int = 8  # pairs per process per micro-step
    gradient_accumulation_steps: int = 1
    # Pairs per optimizer step over all processes (the paper: 2048); when set (> 0) it decides
    # the accumulation: effective_batch / (processes x batch_size), which must divide.
    effective_batch: int = 0
    # adamw: torch AdamW; adafactor: transformers' Adafactor with the official SDXL settings;
    # adamw8bit: bitsandbytes' AdamW8bit (optional package).
    optimizer: Literal["adamw", "adafactor", "adamw8bit"] = "adamw"
    report_to: Literal["none", "tensorboard", "wandb"] = "none"  # live curves through accelerate's trackers
    learning_rate: float = 1e-5
    scale_lr: bool = False  # official launchers: lr x (batch x accumulation x processes)
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine"] = "constant_with_warmup"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 1  # steps between train_metrics rows
    monitor_every: int = 1  # steps between divergence measurements (syncs always measure)
    monitor_size: int = 16  # winners in the divergence monitor set (fixed per run and process)
    checkpoint_every: int = 100
    # Steps after which the policy is also saved as a finished model, registered in the store as the
    # run "NAME@STEP": the first STEP steps of this run, which is what a run of STEP steps would
    # give (data, noise and timesteps are functions of (seed, step); a constant learning rate after
    # warm-up does not depend on max_steps, so cosine is refused). For curves over training length.
    snapshot_steps: tuple[int, ...] = ()
    # Steps skipped for a non-finite loss or gradient (never written into the weights) before
    # the run stops as diverged.
    max_nonfinite_steps: int = 10

    def __post_init__(self) -> None:
        _check_literals(self, "training")
        for name in (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "log_every",
            "monitor_every",
            "monitor_size",
            "checkpoint_every",
            "max_nonfinite_steps",
        ):
            value = getattr(self, name)
            _require(value >= 1, f"training.{name}", f"must be >= 1; got {value}")
        _require(self.learning_rate > 0, "training.learning_rate", f"must be > 0; got {self.learning_rate}")
        _require(self.lr_warmup_steps >= 0, "training.lr_warmup_steps", f"must be >= 0; got {self.lr_warmup_steps}")
        _require(self.weight_decay >= 0, "training.weight_decay", f"must be >= 0; got {self.weight_decay}")
        _require(self.max_grad_norm > 0, "training.max_grad_norm", f"must be > 0; got {self.max_grad_norm}")
        _require(0 <= self.seed < 2**63, "training.seed", f"must be in [0, 2**63); got {self.seed}")
        _require(
            all(1 <= step < self.max_steps for step in self.snapshot_steps),
            "training.snapshot_steps",
            f"must lie in [1, max_steps = {self.max_steps}); got {list(self.snapshot_steps)}",
        )
        _require(
            not (self.snapshot_steps and self.lr_scheduler == "cosine"),
            "training.snapshot_steps",
            "a cosine schedule depends on max_steps, so a snapshot would not be a shorter run; use a constant schedule",
        )
        _require(
            self.effective_batch >= 0,
            "training.effective_batch",
            f"must be >= 0 (0: unset); got {self.effective_batch}",
        )
        if self.effective_batch:
            _require(
                self.effective_batch % self.batch_size == 0,
                "training.effective_batch",
                f"must be a multiple of training.batch_size ({self.batch_size}); got {self.effective_batch}",
            )

    def accumulation(self, num_processes: int = 1) -> int:
        """Micro-batches per optimizer step on each process."""
        if not self.effective_batch:
            return self.gradient_accumulation_steps
        per_step = self.batch_size * num_processes
        _require(
            self.effective_batch % per_step == 0,
            "training.effective_batch",
            f"{self.effective_batch} is not divisible by {num_processes} processes x batch {self.batch_size}",
        )
        return self.effective_batch // per_step

    def effective_batch_size(self, num_processes: int = 1) -> int:
        return self.batch_size * self.accumulation(num_processes) * num_processes

    def effective_learning_rate(self, num_processes: int = 1) -> float:
        scale = self.effective_batch_size(num_processes) if self.scale_lr else 1
        return self.learning_rate * scale


@dataclass(frozen=True)
class RunConfig:
    name: str = "refdpo"
    preset: str = "toy"
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        # The name is a folder under --out: no separators, no leading dot ("." and ".." would escape it).
        valid = (
            all(c.isalnum() or c in "-_.=," for c in self.name)
            and not self.name.startswith(".")
            and len(self.name) <= 200
        )
        _require(
            bool(self.name) and valid,
            "name",
            f"must be 1-200 letters, digits and - _ . = , not starting with a dot; got {self.name!r}",
        )
        presets = preset_names()
        _require(self.preset in presets, "preset", f"must be one of {', '.join(presets)}; got {self.preset!r}")
        # A LoRA reference is a pair of low-rank factors: mixing A and B separately does not mix
        # the weight changes they make (B A), and their mix is not low-rank in general.
        _require(
            not (self.model.lora_rank and self.method.mixup_alpha < 1),
            "method.mixup_alpha",
            f"must be 1 (a hard copy) with LoRA (model.lora_rank {self.model.lora_rank}): a soft sync of the "
            f"adapters' factors is not the soft sync of their weights; got {self.method.mixup_alpha}",
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


_SECTIONS = {"method": MethodConfig, "model": ModelConfig, "data": DataConfig, "training": TrainingConfig}


def _preset_dir(folder: str) -> Path:
    return Path(str(resources.files("refbench") / "presets" / folder))


def _names(folder: str) -> list[str]:
    return sorted(p.stem for p in _preset_dir(folder).glob("*.toml"))


def method_names() -> list[str]:
    return _names("methods")


def preset_names() -> list[str]:
    return _names("models")


def _read_preset(folder: str, name: str) -> dict:
    valid = _names(folder)
    if name not in valid:
        label = "method" if folder == "methods" else "preset"
        raise ConfigError(f"unknown {label} {name!r}; valid: {', '.join(valid)}")
    return tomllib.loads((_preset_dir(folder) / f"{name}.toml").read_text())


def read_config_file(path: str | Path) -> dict:
    """A TOML or JSON file with sections [method] [model] [data] [training] and optional name/preset."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is malformed: {exc}") from None


def _merge(base: dict, update: dict) -> dict:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in update.items():
        if isinstance(value, dict):  # None means "not given" and leaves the lower layer's value
            section = merged.setdefault(key, {})
            for field_name, field_value in value.items():
                if isinstance(field_value, dict) and isinstance(section.get(field_name), dict):
                    section[field_name] = {**section[field_name], **field_value}  # method.params: key by key
                elif field_value is not None:
                    section[field_name] = field_value
        elif value is not None:
            merged[key] = value
    return merged


def _build_section(cls: type, values: dict, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown field {section}.{unknown[0]}; valid: {', '.join(sorted(known))}")
    kwargs = {key: coerce(value, hints[key], f"{section}.{key}") for key, value in values.items()}
    return cls(**kwargs)


def config_from_dict(raw: dict) -> RunConfig:
    """Build a RunConfig from a nested dict (as stored in the ``runs`` table)."""
    top_known = {"name", "preset", *_SECTIONS}
    unknown = sorted(set(raw) - top_known)
    if unknown:
        raise ConfigError(f"unknown config section or field {unknown[0]!r}; valid: {', '.join(sorted(top_known))}")
    sections = {}
    for section, cls in _SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: must be a table of fields; got {values!r}")
        sections[section] = _build_section(cls, values, section)
    name = raw.get("name")
    return RunConfig(
        name=str(sections["method"].name if name is None else name), preset=str(raw.get("preset", "toy")), **sections
    )


def load_config(
    method: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    name: str | None = None,
) -> RunConfig:
    """Layer defaults, the model preset, the method preset, a config file and CLI overrides.

    ``overrides`` is nested like the file (``{"method": {"tau": 16}}``); ``None`` values are ignored.
    """
    from_file = read_config_file(config_file) if config_file else {}
    preset = preset or from_file.get("preset") or "toy"
    method = method or from_file.get("method", {}).get("name") or "refdpo"
    raw: dict = {"preset": preset}
    raw = _merge(raw, _read_preset("models", preset))
    method_preset = _read_preset("methods", method)
    raw = _merge(raw, method_preset)
    raw = _merge(raw, {k: v for k, v in from_file.items() if k not in ("preset",)})
    raw["method"]["name"] = method
    raw = _merge(raw, overrides or {})
    raw["name"] = name if name is not None else (from_file.get("name") or method)
    accumulation_or_effective_batch(raw, method_preset, from_file, overrides or {})
    vae_goes_with_its_model(raw, method_preset, from_file, overrides or {})
    config = config_from_dict(raw)
    refuse_reference_updates(
        config.method.objective,
        config.method.resolved_objective().needs_reference,
        method_preset,
        from_file,
        overrides or {},
    )
    return config
