"""Where a run's logs go: Dask's, distributed's, bokeh's and tornado's to a file.

During ``daskmeta run`` (and the other commands that start a cluster) the terminal shows
daskmeta's own lines, the dashboard link and the progress bars. The libraries' log
records (the scheduler's shuffle notices, a dashboard websocket closing, a worker's
memory warnings) go to ``daskmeta.log`` in the run's output folder, in this process and
in the worker processes of a LocalCluster started meanwhile. Nothing is configured at
``import daskmeta``: only :func:`log_to_file`, for the time it is entered, changes logging.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Name of the log file in the output folder.
LOG_NAME = "daskmeta.log"
#: Loggers sent to the file and their levels (distributed's defaults; tornado and bokeh
#: errors, such as a dashboard tab's websocket closing, are kept in the file).
LEVELS: dict[str, str] = {
    "distributed": "INFO",
    "distributed.client": "WARNING",
    "distributed.gc": "WARNING",
    "dask": "WARNING",
    "bokeh": "ERROR",
    "tornado": "WARNING",
    "tornado.application": "ERROR",
}
#: The libraries whose loggers (and sub-loggers) leave the terminal.
LIBRARIES = ("distributed", "dask", "bokeh", "tornado")
#: Dask configuration read by each new worker process when it imports distributed.
WORKER_ENV = "DASK_DISTRIBUTED__LOGGING"
FORMAT = "%(asctime)s - %(process)d - %(name)s - %(levelname)s - %(message)s"


def log_path(folder: str | os.PathLike) -> Path:
    """The log file of a run whose outputs go to ``folder``."""
    return Path(folder) / LOG_NAME


def worker_logging(path: Path) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` schema sending :data:`LEVELS` to ``path``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path),
                              "formatter": "plain", "mode": "a", "encoding": "utf-8"}},
        "loggers": {name: {"level": level, "handlers": ["file"], "propagate": False}
                    for name, level in LEVELS.items()},
    }


def _library_loggers() -> list[logging.Logger]:
    """The existing loggers of :data:`LIBRARIES` with handlers of their own, and the tops."""
    names = set(LEVELS)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.handlers and name.split(".")[0] in LIBRARIES:
            names.add(name)
    return [logging.getLogger(name) for name in sorted(names)]


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def log_to_file(folder: str | os.PathLike) -> Iterator[Path]:
    """Send the libraries' logs to ``folder/daskmeta.log`` while the context is entered.

    Parameters
    ----------
    folder : path
        The run's output folder (created if missing).

    Yields
    ------
    Path
        The log file (appended to; it exists once the context is entered).

    Notes
    -----
    In this process, each logger of :data:`LIBRARIES` that has handlers (distributed puts
    a terminal handler on its own at import) writes to the file instead, and the top ones
    stop propagating to the root logger; all is restored on exit. Worker processes of a
    LocalCluster started meanwhile read the same set-up from ``$DASK_DISTRIBUTED__LOGGING``
    when they import distributed (Dask's ``distributed.logging`` configuration key).
    """
    # distributed puts its terminal handlers on at import: import it first, so that they are
    # among those replaced (imported later, inside the context, they would print anyway)
    import distributed  # noqa: F401

    path = log_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    saved = []
    for logger in _library_loggers():
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        if logger.name in LEVELS and logger.level == logging.NOTSET:
            logger.setLevel(LEVELS[logger.name])
    try:
        with _environ(WORKER_ENV, repr(worker_logging(path))):
            yield path
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()
