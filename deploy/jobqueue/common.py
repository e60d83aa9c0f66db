"""Shared by slurm.py and pbs.py (run as scripts, so this folder is on sys.path)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from daskmeta.app.launch import hold_until_interrupted, run_command

IMAGE = "ghcr.io/daskmeta/daskmeta:0.1.0"
THREAD_ENV = "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--jobs", type=int, default=2, help="batch jobs to submit (default 2)")
    p.add_argument("--cores", type=int, default=16,
                   help="cores per job; one single-threaded worker per core (default 16)")
    p.add_argument("--memory", default="64GB", help="memory per job (default 64GB)")
    p.add_argument("--walltime", default="04:00:00", help="per job (default 04:00:00)")
    p.add_argument("--queue", default=None, help="partition/queue")
    p.add_argument("--account", default=None, help="account/project to charge")
    p.add_argument("--interface", default=None,
                   help="network interface of scheduler and workers, e.g. ib0 (default: any)")
    p.add_argument("--local-directory", default=None,
                   help="fast node-local disk for spilling, e.g. '$TMPDIR' (evaluated in the job)")
    p.add_argument("--log-directory", default=None, help="where job stdout/stderr go")
    p.add_argument("--env", default=sys.prefix,
                   help="venv or conda env the jobs activate (default: this Python's, "
                   f"{sys.prefix}); must be on a filesystem the compute nodes see")
    p.add_argument("--container", default=None, metavar="SIF",
                   help="run workers in this Apptainer image instead (apptainer pull "
                   f"daskmeta.sif docker://{IMAGE})")
    p.add_argument("--print-job-script", action="store_true",
                   help="print the batch script of one job and exit (submits nothing)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="after --: a daskmeta command to run on the cluster, e.g. run CONFIG.yaml")
    return p


def job_script_prologue(env: str, container: str | None) -> list[str]:
    """Shell lines run by each job before its workers: activate the client's environment."""
    lines = [THREAD_ENV]
    if container:
        return lines
    prefix = Path(env)
    if (prefix / "conda-meta").is_dir():
        lines += ['eval "$(conda shell.bash hook)"', f"conda activate {shlex.quote(str(prefix))}"]
    else:
        lines.append(f"source {shlex.quote(str(prefix / 'bin' / 'activate'))}")
    return lines


def python_command(container: str | None) -> str | None:
    """The Python that runs the workers: Apptainer's image, or (None) this environment's."""
    if container:
        return f"apptainer exec {shlex.quote(container)} python"
    return None


def options(args: argparse.Namespace) -> dict:
    """Keyword arguments common to dask-jobqueue's cluster classes."""
    kwargs = {
        "cores": args.cores,
        "processes": args.cores,  # daskmeta's kernels are single-threaded: 1 thread per worker
        "memory": args.memory,
        "walltime": args.walltime,
        "queue": args.queue,
        "account": args.account,
        "interface": args.interface,
        "local_directory": args.local_directory,
        "log_directory": args.log_directory,
        "job_script_prologue": job_script_prologue(args.env, args.container),
        "scheduler_options": {"dashboard_address": ":8787"},
    }
    python = python_command(args.container)
    if python:
        kwargs["python"] = python
    return kwargs


def serve(cluster, args: argparse.Namespace) -> int:
    """Submit the jobs, then run the daskmeta command, or print the address and wait."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.print_job_script:
        print(cluster.job_script())
        return 0
    cluster.scale(jobs=args.jobs)
    print(f"DASK_SCHEDULER_ADDRESS={cluster.scheduler_address}", flush=True)
    print(f"dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
    if command:
        return run_command(command, cluster.scheduler_address)
    return hold_until_interrupted("jobs submitted; the cluster lives while this runs: Ctrl-C to stop")
