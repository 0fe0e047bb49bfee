"""Grid points on a cluster: each point's `bltlab train --config spec.yaml` becomes a job of
an existing scheduler through submitit (SLURM; submitit's local executor runs the same
jobs on this machine, which is how CI tests it). Each job writes into the point's own
folder under the save dir, which the cluster's machines share; the frontier then reads
every finished point from there.

Why submitit rather than Ray: the points are independent batch jobs with no traffic
between them, which is what a SLURM job is; submitit submits them with no daemon or
cluster to set up and is small (pure Python), where Ray needs a running Ray cluster and
hundreds of MB. A job runs the command line itself, so a point trained on the cluster is
the same run, resumable the same way, as one trained here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bltlab.errors import BltlabError

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
