"""What several processes (accelerate launch) share: the main process's values, on every process."""

from __future__ import annotations


def from_main_process(*values) -> tuple:
    """The main process's values, on every process (with one process, the values themselves)."""
    from accelerate import PartialState

    if PartialState().num_processes == 1:
        return values
    from accelerate.utils import broadcast_object_list

    return tuple(broadcast_object_list(list(values), from_process=0))
