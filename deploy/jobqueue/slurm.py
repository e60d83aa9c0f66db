"""A daskmeta Dask cluster on a SLURM machine: dask-jobqueue's SLURMCluster.

Run it on a login node from the environment that runs daskmeta (a venv or conda env on a
filesystem the compute nodes see, with ``pip install -c deploy/constraints.txt dask-jobqueue``);
the scheduler runs here and each batch job starts ``--cores`` single-threaded workers that
activate the same environment (or, with ``--container``, run in the daskmeta image).

    python deploy/jobqueue/slurm.py --jobs 4 --cores 16 --memory 64GB --walltime 04:00:00 \\
        --account PROJECT -- run CONFIG.yaml
    python deploy/jobqueue/slurm.py --jobs 4 --account PROJECT
        prints DASK_SCHEDULER_ADDRESS=tcp://HOST:PORT; in another shell:
        daskmeta run CONFIG.yaml --scheduler tcp://HOST:PORT
    python deploy/jobqueue/slurm.py --print-job-script      # the sbatch script, nothing submitted

The same settings in Dask configuration form: deploy/jobqueue/jobqueue.yaml.
"""

from __future__ import annotations

import sys

from common import options, parser, serve


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--job-extra", action="append", default=[], metavar="DIRECTIVE",
                   help="extra #SBATCH directive, e.g. --job-extra=--constraint=cpu (repeatable)")
    args = p.parse_args(argv)

    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        **options(args),
        job_extra_directives=args.job_extra,
        job_name="daskmeta",
    )
    try:
        return serve(cluster, args)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
