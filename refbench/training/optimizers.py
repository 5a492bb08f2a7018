"""The optimizer a config asks for (``training.optimizer``).

- ``adamw``: torch's AdamW with the official script's betas (0.9, 0.999), eps 1e-8 and
  ``training.weight_decay`` (1e-2); ``foreach`` (one kernel per group, the same numbers). Not
  ``fused``: faster still, but the weights differ in the last bit (torch 2.14, checked on the tiny SD
  UNet), so committed runs would no longer reproduce.
- ``adafactor``: transformers' Adafactor with the official script's settings for SDXL
  (train.py: lr, weight_decay, clip_threshold 1.0, scale_parameter False, relative_step False;
  the rest at transformers' defaults).
- ``adamw8bit``: bitsandbytes' AdamW8bit, when that optional package is installed.
"""

from __future__ import annotations

import torch

from ..config import TrainingConfig
from ..errors import ConfigError

__all__ = ["make_optimizer"]


def make_optimizer(training: TrainingConfig, parameters, learning_rate: float) -> torch.optim.Optimizer:
    parameters = list(parameters)
    if training.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(
            parameters,
            lr=learning_rate,
            weight_decay=training.weight_decay,
            clip_threshold=1.0,
            scale_parameter=False,
            relative_step=False,
        )
    if training.optimizer == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise ConfigError(
                "training.optimizer: adamw8bit needs the bitsandbytes package (pip install bitsandbytes); "
                "use adamw or adafactor without it"
            ) from None
        return bitsandbytes.optim.AdamW8bit(
            parameters, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=training.weight_decay
        )
    return torch.optim.AdamW(
        parameters, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, foreach=True, weight_decay=training.weight_decay
    )
