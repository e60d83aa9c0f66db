"""Keep deploy/ in step with pyproject.toml and the client environment.

Run it with the client's Python (the one that runs ``daskmeta``)::

    .venv/bin/python deploy/sync.py           # rewrite the pins and the image tag
    .venv/bin/python deploy/sync.py --check   # exit 1 (and say what differs) if out of date

It writes ``deploy/constraints.txt`` (an exact pin of every direct runtime dependency in
``[project].dependencies``, at the version installed in this environment), refreshes the pins in
``deploy/requirements-cluster.txt`` of packages installed here, and sets the image tag
``ghcr.io/daskmeta/daskmeta:<version>`` (and the version in the Dockerfile, the Helm values and
the gateway options) to ``[project].version``. ``tests/test_deploy.py`` checks the same things.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
REGISTRY = "ghcr.io/daskmeta/daskmeta"
TAG_RE = re.compile(re.escape(REGISTRY) + r":[0-9A-Za-z_.\-]+")
# a quoted value followed by the marker comment, e.g. `tag: "0.1.0"  # daskmeta-version`
MARKED_RE = re.compile(r"""(["'])[^"'\n]*\1(\s*#\s*daskmeta-version)""")
DOCKER_ARG_RE = re.compile(r"^(ARG DASKMETA_VERSION=)\S+$", re.M)
# helm --set of a chart's image tag, e.g. `--set gateway.backend.image.tag=0.1.0`
SET_TAG_RE = re.compile(r"(\.image\.tag=)[0-9A-Za-z_.\-]+")
NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*$")
TEXT_SUFFIXES = {".yaml", ".yml", ".py", ".md", ".txt", ".sh", ""}


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``PyYAML`` -> ``pyyaml``, ``dask_jobqueue`` -> ``dask-jobqueue``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def direct_dependencies(project: dict | None = None) -> list[str]:
    """Names (as written, without extras or markers) of ``[project].dependencies``."""
    project = project or pyproject()
    names = []
    for requirement in project["dependencies"]:
        match = NAME_RE.match(requirement)
        if not match:
            raise ValueError(f"cannot read a package name from {requirement!r}")
        names.append(match.group(1))
    return names


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def constraints_text(project: dict | None = None) -> str:
    project = project or pyproject()
    lines = [
        f"# daskmeta {project['version']}: exact versions of its direct runtime dependencies",
        "# ([project].dependencies in pyproject.toml) as installed in the client environment.",
        "# The worker/scheduler image installs with `pip install -c deploy/constraints.txt .`, so the",
        "# client, the scheduler and the workers run the same versions (Dask needs that).",
        "# Do not edit by hand: `.venv/bin/python deploy/sync.py` regenerates this file.",
        f"# python: {python_minor()}  (the image is built FROM python:{python_minor()}-slim; the client",
        "#   must run the same Python minor version)",
    ]
    for name in direct_dependencies(project):
        lines.append(f"{canonical(name)}=={importlib.metadata.version(name)}")
    return "\n".join(lines) + "\n"


def refresh_cluster_requirements(text: str) -> str:
    """Re-pin the packages of requirements-cluster.txt that are installed in this environment."""
    out = []
    for line in text.splitlines():
        match = PIN_RE.match(line)
        if match:
            try:
                line = f"{match.group(1)}=={importlib.metadata.version(match.group(1))}"
            except importlib.metadata.PackageNotFoundError:
                pass  # e.g. s3fs, gcsfs, dask-gateway: pinned by hand
        out.append(line)
    return "\n".join(out) + "\n"


def retag(text: str, version: str) -> str:
    text = TAG_RE.sub(f"{REGISTRY}:{version}", text)
    text = MARKED_RE.sub(lambda m: f"{m.group(1)}{version}{m.group(1)}{m.group(2)}", text)
    text = SET_TAG_RE.sub(lambda m: f"{m.group(1)}{version}", text)
    return DOCKER_ARG_RE.sub(lambda m: f"{m.group(1)}{version}", text)


def expected_files() -> dict[Path, str]:
    """Every deploy/ file whose content sync.py owns, with the content it should have."""
    project = pyproject()
    version = project["version"]
    files = {DEPLOY / "constraints.txt": constraints_text(project)}
    cluster = DEPLOY / "requirements-cluster.txt"
    files[cluster] = refresh_cluster_requirements(cluster.read_text())
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file() or path == Path(__file__).resolve() or path in files:
            continue
        if "__pycache__" in path.parts:
            continue
        if path.suffix not in TEXT_SUFFIXES and path.name != "Dockerfile":
            continue
        text = path.read_text()
        new = retag(text, version)
        if new != text:
            files[path] = new
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if out of date")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in expected_files().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        stale += 1
        rel = path.relative_to(ROOT)
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{rel} (now)", f"{rel} (expected)"))
        else:
            path.write_text(text)
            print(f"updated {rel}")
    if args.check and stale:
        print(f"{stale} file(s) out of date: run {Path(sys.executable).name} deploy/sync.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
