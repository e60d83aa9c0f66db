"""Analysis configuration files (YAML), read into frozen dataclasses with errors that name the key.

A configuration::

    studies: examples/clbp            # SDM folder, studies.tsv (+ peaks.tsv), NiMARE JSON, Sleuth
    store: zarr_store/clbp.zarr
    out: results/clbp
    preprocess: {mask: gray_matter, fwhm: 20, anisotropy: 1.0}
    threshold: {p: 0.005, peak_z: 1.0, extent: 10}
    analyses:
      reho: {type: mean, where: "modality == 'ReHo'", permutations: 1000, seed: 1}

:func:`load_config` returns a :class:`Config`. Every section is a frozen dataclass
(:class:`Preprocess`, :class:`Threshold`, :class:`MeanAnalysis`, :class:`CompareAnalysis`,
:class:`MultimodalAnalysis`, :class:`Sweep` and its parts), and one reader validates them all
from their fields: the type hints give the types, ``Literal`` the allowed values,
``Annotated`` the limits (:mod:`daskmeta.app.validation`) and the defaults the keys that may
be left out. An analysis' ``threshold`` is merged key by key over the top-level ``threshold``.

Mapping keys keep their text: YAML would read the keys ``null``, ``on``, ``yes`` or ``1`` as
None, True or 1; here an analysis named ``null`` is called "null" (its outputs go to
``out/null/``). Values keep YAML's types. Relative paths are taken relative to the working
directory.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from daskmeta.analyses.means import DEFAULT_PERMUTATIONS, UNCORRECTED_PERMUTATIONS
from daskmeta.app.validation import (
    INHERITED,
    AtLeast,
    Between,
    Matches,
    NonEmpty,
    Reader,
    expect,
    file_fields,
    read_yaml,
)
from daskmeta.errors import ConfigError
from daskmeta.model.grid import MaskName
from daskmeta.null.engines import DEFAULT_ENGINE, ENGINES, Engine, check_engine

__all__ = [
    "DEFAULT_ENGINE", "ENGINES", "Analysis", "CompareAnalysis", "Config", "MeanAnalysis",
    "MultimodalAnalysis", "Preprocess", "PsiAnalysis", "PsiThreshold", "RandomSubsets", "Sweep",
    "SweepAnalysis", "SweepGrid", "SweepSubsets", "Threshold", "load_config",
]

#: Names of analyses and sweeps: they become folder and Zarr group names.
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"


Name = Annotated[str, Matches(NAME_PATTERN, "letters, digits, _ . - (not starting with . or -)")]
Positive = Annotated[int, AtLeast(1)]

# --- the sections ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """How study maps are recreated from peaks (``preprocess``)."""

    mask: MaskName = "gray_matter"
    fwhm: float = 20.0
    anisotropy: float = 1.0
    beta: float = 1.0


@dataclass(frozen=True, kw_only=True)
class Threshold:
    """Cluster thresholds: voxel p, peak height and extent in voxels (``threshold``)."""

    p: float = 0.005
    peak_z: float = 1.0
    extent: int = 10


@dataclass(frozen=True, kw_only=True)
class _Randomized:
    """Settings of an analysis judged against a randomization null."""

    where: str | None = None
    studies: tuple[str, ...] | None = field(default=None, metadata=expect("a list of study names"))
    permutations: Positive = DEFAULT_PERMUTATIONS
    seed: int = 0
    block_size: Positive = 10


@dataclass(frozen=True, kw_only=True)
class MeanAnalysis(_Randomized):
    """A random-effects mean (``type: mean``), with its jackknife and meta-regressions.

    Attributes
    ----------
    where, studies : str or None, tuple of str or None
        The studies pooled: a pandas query on study columns, and/or their names.
    permutations, seed, block_size : int
        Randomizations of the null, their seed, and how many a graph task computes.
    uncorrected_permutations : int or None
        Of those, how many the voxel null runs (uncorrected p, cluster-forming thresholds)
        when the cluster-extent null gives the family-wise p-values, and the nulls of the
        jackknife and meta-regressions, which give uncorrected p only (docs/methods.md, 5.2;
        default 1000); ``null``: all.
    engine : {"permutation", "reference"}
        The null's engine (:mod:`daskmeta.null.engines`, docs/methods.md).
    jackknife, jackknife_maps : bool
        Leave-one-out replication of each cluster; also write each leave-one-out map.
    regressors : tuple of str
        Study columns, each a meta-regression (``out/NAME/regression_COLUMN/``).
    threshold : Threshold
        The analysis' thresholds: its ``threshold`` keys over the top-level ones.
    """

    type: Literal["mean"] = "mean"
    uncorrected_permutations: Positive | None = UNCORRECTED_PERMUTATIONS
    engine: Engine = field(default=DEFAULT_ENGINE, metadata={"check": check_engine})
    jackknife: bool = False
    jackknife_maps: bool = False
    regressors: tuple[str, ...] = field(
        default=(), metadata=expect("a list of study columns, e.g. [age, duration]"))
    threshold: Threshold = field(default=Threshold(), metadata=INHERITED)


@dataclass(frozen=True, kw_only=True)
class CompareAnalysis(_Randomized):
    """A comparison of two groups of studies (``type: compare``).

    Attributes
    ----------
    groups : tuple of two str
        The study filters of the two groups (each combined with ``where``).

    The other attributes are those of :class:`MeanAnalysis`.
    """

    type: Literal["compare"] = "compare"
    groups: tuple[str, str] = field(
        metadata=expect("two study filters, e.g. [\"modality == 'ReHo'\", \"modality == 'ALFF'\"]"))
    engine: Engine = field(default=DEFAULT_ENGINE, metadata={"check": check_engine})
    threshold: Threshold = field(default=Threshold(), metadata=INHERITED)


@dataclass(frozen=True, kw_only=True)
class MultimodalAnalysis:
    """The overlap of two mean analyses of the same file (``type: multimodal``).

    Attributes
    ----------
    of : tuple of two str
        The names of the two mean analyses.
    threshold : Threshold
        As for :class:`MeanAnalysis`.
    """

    type: Literal["multimodal"] = "multimodal"
    of: tuple[str, str] = field(metadata=expect("the names of two mean analyses, e.g. [reho, alff]"))
    threshold: Threshold = field(default=Threshold(), metadata=INHERITED)


#: An entry of ``analyses``, chosen by its ``type`` (``mean`` when left out).
@dataclass(frozen=True, kw_only=True)
class PsiThreshold:
    """What an SDM-PSI analysis' clusters are cut on (``threshold`` of ``type: psi``).

    Attributes
    ----------
    fwe : {"tfce", "voxel", "none"}
        The map thresholded: ``p_fwe_tfce`` (default), ``p_fwe_voxel``, or the uncorrected
        ``p`` of the normal reference.
    p : float
        Voxels with that map's p below this form the clusters (0.05 for FWE; give e.g.
        0.005 with ``fwe: none``).
    peak_z, extent : float, int
        Peak height and cluster extent, as for a mean (no further cut by default).
    """

    fwe: Literal["tfce", "voxel", "none"] = "tfce"
    p: Annotated[float, Between(0.0, 1.0)] = 0.05
    peak_z: float = 0.0
    extent: Positive = 1


@dataclass(frozen=True, kw_only=True)
class PsiAnalysis:
    """SDM-PSI (``type: psi``): imputation, subject-image permutation, TFCE, FWE.

    Attributes
    ----------
    where, studies : str or None, tuple of str or None
        The studies pooled, as for :class:`MeanAnalysis`.
    imputations : int
        Imputations of the study maps (SDM-PSI's default 50).
    permutations : int
        Permutations of the subject images (default 1000; 0 computes the observed maps only).
    seed, block_size : int
        The seed of every draw, and the permutations a graph task computes.
    regressors : tuple of str
        Study columns of one linear model: the first is tested, the others are covariates
        of no interest (Freedman-Lane permutations of studies, docs/methods.md, section 14.5).
        Empty: the mean.
    threshold : PsiThreshold
        The cluster-forming map and its limits (not inherited from the top-level threshold).
    """

    type: Literal["psi"] = "psi"
    where: str | None = None
    studies: tuple[str, ...] | None = field(default=None, metadata=expect("a list of study names"))
    imputations: Positive = 50
    permutations: Annotated[int, AtLeast(0)] = 1000
    seed: int = 0
    block_size: Positive = 10
    regressors: tuple[str, ...] = field(
        default=(), metadata=expect("a list of study columns, the tested one first, e.g. [age, sex]"))
    threshold: PsiThreshold = PsiThreshold()


Analysis = MeanAnalysis | CompareAnalysis | MultimodalAnalysis | PsiAnalysis


@dataclass(frozen=True, kw_only=True)
class SweepAnalysis(_Randomized):
    """The mean analysis a sweep varies (``sweep.analysis``)."""

    type: Literal["mean"] = "mean"


@dataclass(frozen=True, kw_only=True)
class SweepGrid:
    """The values a sweep tries for each parameter (``sweep.grid``); None: the reference only."""

    fwhm: Annotated[tuple[float, ...], NonEmpty()] | None = None
    anisotropy: Annotated[tuple[float, ...], NonEmpty()] | None = None
    p: Annotated[tuple[float, ...], NonEmpty()] | None = None
    peak_z: Annotated[tuple[float, ...], NonEmpty()] | None = None
    extent: Annotated[tuple[int, ...], NonEmpty()] | None = None
    seed: Annotated[tuple[int, ...], NonEmpty()] | None = None


@dataclass(frozen=True, kw_only=True)
class RandomSubsets:
    """``n`` random subsets of ``fraction`` of the studies, drawn with ``seed``."""

    n: int = 10
    fraction: Annotated[float, Between(0.0, 1.0)] = 0.8
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class SweepSubsets:
    """Study subsets of a sweep besides all studies (``sweep.subsets``)."""

    where: tuple[str, ...] = field(default=(), metadata=expect("a list of study filters"))
    leave_out: Positive | None = None
    random: RandomSubsets | None = None


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """A sensitivity sweep: variants of one mean analysis (``sweep``)."""

    name: Name = "sweep"
    analysis: SweepAnalysis = SweepAnalysis()
    grid: SweepGrid = SweepGrid()
    subsets: SweepSubsets = SweepSubsets()

    def as_dict(self) -> dict[str, Any]:
        """The plain mapping :mod:`daskmeta.analyses.sweep` takes: lists, keys left out for None."""
        sections = {key: _plain(getattr(self, key)) for key in ("analysis", "grid", "subsets")}
        return {"name": self.name, **sections}


@dataclass(frozen=True, kw_only=True)
class Config:
    """A validated configuration file and its sections.

    Attributes
    ----------
    path : Path
        The file read.
    studies, store, out : Path, str, Path
        The studies, the Zarr store (path or fsspec URL) and the output folder.
    preprocess : Preprocess
    threshold : Threshold
        The top-level thresholds (each analysis holds its own, merged over these).
    analyses : Mapping of str to MeanAnalysis, CompareAnalysis or MultimodalAnalysis
        Each analysis by its name (read-only; empty in a sweep's file).
    sweep : Sweep or None
        A file has either ``analyses`` (``daskmeta run``) or ``sweep`` (``daskmeta sweep``).
    """

    path: Path = field(metadata={"in_file": False})
    studies: Path = field(metadata=expect("the study folder or table, e.g. examples/clbp"))
    store: str = field(metadata=expect("the Zarr store to write, e.g. zarr_store/my.zarr"))
    out: Path = Path("results")
    preprocess: Preprocess = Preprocess()
    threshold: Threshold = Threshold()
    analyses: Annotated[Mapping[Name, Analysis], NonEmpty()] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=expect("a mapping of analysis names to their settings, e.g. {reho: {type: mean}}"))
    sweep: Sweep | None = None


def _plain(section: Any) -> dict[str, Any]:
    """A section as a mapping of plain values: lists for tuples, None values left out."""

    def value(item: Any) -> Any:
        if dataclasses.is_dataclass(item):
            return _plain(item)
        return list(item) if isinstance(item, tuple) else item

    return {f.name: value(getattr(section, f.name)) for f in dataclasses.fields(section)
            if getattr(section, f.name) is not None}


# --- rules between sections -----------------------------------------------------------------


def _check_sections(config: Config) -> None:
    """A file has either analyses or a sweep; multimodal analyses overlap means of the file."""
    if bool(config.analyses) == (config.sweep is not None):
        raise ConfigError(f"{config.path}: give either 'analyses' (daskmeta run) or 'sweep' "
                          f"(daskmeta sweep)")
    means = [name for name, analysis in config.analyses.items() if isinstance(analysis, MeanAnalysis)]
    for name, analysis in config.analyses.items():
        if not isinstance(analysis, MultimodalAnalysis):
            continue
        for other in analysis.of:
            if other not in means:
                raise ConfigError(
                    f"{config.path}: 'analyses.{name}.of' names {other!r}, which is not a mean "
                    f"analysis of this file; name two of: {', '.join(means) or '(none)'}")


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a configuration file.

    Parameters
    ----------
    path : str or PathLike
        A YAML file (see the module docstring).

    Returns
    -------
    Config
        Every section filled in: keys left out take their defaults, an analysis' threshold is
        merged over the top-level one.

    Raises
    ------
    ConfigError
        Naming the file, the bad key and what was expected: an unknown key (with the known
        ones), a wrong type or value, a missing key, or a rule between sections broken.
    """
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys "
                          f"({', '.join(f.name for f in file_fields(Config))})")
    config = Reader(path).build(Config, raw, "", {}, fixed={"path": path})
    _check_sections(config)
    return config

