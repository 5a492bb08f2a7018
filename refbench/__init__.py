"""refbench: preference optimization of text-to-image diffusion models, measured."""

import os

# OpenMP threads that spin while waiting made torch 5-20x slower on the project's 2-core
# machines (measured: a 16 px UNet step 11.5 s instead of 0.5 s). Passive waiting removes
# that; it must be set before torch is first imported, which refbench does lazily.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
