"""Long-lived plan workers: each run's steps in a process that outlives the run.

``run_jobs`` starts ``workers`` processes (multiprocessing, spawn) and hands each a job at a
time: one run's steps (train, generate, score, ...) and its log file. A worker pays for the
interpreter, torch, diffusers and the toy world once, then runs job after job; its store
writes go through the store's lock-and-retry like any process's.

What makes the numbers independent of ``workers``: every worker runs its steps with the same
fixed thread count (a run's float reductions depend on its threads, not on how many runs share
the machine), and every step seeds what it draws from its own settings.

Stopping: Ctrl-C at a terminal reaches the whole process group. Workers ignore SIGINT, and the
parent, on KeyboardInterrupt, sends each busy worker one SIGTERM: a trainer takes it as a stop
request (checkpoint, status 'interrupted'), and any other step stops at once (what it wrote per
batch is kept). A worker killed outright (SIGKILL, out of memory) fails its job, with the run
left as a kill leaves it (resumable), and is replaced. A worker whose parent is gone exits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from .steps import Step

__all__ = ["Job", "JobResult", "run_jobs"]


@dataclass
class Job:
    name: str
    steps: list[Step]
    log: Path


@dataclass
class JobResult:
    name: str
    status: str  # 'done', 'failed' or 'interrupted'
    message: str = ""
    seconds: dict = field(default_factory=dict)  # step command -> seconds
    wall: float = 0.0  # from handing the job to a worker to its result


# -- in the worker ---------------------------------------------------------------------------
def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # the parent died (even by SIGKILL): stop as a kill would
            os._exit(1)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _worker_main(connection, threads: int, parent: int) -> None:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from ..training.stopping import stop_on_sigterm_only

    stop_on_sigterm_only()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    while True:
        try:
            job = connection.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        connection.send(_run_job(job))


def _run_job(job: Job) -> JobResult:
    from ..errors import RefbenchError, RunInterrupted

    result = JobResult(job.name, "done")
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
        for step in job.steps:
            print("$ " + step.command_line(), flush=True)
            try:
                seconds = step.run_here()
                result.seconds[step.command] = result.seconds.get(step.command, 0.0) + seconds
                print(f"# {step.command}: {seconds:.1f} s", flush=True)
            except (RunInterrupted, KeyboardInterrupt) as exc:
                result.status, result.message = "interrupted", str(exc) or "interrupted"
            except RefbenchError as exc:
                result.status, result.message = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - a step's bug fails its run, not the plan
                traceback.print_exc()
                result.status, result.message = "failed", f"{type(exc).__name__}: {exc}"
            if result.status != "done":
                print(f"error: {result.message}", flush=True)
                break
    result.message = result.message.strip().splitlines()[-1][:300] if result.message else ""
    return result


# -- in the parent ---------------------------------------------------------------------------
class _Worker:
    def __init__(self, context, threads: int):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_end, threads, os.getpid()), daemon=True)
        self.process.start()
        child_end.close()
        self.job: Job | None = None
        self.handed_at = 0.0

    def hand(self, job: Job) -> None:
        self.job, self.handed_at = job, time.perf_counter()
        self.connection.send(job)

    def close(self, timeout: float) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def run_jobs(jobs: list[Job], *, workers: int, threads: int = 1, on_result=None) -> dict[str, JobResult]:
    """Run every job on at most ``workers`` long-lived processes of ``threads`` threads each;
    returns name -> result, calling ``on_result(result, busy_names)`` as each job ends. Raises
    KeyboardInterrupt after the workers stopped when interrupted."""
    import multiprocessing
    from multiprocessing.connection import wait

    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be >= 1")
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads and DuckDB
    pending, results = list(jobs), {}
    pool = [_start_worker(context, threads) for _ in range(min(workers, len(jobs)))]

    def finish(worker: _Worker, result: JobResult) -> None:
        result.wall = time.perf_counter() - worker.handed_at
        results[result.name] = result
        worker.job = None
        if on_result:
            on_result(result, [w.job.name for w in pool if w.job])

    interrupted = False
    try:
        while pending or any(w.job for w in pool):
            for worker in pool:
                if worker.job is None and pending:
                    worker.hand(pending.pop(0))
            busy = [w for w in pool if w.job]
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
            for worker in busy:
                if worker.connection in ready or worker.connection.poll():
                    try:
                        finish(worker, worker.connection.recv())
                        continue
                    except EOFError:
                        pass
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    worker.process.join()
                    finish(
                        worker,
                        JobResult(
                            worker.job.name,
                            "failed",
                            f"its worker process died (exit code {worker.process.exitcode}); log: {worker.job.log}",
                        ),
                    )
                    worker.connection.close()
                    pool.remove(worker)
                    if pending:  # a fresh process for the jobs left
                        pool.append(_start_worker(context, threads))
    except KeyboardInterrupt:
        interrupted = True
        for worker in pool:
            if worker.job is not None and worker.process.is_alive():
                worker.process.terminate()  # one SIGTERM: a trainer checkpoints and stops
        raise
    finally:
        for worker in pool:  # a stopped worker ends its job, then reads "no more jobs" and exits
            worker.close(timeout=600 if interrupted and worker.job else 5)
    return results


def _start_worker(context, threads: int) -> _Worker:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a worker ignores Ctrl-C from its first instant
    try:
        return _Worker(context, threads)
    finally:
        signal.signal(signal.SIGINT, previous)
