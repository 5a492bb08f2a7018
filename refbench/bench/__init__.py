"""`refbench bench`: what training and analysis cost against their bare passes, side by side.

A DPO step costs at least the policy's forward and backward pass on the 2B images of B pairs
plus the reference's forward pass on the same 2B ("bare passes"). This module measures, in
one process and one run, on the embedded toy world and on a tiny SD1.5-style latent model
(``refbench.tiny``; random weights, built offline):

(a) the bare passes, with the trainer's own modules and inputs of a real batch;
(b) a ``diff-dpo`` step and (c) a ``refdpo`` step, each through the real ``Trainer.train()``
    loop over blocks of whole sync/monitor cycles (lcm(tau, monitor_every) steps), so that
    every block holds its share of syncs and divergence measurements; delta is raised out of
    reach, so the reference keeps syncing all through (the method's most expensive phase);
(d) the ``refdpo`` step again with store logging on (a RunLog writing to a DuckDB file);
(e) peak memory of each method, with full fine-tuning and with LoRA;
(f) on the tiny SD model: a step with cached VAE latents and text embeddings against one
    that encodes every step;
(g) timestep-analysis throughput against bare forward passes of the same batches.

The configurations are timed in interleaved blocks (ABCD, BCDA, ...: each repetition rotates
the order), and ratios are medians of the per-repetition ratios, so a load change on a shared
machine hits both sides of a ratio alike. Memory is the peak of bytes held by torch's
allocator, from building the Trainer through a step that syncs and measures (on a CPU from
the profiler's allocation events, on a GPU ``torch.cuda.max_memory_allocated``): what a GPU
user would see, without the interpreter's and libraries' own memory that RSS would add.
"""

from .common import TARGETS, World, sd_world, toy_world  # noqa: F401
from .report import bench, format_table, run_bench, summarise  # noqa: F401

__all__ = ["bench", "run_bench", "summarise", "format_table", "TARGETS"]
