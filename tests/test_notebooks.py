"""The notebooks in notebooks/ run end to end (small settings) so that they never rot.

Each notebook is executed in a fresh kernel of this interpreter with
``DASKMETA_NOTEBOOK_FAST=1`` (few randomizations, isotropic kernel, one Dask worker) and
the repository root as working directory, as a user running it from there would. Outputs
are checked in memory. With ``DASKMETA_WRITE_NOTEBOOKS=1`` (``make notebooks``) the executed
notebooks are written back to notebooks/, so that the committed ones show the outputs of
this very execution (figures and tables) and read without running. Executing one takes
30-60 s on 2 cores (a LocalCluster, the recreation of 24 study maps), hence ``slow``.
"""

import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (a declared test dependency: missing is an error, not a skip)
import nbclient
import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
FAST_LINE = 'FAST = os.environ.get("DASKMETA_NOTEBOOK_FAST") == "1"'
#: Appended to the in-memory copy: which interpreter the kernel ran.
PROBE = "import sys; print('KERNEL_PYTHON=' + sys.executable)"
#: Set to 1 to write the executed notebooks back (``make notebooks``).
WRITE_BACK = os.environ.get("DASKMETA_WRITE_NOTEBOOKS") == "1"
#: A committed notebook with its outputs stays below this size (bytes).
MAX_NOTEBOOK_BYTES = 4_000_000


class ThisPythonKernelManager(AsyncKernelManager):
    """An ipykernel of the interpreter running the tests, whatever kernelspecs are installed."""

    def format_kernel_cmd(self, extra_arguments=None):
        return [sys.executable, "-m", "ipykernel_launcher", "-f",
                os.path.realpath(self.connection_file), *(extra_arguments or [])]


def outputs(nb):
    """Every output of the executed code cells, in order."""
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def stdout(nb):
    return "".join(o.get("text", "") for o in outputs(nb)
                   if o.output_type == "stream" and o.name == "stdout")


def count(nb, mime):
    return sum(mime in o.get("data", {}) for o in outputs(nb)
               if o.output_type in ("display_data", "execute_result"))


def html_tables(nb):
    return [o["data"]["text/html"] for o in outputs(nb)
            if o.output_type == "execute_result" and "<table" in o.get("data", {}).get("text/html", "")]


def execute(path, monkeypatch):
    monkeypatch.setenv("DASKMETA_NOTEBOOK_FAST", "1")  # the kernel inherits the environment
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", kernel_manager_class=ThisPythonKernelManager,
        resources={"metadata": {"path": str(REPO_ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    assert f"KERNEL_PYTHON={sys.executable}" in stdout(nb)
    if WRITE_BACK:
        committed = nbformat.from_dict(nb)
        committed.cells = committed.cells[:-1]  # without the probe
        nbformat.write(committed, path)
        assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    return nb


def test_notebooks_are_committed_with_their_outputs():
    """Each notebook reads without running: every code cell ran, in order, and the figures
    and tables are there (``make notebooks`` writes them), at a reasonable size."""
    names = [path.name for path in NOTEBOOKS]
    assert "01_walkthrough.ipynb" in names and "02_sweep.ipynb" in names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert FAST_LINE in code[0].source, f"{path.name}: first code cell must read {FAST_LINE}"
        counts = [cell.execution_count for cell in code]
        assert counts == list(range(1, len(code) + 1)), (
            f"{path.name}: not executed top to bottom in one run ({counts}); run `make notebooks`")
        assert not [o for o in outputs(nb) if o.output_type == "error"], f"{path.name} has an error output"
        assert count(nb, "image/png") >= 2 and html_tables(nb), f"{path.name}: figures or tables missing"
        assert path.stat().st_size < MAX_NOTEBOOK_BYTES


@pytest.mark.slow
def test_walkthrough(monkeypatch):
    nb = execute(REPO_ROOT / "notebooks" / "01_walkthrough.ipynb", monkeypatch)
    text = stdout(nb)
    assert "FAST=True" in text and f"working in {REPO_ROOT}" in text
    assert "Dask dashboard: http" in text
    assert "StudySet 24 studies" in text
    assert "Egger's test at" in text
    tables = html_tables(nb)
    assert any("sdm_z" in table and "region" in table for table in tables)  # the clusters table
    assert any("jackknife" in table for table in tables)  # the replication counts
    # glass brain, stat map, meta-regression scatter and funnel plot; the SDM-PSI z map
    assert count(nb, "image/png") >= 5
    # SDM-PSI: the lazy imputations, the computation on the cluster with its bar, the result
    results = [o["data"].get("text/plain", "") for o in outputs(nb) if o.output_type == "execute_result"]
    assert any("imputation: 3" in r and "study: 4" in r and "dask.array" in r for r in results)
    assert "100% Completed" in text
    assert "SDM-PSI: 4 studies, 3 imputations, 20 permutations; largest |z|" in text
    assert any("p_fwe_tfce" in r and "dask.array" not in r for r in results)
    assert any("Thresholded" in r for r in results)  # the clusters of p_fwe_tfce < 0.05


@pytest.mark.slow
def test_sweep(monkeypatch):
    nb = execute(REPO_ROOT / "notebooks" / "02_sweep.ipynb", monkeypatch)
    text = stdout(nb)
    assert "Dask dashboard: http" in text
    assert "5 variants: 2 kernels, 2 pooled analyses" in text
    assert "computed 5 variant(s) now" in text
    assert any("fraction" in table and "survived" in table for table in html_tables(nb))
    assert count(nb, "image/png") >= 2  # stability plot and significant-fraction glass brain
