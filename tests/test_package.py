"""Package hygiene: the layers import in one direction and ``import daskmeta`` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daskmeta"
#: Pure NumPy/SciPy kernels: no Dask, xarray, file formats or plotting inside.
KERNELS = ["effect_size.py", "kernel.py", "recreation.py", "clusters.py", "coordinates.py",
           *[f"stats/{p.name}" for p in (PACKAGE / "stats").glob("*.py")]]
FORBIDDEN = {"dask", "distributed", "xarray", "zarr", "nibabel", "nilearn", "matplotlib"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", KERNELS)
def test_kernels_do_not_import_dask_or_io(module):
    assert not _imports(PACKAGE / module) & FORBIDDEN


def test_import_daskmeta_is_light():
    code = ("import sys, daskmeta; heavy = {'dask', 'distributed', 'xarray', 'nilearn', "
            "'matplotlib', 'zarr', 'nibabel'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_resolves():
    import daskmeta

    for name in daskmeta.__all__:
        assert getattr(daskmeta, name) is not None


def test_public_names_stay_functions_after_their_modules_are_imported():
    import importlib
    import types

    import daskmeta

    for module in set(daskmeta._API.values()):
        importlib.import_module(module)
    for name in daskmeta.__all__:
        assert not isinstance(getattr(daskmeta, name), types.ModuleType), name
