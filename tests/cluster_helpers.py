"""Real Dask clusters for the tests: scheduler and worker processes, TLS certificates, kills.

Processes are started in their own session and always ended by the process-group id of
what was started here (SIGTERM, then SIGKILL after a grace period): no orphan workers.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

#: Seconds to wait for a scheduler file, for workers to register, for processes to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def _stop(process: subprocess.Popen) -> None:
    """End a process started here and its children (its process group), killing if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    # the group may hold worker processes of a nanny even when the leader has exited
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ProcessCluster:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (see :func:`dask_processes`)."""

    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory = directory
        self.env = env
        self.scheduler_file = directory / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        self.address = ""

    def _start(self, name: str, arguments: Sequence[str]) -> subprocess.Popen:
        # the child keeps its own copy of the log's descriptor
        with open(self.directory / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dask", *arguments], stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.directory, start_new_session=True,
            )
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{_log_tail(path)}"
                         for path in sorted(self.directory.glob("*.log")))

    def start_scheduler(self, tls: bool) -> str:
        arguments = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.scheduler_file)]
        if tls:
            arguments += ["--protocol", "tls"]
        scheduler = self._start("scheduler", arguments)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited ({scheduler.returncode}):\n{self.logs()}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = json.loads(self.scheduler_file.read_text())["address"]
                return self.address
            time.sleep(0.1)
        raise TimeoutError(f"no scheduler file after {START_TIMEOUT} s:\n{self.logs()}")

    def start_worker(self, name: str) -> subprocess.Popen:
        return self._start(f"worker-{name}", [
            "worker", "--scheduler-file", str(self.scheduler_file), "--host", "127.0.0.1",
            "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--name", name,
            "--memory-limit", "2GiB", "--local-directory", str(self.directory / name),
            "--death-timeout", "60",
        ])

    def stop(self) -> None:
        # workers first (they would otherwise try to reconnect), the scheduler last
        for process in reversed(self.processes):
            _stop(process)

    def alive(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]


@contextlib.contextmanager
def dask_processes(directory: Path, n_workers: int = 2, tls: bool = False,
                   config_dir: Path | None = None) -> Iterator[ProcessCluster]:
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes (1 thread each).

    They talk over TCP on 127.0.0.1, or over TLS when ``tls`` is true, with the security
    settings read from the Dask configuration files in ``config_dir`` (``DASK_CONFIG``).
    Yields once the scheduler file is written; every process is ended on exit.
    """
    directory.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("DASK_") or key == "DASK_CONFIG"}
    if config_dir is not None:
        env["DASK_CONFIG"] = str(config_dir)
    env["PYTHONUNBUFFERED"] = "1"
    cluster = ProcessCluster(directory, env)
    try:
        cluster.start_scheduler(tls)
        for index in range(n_workers):
            cluster.start_worker(f"w{index}")
        yield cluster
    finally:
        cluster.stop()


def wait_for_workers(client: Any, n: int, cluster: ProcessCluster | None = None) -> None:
    """Wait until ``n`` workers are registered (with the processes' logs on a timeout)."""
    try:
        client.wait_for_workers(n, timeout=START_TIMEOUT)
    except TimeoutError as error:
        logs = cluster.logs() if cluster is not None else ""
        raise TimeoutError(f"{n} workers did not register: {error}\n{logs}") from error


def make_certificates(directory: Path) -> dict[str, str]:
    """A self-signed CA and a certificate it signed for 127.0.0.1/localhost (PEM files).

    Returns the paths as ``{"ca": ..., "cert": ..., "key": ...}``; the one certificate serves
    the scheduler, the workers and the client (Dask checks the CA, not the host name).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("daskmeta test CA")).issuer_name(name("daskmeta test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return {role: str(path) for role, path in paths.items()}


def tls_config(certificates: dict[str, str]) -> dict[str, Any]:
    """The ``distributed`` configuration of TLS everywhere with these certificates."""
    pair = {"cert": certificates["cert"], "key": certificates["key"]}
    return {"distributed": {"comm": {
        "require-encryption": True,
        "tls": {"ca-file": certificates["ca"], "scheduler": dict(pair), "worker": dict(pair),
                "client": dict(pair)},
    }}}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested configuration as dotted keys, for ``dask.config.set`` (which replaces subtrees)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class KillOnTask(WorkerPlugin):
    """Kill the worker process (SIGKILL on its own pid) as it starts its ``after``-th task
    whose key starts with ``prefix`` — once in the whole cluster, claimed by creating
    ``sentinel``, so the worker the nanny restarts (with this plugin again) lives on.

    The kill is certain to fall while that task is executing and others are in flight or
    held in the killed worker's memory, whatever the machine's speed.
    """

    name = "daskmeta-test-kill-on-task"

    def __init__(self, prefix: str, after: int, sentinel: str):
        self.prefix = prefix
        self.after = after
        self.sentinel = sentinel
        self.started = 0

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        self.started += 1
        if self.started < self.after:
            return
        try:
            descriptor = os.open(self.sentinel, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(descriptor, f"{os.getpid()} {key}\n".encode())
        os.close(descriptor)
        os.kill(os.getpid(), signal.SIGKILL)
