"""The ``daskmeta`` command line."""

from __future__ import annotations

import functools
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from daskmeta.errors import DaskmetaError, DaskmetaWarning

app = typer.Typer(
    name="daskmeta",
    help="Seed-based d mapping (SDM) meta-analysis on Dask.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SchedulerOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option(
        "--scheduler",
        envvar="DASK_SCHEDULER_ADDRESS",
        help="Dask scheduler address (tcp://HOST:PORT), or 'synchronous'/'threads'; "
        "default: a LocalCluster sized to this machine.",
    ),
]

DashboardOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option(
        "--dashboard-address",
        help="HOST:PORT of a new LocalCluster's dashboard; default 127.0.0.1:8787 (this "
        "machine only: use an SSH tunnel from elsewhere). 0.0.0.0:8787 exposes it on every "
        "interface.",
    ),
]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"daskmeta: error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def handles_errors(function):
    """Turn daskmeta's input, config and store errors into a message and exit code 2."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DaskmetaWarning):
                typer.secho(f"daskmeta: warning: {message}", fg=typer.colors.YELLOW, err=True)
            else:
                sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return function(*args, **kwargs)
        except KeyboardInterrupt:
            typer.secho("daskmeta: interrupted; what was completely written stays in the store, "
                        "rerun the same command to resume", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None
        except (DaskmetaError, FileNotFoundError) as exc:
            _fail(str(exc))
        except ValueError as exc:
            _fail(str(exc))
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends a run like Ctrl-C: partial groups are removed, complete ones stay."""
    raise KeyboardInterrupt


@app.command()
@handles_errors
def preprocess(
    studies: Annotated[Path, typer.Argument(help="SDM folder, studies.tsv, NiMARE JSON or Sleuth file")],
    store: Annotated[str, typer.Option(help="Zarr store to write (STORE/studies): a path or fsspec URL")],
    fwhm: Annotated[float, typer.Option(help="Kernel FWHM in mm")] = 20.0,
    anisotropy: Annotated[float, typer.Option(help="0 = isotropic, 1 = fully anisotropic")] = 1.0,
    mask: Annotated[str, typer.Option(help="gray_matter, white_matter or brain")] = "gray_matter",
    scheduler: SchedulerOption = None,
    dashboard_address: DashboardOption = None,
) -> None:
    """Recreate every study's effect-size maps and write them to STORE/studies.

    Dask's logs go to daskmeta.log beside a local store (else in the current folder).
    """
    from daskmeta.app.logs import log_to_file
    from daskmeta.app.workflow import preprocess_to_store
    from daskmeta.io import load_studies

    study_set = load_studies(studies)
    typer.echo(f"daskmeta: {study_set!r}", err=True)
    with log_to_file(Path(store).parent if "://" not in store else Path.cwd()):
        preprocess_to_store(
            study_set, store, {"fwhm": fwhm, "anisotropy": anisotropy, "mask": mask},
            scheduler=scheduler, force=True, dashboard_address=dashboard_address,
        )
    typer.echo(f"daskmeta: study maps written to {store}/studies")


@app.command()
@handles_errors
def info(store: Annotated[str, typer.Argument(help="A daskmeta Zarr store (path or fsspec URL)")]) -> None:
    """Describe what a store holds."""
    from daskmeta.io.store import list_groups, read_group

    studies = read_group(store, "studies")
    typer.echo(f"{store}: {studies.sizes['study']} studies x {studies.sizes['voxel']} voxels "
               f"(mask {studies.attrs.get('mask')}, fwhm {studies.attrs.get('fwhm')} mm, "
               f"anisotropy {studies.attrs.get('anisotropy')})")
    for name in list_groups(store, "analyses"):
        attrs = read_group(store, f"analyses/{name}").attrs
        typer.echo(f"  analysis {name}: {attrs.get('type', '?')}, {attrs.get('n_studies', '?')} "
                   f"studies, {attrs.get('permutations', '?')} randomizations")


@app.command()
@handles_errors
def export(
    store: Annotated[str, typer.Argument(help="A daskmeta Zarr store (path or fsspec URL)")],
    group: Annotated[Optional[str], typer.Argument(  # noqa: UP045 - typer needs Optional here
        help="'studies' or an analysis name (optional with --nimare)")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for NIfTI files")] = Path("results"),
    nimare: Annotated[Optional[Path], typer.Option(  # noqa: UP045 - typer needs Optional here
        "--nimare", help="Also write the store's study set as a NiMARE Studyset JSON here "
        "(peaks in MNI with their t, sample sizes, covariates, statistical maps)")] = None,
) -> None:
    """Export a store group's maps to NIfTI, or the store's study set for NiMARE (--nimare)."""
    from daskmeta.io.nifti import to_nifti
    from daskmeta.io.store import read_group

    if group is None and nimare is None:
        raise typer.BadParameter("give GROUP ('studies' or an analysis name), --nimare OUT.json, "
                                 "or both")
    if nimare is not None:
        from daskmeta.io.nimads import studyset_from_maps, write_studyset_json

        study_set = studyset_from_maps(read_group(store, "studies"))
        nimare.parent.mkdir(parents=True, exist_ok=True)
        typer.echo(str(write_studyset_json(study_set, nimare, name=store)))
    if group is None:
        return
    path = group if group == "studies" else f"analyses/{group}"
    ds = read_group(store, path)
    for name, var in ds.data_vars.items():
        if "voxel" not in var.dims or var.ndim > 2:
            continue
        var.attrs["mask"] = ds.attrs["mask"]
        written = to_nifti(var, out / group / f"{name}.nii.gz")
        typer.echo(str(written))


@app.command()
@handles_errors
def run(
    config: Annotated[Path, typer.Argument(help="Analysis configuration (YAML)")],
    scheduler: SchedulerOption = None,
    only: Annotated[Optional[list[str]], typer.Option(help="Run only these analyses")] = None,  # noqa: UP045
    permutations: Annotated[Optional[int], typer.Option(help="Override every analysis' randomizations")] = None,  # noqa: UP045,E501
    force: Annotated[bool, typer.Option(help="Recompute even what is complete in the store")] = False,
    dashboard_address: DashboardOption = None,
) -> None:
    """Run a whole meta-analysis project: preprocess, every analysis, thresholds, exports.

    Dask's logs go to daskmeta.log in the configuration's output folder.
    """
    from daskmeta.app.workflow import run_config

    outputs = run_config(config, scheduler=scheduler, force=force, only=only, permutations=permutations,
                         dashboard_address=dashboard_address)
    for name, output in outputs.items():
        typer.echo(f"{name}: {output['out']}")


@app.command()
@handles_errors
def demo(
    scheduler: SchedulerOption = None,
    permutations: Annotated[Optional[int], typer.Option(help="Override the randomizations")] = None,  # noqa: UP045
    force: Annotated[bool, typer.Option(help="Recompute even what is complete in the store")] = False,
    dashboard_address: DashboardOption = None,
) -> None:
    """Run the bundled chronic-low-back-pain example, writing under ./zarr_store and ./results.

    The example ships with daskmeta (:mod:`daskmeta.datasets`), so this runs from any
    directory: its studies are read from the package, its store and outputs are written
    relative to the working directory (``zarr_store/clbp.zarr``, ``results/clbp``).
    """
    import dataclasses

    from daskmeta.app.config import load_config
    from daskmeta.app.workflow import run_config
    from daskmeta.datasets import clbp_config, clbp_folder

    config = dataclasses.replace(load_config(clbp_config()), studies=clbp_folder())
    outputs = run_config(config, scheduler=scheduler, force=force, permutations=permutations,
                         dashboard_address=dashboard_address)
    for name, output in outputs.items():
        typer.echo(f"{name}: {output['out']}")


@app.command()
@handles_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep configuration (YAML with a 'sweep' section)")],
    scheduler: SchedulerOption = None,
    force: Annotated[bool, typer.Option(help="Recompute even the variants complete in the store")] = False,
    dashboard_address: DashboardOption = None,
) -> None:
    """Run a sensitivity sweep: every variant as one graph, then the cluster stability table."""
    from daskmeta.app.workflow import run_sweep

    output = run_sweep(config, scheduler=scheduler, force=force, dashboard_address=dashboard_address)
    typer.echo(f"sweep: {output['out']}")


def _parse_effect(text: str) -> tuple[float, float, float, int]:
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) not in (3, 4):
            raise ValueError
        x, y, z = (float(v) for v in parts[:3])
        sign = int(parts[3]) if len(parts) == 4 else 1
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected X,Y,Z or X,Y,Z,SIGN (MNI mm, sign +1 or -1)") from None
    return x, y, z, sign


@app.command()
@handles_errors
def simulate(
    out: Annotated[Path, typer.Argument(help="SDM folder to write")],
    studies: Annotated[int, typer.Option(help="Number of studies")] = 12,
    maps: Annotated[int, typer.Option(help="How many of them (the first) are given as t-maps")] = 0,
    peaks_from_maps: Annotated[bool, typer.Option(
        help="Write those studies' peaks, read from their t-maps, instead of the maps")] = False,
    effect: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        help="A planted effect X,Y,Z[,SIGN] in MNI mm (repeatable)")] = None,
    one_sample: Annotated[bool, typer.Option(help="One-sample studies")] = False,
    seed: Annotated[int, typer.Option(help="Seed of every draw")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder")] = False,
) -> None:
    """Write a simulated study set: peaks around planted effects, some studies as t-maps.

    The same seed writes the same studies: run it once with --maps K and once with --maps K
    --peaks-from-maps to have K studies both as their maps and as those maps' peaks.
    """
    from daskmeta.testing.simulate import TrueEffect
    from daskmeta.testing.statmaps import simulate_mixed_studies
    from daskmeta.testing.synthetic import simulate_table

    if not 0 <= maps <= studies:
        _fail(f"--maps must be between 0 and --studies ({studies}); {maps} was provided")
    planted = [TrueEffect(x, y, z, sign=sign, name=f"effect{n + 1}")
               for n, (x, y, z, sign) in enumerate(map(_parse_effect, effect or ["-38,-26,56"]))]
    table = simulate_table(studies, seed=seed, one_sample=one_sample)
    folder = simulate_mixed_studies(table, planted, out, seed, maps, peaks_from_maps,
                                    overwrite=overwrite)
    typer.echo(f"daskmeta: {studies} simulated studies ({maps} as "
               f"{'peaks of their t-maps' if peaks_from_maps else 't-maps'}) in {folder}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # python -m daskmeta.app.cli
    main()
