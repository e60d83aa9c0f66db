"""deploy/: every manifest parses and carries pyproject's version, image tag and pins; TLS works.

The image tag is ``ghcr.io/daskmeta/daskmeta:<[project].version>``; ``deploy/constraints.txt``
pins exactly ``[project].dependencies`` at the versions installed here, so the client and the
image run the same packages. ``.venv/bin/python deploy/sync.py`` rewrites what these tests check.
No Docker, Kubernetes, batch system or network is needed: the TLS tests run on loopback.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import py_compile
import re
import sys
import tomllib
from pathlib import Path

import dask
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
with open(ROOT / "pyproject.toml", "rb") as _f:
    PROJECT = tomllib.load(_f)["project"]
VERSION = PROJECT["version"]
REPOSITORY = "ghcr.io/daskmeta/daskmeta"
IMAGE = f"{REPOSITORY}:{VERSION}"
FIX = "out of date: run `.venv/bin/python deploy/sync.py`"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")
DEPLOY_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
YAML_FILES = [p for p in DEPLOY_FILES if p.suffix in {".yaml", ".yml"}]
PY_FILES = [p for p in DEPLOY_FILES if p.suffix == ".py"]
PYTHON_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml(relative: str):
    return yaml.safe_load((DEPLOY / relative).read_text())


def load_module(relative: str, monkeypatch=None):
    """Import a deploy/ script by path (its folder on sys.path, as when it runs as a script)."""
    path = DEPLOY / relative
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"deploy_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def constant(relative: str, name: str):
    """A module-level constant of a deploy/ Python file, read without running the file."""
    for node in ast.parse((DEPLOY / relative).read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{relative} defines no {name}")


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements/constraints file; anything else but comments fails."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{rel(path)}:{number}: not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{rel(path)}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def installed(name: str) -> str:
    return importlib.metadata.version(name)


def images_in(node) -> list[str]:
    """Every ``image:`` value anywhere in a parsed manifest."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "image" and isinstance(v, str)]
        return found + [i for v in node.values() for i in images_in(v)]
    if isinstance(node, list):
        return [i for v in node for i in images_in(v)]
    return []


def containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec["containers"]}


def dotted(tree: dict, prefix: str = "") -> dict:
    """Nested Dask settings as dotted keys: ``dask.config.set`` merges them as DASK_CONFIG would."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def assert_dask_settings_exist(env: dict[str, str], where: str) -> None:
    """``DASK_*`` variables name real Dask settings (a typo would be silently ignored)."""
    import distributed  # noqa: F401 - loads distributed's configuration defaults

    def leaves(tree, prefix=()):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, (*prefix, key))
            else:
                yield ".".join((*prefix, key))

    dask_env = {k: v for k, v in env.items() if k.startswith("DASK_")}
    assert dask_env, f"{where}: no DASK_* settings"
    for key in leaves(dask.config.collect_env(dask_env)):
        dask.config.get(key)  # KeyError if Dask has no such setting


# --- every file -------------------------------------------------------------------------------

def test_deploy_has_every_engine():
    expected = [
        "README.md", "Dockerfile", "Dockerfile.dockerignore", "constraints.txt",
        "requirements-cluster.txt", "sync.py",
        "kubernetes/daskcluster.yaml", "kubernetes/kubecluster.py", "helm/values.yaml",
        "gateway/config.py", "gateway/cluster_options.yaml", "gateway/client.py",
        "jobqueue/slurm.py", "jobqueue/pbs.py", "jobqueue/jobqueue.yaml", "jobqueue/common.py",
        "tls/make_certs.sh", "tls/make_certs.py", "tls/distributed.yaml",
    ]
    missing = [name for name in expected if not (DEPLOY / name).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_every_yaml_file_parses(path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) and d for d in documents), rel(path)


@pytest.mark.parametrize("path", PY_FILES, ids=rel)
def test_every_python_file_compiles(path, tmp_path):
    # compiling imports nothing: dask_kubernetes, dask_jobqueue, dask_gateway need not be here
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_every_image_tag_in_deploy_is_the_project_version():
    pattern = re.compile(re.escape(REPOSITORY) + r":([0-9A-Za-z_.\-]+)")
    seen = 0
    for path in DEPLOY_FILES:
        for tag in pattern.findall(path.read_text(errors="replace")):
            seen += 1
            assert tag == VERSION, f"{rel(path)}: {REPOSITORY}:{tag} is not :{VERSION}; {FIX}"
        for tag in re.findall(r"\.image\.tag=([0-9A-Za-z_.\-]+)", path.read_text(errors="replace")):
            assert tag == VERSION, f"{rel(path)}: image.tag={tag}; {FIX}"
        for line in path.read_text(errors="replace").splitlines():
            if "# daskmeta-version" in line:
                assert re.search(rf"""(["']){re.escape(VERSION)}\1\s*# daskmeta-version""", line), \
                    f"{rel(path)}: {line.strip()!r}; {FIX}"
    assert seen >= 8


def test_sync_script_finds_nothing_to_update(capsys):
    sync = load_module("sync.py")
    assert sync.main(["--check"]) == 0, capsys.readouterr().out


def test_no_credentials_in_deploy():
    secret = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
                        r"|(secret_access_key|password|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{8,}", re.I)
    for path in DEPLOY_FILES:
        match = secret.search(path.read_text(errors="replace"))
        assert match is None, f"{rel(path)}: {match.group(0)!r}"


def test_readme_has_a_section_per_engine_with_the_daskmeta_command():
    readme = (DEPLOY / "README.md").read_text()
    sections = re.split(r"^## ", readme, flags=re.M)[1:]
    titles = [s.splitlines()[0] for s in sections]
    for engine in ("Container image", "dask-kubernetes operator", "Helm", "Dask Gateway",
                   "SLURM and PBS", "TLS", "object storage"):
        assert any(engine in title for title in titles), engine
    for section in sections:
        if any(word in section.splitlines()[0] for word in ("Container", "Kubernetes", "SLURM", "TLS")):
            assert re.search(r"daskmeta run CONFIG\.yaml --scheduler (tcp|tls)://", section), \
                section.splitlines()[0]
    assert "s3://" in readme and "gs://" in readme


# --- package pins -------------------------------------------------------------------------------

def direct_dependencies() -> dict[str, Requirement]:
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    return {canonicalize_name(r.name): r for r in requirements}


def test_constraints_pin_exactly_the_direct_dependencies():
    pins = read_pins(DEPLOY / "constraints.txt")
    dependencies = direct_dependencies()
    assert set(pins) == set(dependencies), (
        f"constraints.txt pins {sorted(set(pins) - set(dependencies))} that are not "
        f"dependencies and misses {sorted(set(dependencies) - set(pins))}; {FIX}")
    for name, version in pins.items():
        assert dependencies[name].specifier.contains(version, prereleases=True), (
            f"{name}=={version} does not satisfy pyproject's {dependencies[name]}")


def test_constraints_equal_the_versions_installed_here():
    """The client environment runs exactly what the image installs."""
    for name, version in read_pins(DEPLOY / "constraints.txt").items():
        assert installed(name) == version, f"{name}: installed {installed(name)}, pinned {version}; {FIX}"


def test_constraints_and_dockerfile_name_this_python():
    note = re.search(r"^# python: (\d+\.\d+)\b", (DEPLOY / "constraints.txt").read_text(), re.M)
    assert note, "constraints.txt has no '# python: X.Y' line"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    arg = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile, re.M)
    assert arg and "FROM python:${PYTHON_VERSION}-slim" in dockerfile
    assert note.group(1) == arg.group(1) == PYTHON_MINOR


def test_cluster_requirements_are_pinned_and_match_the_client():
    cluster = read_pins(DEPLOY / "requirements-cluster.txt")
    constraints = read_pins(DEPLOY / "constraints.txt")
    assert {"fsspec", "s3fs", "gcsfs", "dask-gateway"} <= set(cluster)
    assert not set(cluster) & set(constraints), "pinned in both files"
    # s3fs requires the fsspec of its own release
    assert cluster["s3fs"] == cluster["fsspec"]
    for name, version in cluster.items():
        try:
            here = installed(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # s3fs, gcsfs, dask-gateway: client-optional
        assert here == version, f"{name}: installed {here}, pinned {version}; {FIX}"


# --- container image ----------------------------------------------------------------------------

def test_dockerfile_installs_the_pinned_project_as_a_non_root_dask_image():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG DASKMETA_VERSION=(\S+)$", text, re.M).group(1) == VERSION, FIX
    assert 'org.opencontainers.image.version="${DASKMETA_VERSION}"' in text
    assert f"-t {IMAGE} " in text
    assert re.search(r"pip install -c deploy/constraints\.txt -r deploy/requirements-cluster\.txt \.",
                     text)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1)
    command = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    assert yaml.safe_load(entrypoint)[0] == "tini"
    assert yaml.safe_load(command) == ["dask", "scheduler"]
    # the dask Helm chart, dask-kubernetes and Dask Gateway default to these command names
    assert "/usr/local/bin/dask-scheduler" in text and "/usr/local/bin/dask-worker" in text


def test_dockerfile_copies_only_what_the_build_context_sends():
    text = (DEPLOY / "Dockerfile").read_text()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    sources = []
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        sources += line.split()[:-1]
    assert "deploy/constraints.txt" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} not sent to docker"


# --- Kubernetes, Helm, Gateway, jobqueue ----------------------------------------------------------

def test_daskcluster_manifest_runs_the_project_image():
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes/daskcluster.yaml").read_text()))
    assert len(documents) == 1
    cluster = documents[0]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert cluster["kind"] == "DaskCluster"
    name = cluster["metadata"]["name"]
    assert cluster["metadata"]["labels"]["app.kubernetes.io/version"] == VERSION
    assert images_in(cluster) and set(images_in(cluster)) == {IMAGE}

    scheduler = containers(cluster["spec"]["scheduler"]["spec"])["scheduler"]
    worker = containers(cluster["spec"]["worker"]["spec"])["worker"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert worker["args"][:2] == ["dask", "worker"]
    assert "$(DASK_WORKER_NAME)" in worker["args"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"
    assert cluster["spec"]["worker"]["replicas"] >= 1
    for container in (scheduler, worker):
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert_dask_settings_exist({e["name"]: e["value"] for e in container["env"]},
                                   f"daskcluster.yaml {container['name']}")
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    assert {p["targetPort"] for p in service["ports"]} == set(ports)


def test_operator_schedulers_keep_the_default_http_routes_and_add_the_api(monkeypatch):
    """The operator retires workers gracefully through the scheduler's HTTP API."""
    import distributed  # noqa: F401 - loads the default routes

    manifest = load_yaml("kubernetes/daskcluster.yaml")
    scheduler = containers(manifest["spec"]["scheduler"]["spec"])["scheduler"]
    kubecluster = load_module("kubernetes/kubecluster.py", monkeypatch)
    for env in ({e["name"]: e["value"] for e in scheduler["env"]}, kubecluster.SCHEDULER_ENV):
        routes = dask.config.collect_env({k: v for k, v in env.items() if k.startswith("DASK_")})
        routes = routes["distributed"]["scheduler"]["http"]["routes"]
        assert set(routes) == {*dask.config.get("distributed.scheduler.http.routes"),
                               "distributed.http.scheduler.api"}


def test_kubecluster_script_uses_the_same_image_and_settings(monkeypatch):
    assert constant("kubernetes/kubecluster.py", "IMAGE") == IMAGE
    module = load_module("kubernetes/kubecluster.py", monkeypatch)  # needs no dask_kubernetes
    manifest = load_yaml("kubernetes/daskcluster.yaml")
    worker = containers(manifest["spec"]["worker"]["spec"])["worker"]
    scheduler = containers(manifest["spec"]["scheduler"]["spec"])["scheduler"]
    assert module.WORKER_RESOURCES == worker["resources"]
    assert module.SCHEDULER_RESOURCES == scheduler["resources"]
    assert module.WORKER_MEMORY == worker["args"][worker["args"].index("--memory-limit") + 1]
    assert_dask_settings_exist(module.ENV, "kubecluster.py")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0


def test_helm_values_run_the_project_image_without_jupyter():
    values = load_yaml("helm/values.yaml")
    for part in ("scheduler", "worker"):
        image = values[part]["image"]
        assert f"{image['repository']}:{image['tag']}" == IMAGE, f"helm {part}: {FIX}"
        assert values[part]["resources"]["limits"]
        assert_dask_settings_exist({e["name"]: e["value"] for e in values[part]["env"]},
                                   f"helm {part}")
    assert values["worker"]["replicas"] >= 1
    assert values["worker"]["threads_per_worker"] == 1
    assert values["worker"]["image"]["dask_worker"] == "dask-worker"
    assert values["jupyter"]["enabled"] is False


def test_gateway_offers_and_requests_the_project_image(monkeypatch):
    options = load_yaml("gateway/cluster_options.yaml")["gateway"]["cluster"]["options"]
    assert options["image"] == IMAGE
    assert constant("gateway/config.py", "DASKMETA_IMAGE") == IMAGE
    assert constant("gateway/client.py", "IMAGE") == IMAGE
    module = load_module("gateway/client.py", monkeypatch)  # needs no dask_gateway
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("script", ["slurm.py", "pbs.py"])
def test_jobqueue_scripts_start_without_dask_jobqueue(script, monkeypatch):
    try:
        module = load_module(f"jobqueue/{script}", monkeypatch)  # imports its folder's common.py
        with pytest.raises(SystemExit) as exit_:
            module.main(["--help"])
        assert exit_.value.code == 0
    finally:
        sys.modules.pop("common", None)


def test_jobqueue_jobs_activate_the_client_environment(tmp_path, monkeypatch):
    common = load_module("jobqueue/common.py", monkeypatch)
    assert common.IMAGE == IMAGE
    args = common.parser("x").parse_args(["--env", str(tmp_path / "venv"), "--cores", "8"])
    kwargs = common.options(args)
    assert kwargs["processes"] == kwargs["cores"] == 8  # single-threaded workers
    assert "python" not in kwargs
    assert kwargs["job_script_prologue"][-1] == f"source {tmp_path / 'venv' / 'bin' / 'activate'}"
    (tmp_path / "conda" / "conda-meta").mkdir(parents=True)
    assert common.job_script_prologue(str(tmp_path / "conda"), None)[-1] == \
        f"conda activate {tmp_path / 'conda'}"
    in_image = common.options(common.parser("x").parse_args(["--container", "/s/daskmeta.sif"]))
    assert in_image["python"] == "apptainer exec /s/daskmeta.sif python"
    assert not any("activate" in line for line in in_image["job_script_prologue"])
    for kind in ("slurm", "pbs"):
        config = load_yaml("jobqueue/jobqueue.yaml")["jobqueue"][kind]
        assert config["processes"] == config["cores"]
        assert any("activate" in line for line in config["job-script-prologue"])
        assert {"cores", "memory", "walltime"} <= set(config)
