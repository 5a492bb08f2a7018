"""The three models of the method: the policy (trained), the reference, the initial model.

Two layouts, one interface:

- full fine-tuning: three copies of the denoiser (a UNet, or an SD3 transformer). With a
  fixed reference, the reference *is* the initial model (one frozen copy), so a
  reference-updating method costs exactly one more copy of the weights than Diffusion-DPO.
- LoRA (peft): one denoiser with two adapters, ``policy`` and ``reference`` (the latter only
  when the reference syncs); the initial model is the base with adapters off. Three models
  for about the price of one.

Reference-free methods (``reference_mode="none"``: sft, mapo) get no reference at all:
asking for it is an error, so a stray reference pass cannot go unnoticed.

The policy runs with gradients; the reference and the initial model never do.

Under FSDP (``sharding.py``) the trainer shards the policy after this set is built and
``prepare_frozen`` shards each frozen copy as it is made (before the next one is copied), so
the three models hold the same shards on each rank and every reference rule is elementwise
on local shards. The LoRA set then finds its adapters' (sharded) parameters again
(``after_prepare``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..method.reference_update import mix_into
from .sharding import local_shards, reshard

POLICY, REFERENCE = "policy", "reference"
# The UNet's attention projections (the official Diffusion-DPO LoRA and diffusers' SD scripts);
# the SD3 transformer's are its backend's ``lora_targets``.
UNET_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")


def _check_has_reference(which: str, reference_mode: str) -> None:
    if which == REFERENCE and reference_mode == "none":
        raise RuntimeError("this method is reference-free (reference = 'none'): there is no reference model to run")


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    return module.requires_grad_(False).eval()


class FullModelSet:
    """Policy, reference and initial model as separate copies of the denoiser."""

    lora = False
    reference_version = 0  # bumped whenever the reference's weights change (cached outputs of it expire)

    def __init__(self, denoiser: torch.nn.Module, *, reference_mode: str, prepare_frozen=None):
        prepare_frozen = prepare_frozen or (lambda module: module)
        self.policy_module = denoiser.train().requires_grad_(True)
        self.reference_mode = reference_mode
        self.initial_module = prepare_frozen(_frozen(copy.deepcopy(denoiser)))
        # A fixed reference is the initial model; only a syncing reference needs its own copy.
        self.reference_module = (
            prepare_frozen(_frozen(copy.deepcopy(denoiser))) if reference_mode == "sync" else self.initial_module
        )

    def after_prepare(self) -> None:
        """Nothing to find again: the modules' parameters are read from the modules."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy_module.parameters() if p.requires_grad]

    @contextmanager
    def use(self, which: str, policy_forward=None) -> Iterator[torch.nn.Module]:
        """The module to call for ``which`` (policy / reference / initial)."""
        _check_has_reference(which, self.reference_mode)
        if which == POLICY:
            yield policy_forward or self.policy_module
        elif which == REFERENCE:
            yield self.reference_module
        else:
            yield self.initial_module

    def sync_reference(self, alpha: float) -> None:
        reshard(self.reference_module, self.policy_module)  # under FSDP: shard by shard, on each rank
        mix_into(local_shards(self.reference_module.parameters()), local_shards(self.policy_module.parameters()), alpha)
        self.reference_version += 1

    def reset_reference(self) -> None:
        reshard(self.reference_module, self.initial_module)
        mix_into(local_shards(self.reference_module.parameters()), local_shards(self.initial_module.parameters()), 1.0)
        self.reference_version += 1

    def reference_state(self) -> dict[str, torch.Tensor]:
        reshard(self.reference_module)
        return {k: v.detach().clone() for k, v in self.reference_module.state_dict().items()}

    def load_reference_state(self, state: dict[str, torch.Tensor]) -> None:
        self.reference_module.load_state_dict(state)
        self.reference_version += 1

    def policy_state(self) -> dict[str, torch.Tensor]:
        reshard(self.policy_module)
        return self.policy_module.state_dict()

    def load_policy_state(self, state: dict[str, torch.Tensor]) -> None:
        self.policy_module.load_state_dict(state)


class LoraModelSet:
    """One denoiser, adapters ``policy`` (trained) and ``reference``; adapters off = initial model."""

    lora = True
    reference_version = 0  # bumped whenever the reference adapter changes (cached outputs of it expire)

    def __init__(
        self,
        denoiser: torch.nn.Module,
        *,
        reference_mode: str,
        rank: int,
        target_modules: tuple[str, ...] | list[str] = UNET_LORA_TARGETS,
        seed: int = 0,
    ):
        from peft import LoraConfig

        denoiser.requires_grad_(False)
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(target_modules))
        # The adapters' random A matrices come from ``seed`` (the run's training seed), not from
        # whatever state the global generator is in: two runs of one seed start from the same LoRA.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            denoiser.add_adapter(config, adapter_name=POLICY)
            # A syncing reference starts equal to the initial model: zero LoRA update (B = 0 at init).
            # (peft warns about a second adapter on one model: that is the point here.) A fixed
            # reference is the initial model (adapters off) and needs no adapter of its own.
            if reference_mode == "sync":
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                    denoiser.add_adapter(config, adapter_name=REFERENCE)
        self.policy_module = denoiser.train()
        self.reference_mode = reference_mode
        self.after_prepare()

    def after_prepare(self) -> None:
        """The adapters' parameters, found (again) by name: FSDP replaces them with sharded ones."""
        named = dict(self.policy_module.named_parameters())
        self._policy_params = {n: p for n, p in named.items() if f".{POLICY}." in n}
        self._reference_params = {n: p for n, p in named.items() if f".{REFERENCE}." in n}
        self._activate(POLICY)

    def _activate(self, adapter: str) -> None:
        self.policy_module.enable_adapters()
        self.policy_module.set_adapter(adapter)
        # peft marks the active adapter trainable; only the policy's adapter ever is.
        for p in self._policy_params.values():
            p.requires_grad_(True)
        for p in self._reference_params.values():
            p.requires_grad_(False)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._policy_params.values())

    @contextmanager
    def use(self, which: str, policy_forward=None) -> Iterator[torch.nn.Module]:
        _check_has_reference(which, self.reference_mode)
        if which == POLICY:
            yield policy_forward or self.policy_module
            return
        try:
            if which == REFERENCE and self.reference_mode == "sync":
                self._activate(REFERENCE)
            else:  # the initial model, which is also a fixed reference
                self.policy_module.disable_adapters()
            yield self.policy_module
        finally:
            self._activate(POLICY)

    def _pairs(self):
        reshard(self.policy_module)
        for name, param in self._policy_params.items():
            yield self._reference_params[name.replace(f".{POLICY}.", f".{REFERENCE}.")], param

    def sync_reference(self, alpha: float) -> None:
        references, policies = zip(*self._pairs())
        mix_into(local_shards(references), local_shards(policies), alpha)
        self.reference_version += 1

    def reset_reference(self) -> None:
        reshard(self.policy_module)
        with torch.no_grad():
            for name, param in self._reference_params.items():
                if "lora_B" in name:  # B = 0 makes the adapter's update zero: the initial model
                    param.zero_()
        self.reference_version += 1

    def reference_state(self) -> dict[str, torch.Tensor]:
        reshard(self.policy_module)
        return {k: v.detach().clone() for k, v in self._reference_params.items()}

    def load_reference_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                self._reference_params[name].copy_(value)
        self.reference_version += 1

    def policy_state(self) -> dict[str, torch.Tensor]:
        reshard(self.policy_module)
        return {k: v.detach() for k, v in self._policy_params.items()}

    def load_policy_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                self._policy_params[name].copy_(value)


def build_model_set(
    denoiser: torch.nn.Module,
    *,
    reference_mode: str,
    lora_rank: int,
    lora_targets: tuple[str, ...] | list[str] = UNET_LORA_TARGETS,
    seed: int = 0,
    prepare_frozen=None,
):
    """``prepare_frozen`` (FSDP: shard) is applied to each frozen copy of full fine-tuning as it is made."""
    if lora_rank > 0:
        return LoraModelSet(
            denoiser, reference_mode=reference_mode, rank=lora_rank, target_modules=lora_targets, seed=seed
        )
    return FullModelSet(denoiser, reference_mode=reference_mode, prepare_frozen=prepare_frozen)
