"""Make a private CA and TLS certificates for a daskmeta Dask cluster (scheduler, worker, client).

Usage::

    python deploy/tls/make_certs.py DIR [--san HOST ...] [--days 365]

Writes into DIR (created, mode 0700)::

    ca.pem  ca-key.pem                   the cluster's own certificate authority
    scheduler.pem  scheduler-key.pem     server and client auth (the scheduler also connects)
    worker.pem  worker-key.pem           server and client auth
    client.pem  client-key.pem           client auth (the daskmeta command, a notebook)
    distributed.yaml                     deploy/tls/distributed.yaml with its paths set to DIR

Keys are written with mode 0600. Dask checks that every peer's certificate is signed by the CA
and does not check host names, so the subject alternative names (``--san``) are informational;
give the hosts anyway. Needs the ``cryptography`` package (installed with Dask's TLS support);
``make_certs.sh`` does the same with the ``openssl`` command.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

#: Where deploy/tls/distributed.yaml expects the files (the image's and Kubernetes' mount point).
TEMPLATE_DIR = "/etc/daskmeta/tls"
TEMPLATE = Path(__file__).resolve().with_name("distributed.yaml")
ROLES = ("scheduler", "worker", "client")
DEFAULT_SANS = ("localhost", "127.0.0.1", "daskmeta-scheduler")


def render_config(directory: str | os.PathLike, template: str | None = None) -> str:
    """The TLS Dask configuration with its certificate paths moved to ``directory``."""
    text = TEMPLATE.read_text() if template is None else template
    return text.replace(TEMPLATE_DIR + "/", str(Path(directory).resolve()) + "/")


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "daskmeta cluster"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(hosts):
    from cryptography import x509

    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if private:
        os.chmod(path, 0o600)


def make_certs(directory: str | os.PathLike, sans=DEFAULT_SANS, days: int = 365) -> dict[str, Path]:
    """Write the CA, the role certificates and keys and ``distributed.yaml``; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("daskmeta-ca")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": out / "ca.pem", "ca-key": out / "ca-key.pem"}
    _write(paths["ca"], ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(paths["ca-key"], pem_key(ca_key), private=True)

    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role != "client":
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"daskmeta-{role}")).issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(_sans(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths[role] = out / f"{role}.pem"
        paths[f"{role}-key"] = out / f"{role}-key.pem"
        _write(paths[role], cert.public_bytes(serialization.Encoding.PEM), private=False)
        _write(paths[f"{role}-key"], pem_key(key), private=True)

    paths["config"] = out / "distributed.yaml"
    _write(paths["config"], render_config(out).encode(), private=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="output folder (created)")
    parser.add_argument("--san", action="append", metavar="HOST",
                        help="host name or IP address to put in the certificates (repeatable; "
                        f"default: {', '.join(DEFAULT_SANS)})")
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    args = parser.parse_args(argv)
    paths = make_certs(args.directory, sans=args.san or DEFAULT_SANS, days=args.days)
    print(f"wrote {', '.join(p.name for p in paths.values())} to {Path(args.directory).resolve()}")
    print(f"use it with: export DASK_CONFIG={paths['config'].resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
