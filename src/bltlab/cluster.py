"""Where run specs train: each is `bltlab train --config spec.yaml` in a process of its own,
here (`workers` at a time, each with its share of the threads) or as a job of an existing
scheduler through submitit (SLURM; submitit's local executor runs the same jobs on this
machine, which is how CI tests it). The frontier's grid points and `bltlab run --workers
N`'s models train this way. Each job writes into its run's own folder under
the save dir, which a cluster's machines share; the results are read from there.

Why submitit rather than Ray: the points are independent batch jobs with no traffic
between them, which is what a SLURM job is; submitit submits them with no daemon or
cluster to set up and is small (pure Python), where Ray needs a running Ray cluster and
hundreds of MB. A job runs the command line itself, so a point trained on the cluster is
the same run, resumable the same way, as one trained here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bltlab.errors import BltlabError
from bltlab.fileio import write_atomic
from bltlab.spec import RunSpec

EXECUTORS = ("slurm", "submitit-local")


def run_jobs(configs: list[Path], folder: Path, executor: str, threads: int,
             partition: str | None = None, minutes: int = 240) -> None:
    """Train one run per spec file as a job and wait for all of them; a failed job is a
    one-line error naming its log."""
    try:
        import submitit
    except ImportError:
        raise BltlabError("--executor: submitit is not installed (pip install submitit)") \
            from None
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm" if executor == "slurm"
                               else "local")
    params = {"timeout_min": minutes, "cpus_per_task": threads, "nodes": 1}
    if executor == "slurm" and partition:
        params["slurm_partition"] = partition
    ex.update_parameters(**params)
    jobs = [ex.submit(submitit.helpers.CommandFunction(
        [sys.executable, "-m", "bltlab.cli", "--threads", str(threads), "train", "--config",
         str(config)])) for config in configs]
    for config, job in zip(configs, jobs):
        try:
            job.result()
        except Exception as e:  # submitit raises its jobs' failures as they come
            raise BltlabError(f"cluster job for {config.parent} failed ({type(e).__name__}); "
                              f"its log: {job.paths.stderr}") from None


class Workers:
    """The worker processes of a set of runs: signals sent to this process reach them (SIGINT
    and SIGTERM are passed on; a killed parent takes them down with it, see
    runtime.die_with_parent), so no run trains on with no one to wait for it."""

    def __init__(self):
        self.live: set[subprocess.Popen] = set()
        self.guard = threading.Lock()
        self.stopped = False  # a signal came: queued runs start no worker

    def run(self, args: list[str], log) -> int:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BLTLAB_PARENT": str(os.getpid())}
        with self.guard:
            if self.stopped:
                return 128 + signal.SIGTERM
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
            self.live.add(proc)
        try:
            return proc.wait()
        finally:
            with self.guard:
                self.live.discard(proc)

    def signal(self, signum: int) -> None:
        with self.guard:
            self.stopped = True
            for proc in self.live:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    @contextlib.contextmanager
    def passing_signals(self):
        """SIGINT and SIGTERM to this process go to every worker, then end it."""
        def forward(signum, frame):
            self.signal(signum)
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.signal(signal.SIGTERM)  # nothing left running behind us


def job_files(spec: RunSpec) -> tuple[Path, Path]:
    """A run's spec file and log, in its save dir and named by its mode (as its
    checkpoints are), so the runs of several modes may share a folder."""
    folder = Path(spec.train.save_dir)
    return folder / f"spec_{spec.mode}.yaml", folder / f"train_{spec.mode}.log"


def spec_file(spec: RunSpec) -> Path:
    """The run's spec, written into its save dir (what its job trains)."""
    config = job_files(spec)[0]
    config.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(config, lambda f: f.write(spec.to_yaml()))
    return config


def run_here(spec: RunSpec, threads: int, workers: Workers) -> str:
    """Train one run in a process of its own (its log beside its checkpoints); returns
    the run's name (its folder and mode)."""
    config, log_path = job_files(spec)
    spec_file(spec)
    with open(log_path, "a", encoding="utf-8") as log:
        code = workers.run([sys.executable, "-m", "bltlab.cli", "--threads", str(threads),
                            "train", "--config", str(config)], log)
    if code:
        raise BltlabError(f"training {config.parent} ({spec.mode}) failed: see {log_path}")
    return f"{config.parent} ({spec.mode})"


@dataclass(frozen=True)
class Executor:
    """Where runs train: here, `workers` at a time, or as cluster jobs (`kind` one of
    EXECUTORS; submitit keeps its job files in `folder`)."""

    kind: str = "local"
    workers: int = 1
    partition: str | None = None
    minutes: int = 240
    folder: Path = Path("checkpoints/jobs")


def train_points(specs: dict, executor: Executor | int,
                 then: Callable[[Any, int], None] | None = None,
                 skip: Callable[[Any], str | None] | None = None) -> None:
    """Train the runs of `specs`: here, `workers` at a time, each with its share of the
    threads this process may use (`bltlab --threads N`), or as cluster jobs. Here,
    `then(key, threads)` follows each run as soon as it ends, in this process, with the
    threads no other run is using (runs still training keep theirs), and a run for which
    `skip(key)` gives a reason, asked as its turn comes, is not started."""
    executor = executor if isinstance(executor, Executor) else Executor(workers=executor)
    cores = torch.get_num_threads()
    threads = max(1, cores // executor.workers)
    if executor.kind != "local":
        if specs:
            run_jobs([spec_file(s) for s in specs.values()], executor.folder, executor.kind,
                     threads, executor.partition, executor.minutes)
        return
    procs = Workers()

    def one(key) -> None:
        why = skip(key) if skip else None
        if why:
            print(why, flush=True)
            return
        print(f"trained {run_here(specs[key], threads, procs)}", flush=True)
        if then:
            then(key, max(1, cores - threads * len(procs.live)))

    with procs.passing_signals(), ThreadPoolExecutor(executor.workers) as pool:
        list(pool.map(one, specs))
