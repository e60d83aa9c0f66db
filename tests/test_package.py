"""Package hygiene: ``import daskmeta`` stays light and its public names resolve.

The direction of imports and the purity of the kernels: tests/test_layers.py.
"""

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "daskmeta"


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
