"""`accelerate launch` for tests: each launch gets a free rendezvous port, so that two launches
(pytest-xdist workers) never meet on accelerate's default 29500."""

import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(processes: int = 2) -> list[str]:
    """The command's start: accelerate launch with ``processes`` gloo processes on this machine."""
    return [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
    ]
