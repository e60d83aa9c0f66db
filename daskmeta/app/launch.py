"""Helpers for the launch scripts of ``deploy/``: run a command on a cluster they started."""

from __future__ import annotations

import time

from daskmeta.app.cli import app
from daskmeta.app.dask_client import say


def run_command(command: list[str], scheduler: str) -> int:
    """Run a ``daskmeta`` command line in this process on the cluster at ``scheduler``.

    For the launch scripts of ``deploy/``: ``run_command(["run", "analysis.yaml"], address)``.
    Returns the command's exit status.
    """

    try:
        app(args=[*command, "--scheduler", scheduler], prog_name="daskmeta")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def hold_until_interrupted(message: str = "cluster is up; Ctrl-C here to stop") -> int:
    """Keep a cluster this process started alive until Ctrl-C; returns 0."""
    say(message)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
