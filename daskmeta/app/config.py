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
``Annotated`` the limits (:class:`AtLeast`, :class:`Between`, :class:`NonEmpty`,
:class:`Matches`) and the defaults the keys that may be left out. An analysis' ``threshold``
is merged key by key over the top-level ``threshold``.

Mapping keys keep their text: YAML would read the keys ``null``, ``on``, ``yes`` or ``1`` as
None, True or 1; here an analysis named ``null`` is called "null" (its outputs go to
``out/null/``). Values keep YAML's types. Relative paths are taken relative to the working
directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from daskmeta.analyses.means import DEFAULT_PERMUTATIONS
from daskmeta.errors import ConfigError, plain
from daskmeta.model.grid import MaskName
from daskmeta.null.engines import DEFAULT_ENGINE, ENGINES, Engine, check_engine

__all__ = [
    "DEFAULT_ENGINE", "ENGINES", "Analysis", "CompareAnalysis", "Config", "MeanAnalysis",
    "MultimodalAnalysis", "Preprocess", "RandomSubsets", "Sweep", "SweepAnalysis", "SweepGrid",
    "SweepSubsets", "Threshold", "load_config",
]

#: Names of analyses and sweeps: they become folder and Zarr group names.
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"


# --- limits a value must respect (the metadata of ``Annotated`` hints) ---------------------


@dataclass(frozen=True)
class AtLeast:
    """A number that must be ``>= minimum``."""

    minimum: float

    @property
    def text(self) -> str:
        """The limit, in words."""
        return f">= {self.minimum:g}"

    def holds(self, value: Any) -> bool:
        """Whether ``value`` respects the limit."""
        return value >= self.minimum


@dataclass(frozen=True)
class Between:
    """A number strictly between ``low`` and ``high``."""

    low: float
    high: float

    @property
    def text(self) -> str:
        """The limit, in words."""
        return f"in ({self.low:g}, {self.high:g})"

    def holds(self, value: Any) -> bool:
        """Whether ``value`` respects the limit."""
        return self.low < value < self.high


@dataclass(frozen=True)
class NonEmpty:
    """A list or mapping with at least one item."""

    @property
    def text(self) -> str:
        """The limit, in words."""
        return "with at least one item"

    def holds(self, value: Any) -> bool:
        """Whether ``value`` respects the limit."""
        return len(value) > 0


@dataclass(frozen=True)
class Matches:
    """Text that must match the regular expression ``pattern`` (described by ``description``)."""

    pattern: str
    description: str

    @property
    def text(self) -> str:
        """The limit, in words."""
        return f"made of {self.description}"

    def holds(self, value: Any) -> bool:
        """Whether ``value`` respects the limit."""
        return re.fullmatch(self.pattern, value) is not None


Name = Annotated[str, Matches(NAME_PATTERN, "letters, digits, _ . - (not starting with . or -)")]
Positive = Annotated[int, AtLeast(1)]

#: Field metadata: the default is the enclosing section's value of the same key (merged key by key).
INHERITED = MappingProxyType({"inherits": True})


def _expect(text: str, **metadata: Any) -> Mapping[str, Any]:
    """Field metadata: how to describe what the field expects in error messages."""
    return MappingProxyType({"expect": text, **metadata})


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
    studies: tuple[str, ...] | None = field(default=None, metadata=_expect("a list of study names"))
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
    engine: Engine = field(default=DEFAULT_ENGINE, metadata={"check": check_engine})
    jackknife: bool = False
    jackknife_maps: bool = False
    regressors: tuple[str, ...] = field(
        default=(), metadata=_expect("a list of study columns, e.g. [age, duration]"))
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
        metadata=_expect("two study filters, e.g. [\"modality == 'ReHo'\", \"modality == 'ALFF'\"]"))
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
    of: tuple[str, str] = field(metadata=_expect("the names of two mean analyses, e.g. [reho, alff]"))
    threshold: Threshold = field(default=Threshold(), metadata=INHERITED)


#: An entry of ``analyses``, chosen by its ``type`` (``mean`` when left out).
Analysis = MeanAnalysis | CompareAnalysis | MultimodalAnalysis


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

    where: tuple[str, ...] = field(default=(), metadata=_expect("a list of study filters"))
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
    studies: Path = field(metadata=_expect("the study folder or table, e.g. examples/clbp"))
    store: str = field(metadata=_expect("the Zarr store to write, e.g. zarr_store/my.zarr"))
    out: Path = Path("results")
    preprocess: Preprocess = Preprocess()
    threshold: Threshold = Threshold()
    analyses: Annotated[Mapping[Name, Analysis], NonEmpty()] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_expect("a mapping of analysis names to their settings, e.g. {reho: {type: mean}}"))
    sweep: Sweep | None = None


def _plain(section: Any) -> dict[str, Any]:
    """A section as a mapping of plain values: lists for tuples, None values left out."""

    def value(item: Any) -> Any:
        if dataclasses.is_dataclass(item):
            return _plain(item)
        return list(item) if isinstance(item, tuple) else item

    return {f.name: value(getattr(section, f.name)) for f in dataclasses.fields(section)
            if getattr(section, f.name) is not None}


# --- YAML: mapping keys keep their source text ----------------------------------------------


class _TextKeyLoader(yaml.SafeLoader):
    """A SafeLoader whose mapping keys are the source text of scalar keys (``null`` -> "null")."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of ``node``, each scalar key kept as written (after YAML's unquoting)."""
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        self.flatten_mapping(node)  # merge keys (<<) first, as SafeLoader does
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
            else:
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found an unhashable key", key_node.start_mark) from None
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    try:
        return yaml.load(text, Loader=_TextKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


# --- the reader: one place that validates every section from its type hints -----------------


def _show(value: Any) -> str:
    """``value`` as plain text in YAML's spelling: ``'many'``, ``3``, ``true``, ``null``, ``[1, 2]``."""
    value = plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(_show, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_show(item)}" for key, item in value.items()) + "}"
    return str(value)


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _file_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are keys of the file, in the order they are read."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("in_file", True)]


def _options(hint: Any) -> list[Any]:
    """The alternatives of a union hint other than None (``[hint]`` for other hints)."""
    if get_origin(hint) in (Union, UnionType):
        return [arg for arg in get_args(hint) if arg is not NoneType]
    return [hint]


def _describe(hint: Any) -> str:
    """What a type hint expects, in words."""
    origin, args = get_origin(hint), get_args(hint)
    simple = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
              Path: "a path (text)"}
    if hint in simple:
        return simple[hint]
    if origin is Annotated:
        return f"{_describe(args[0])} {' '.join(mark.text for mark in hint.__metadata__)}"
    if origin is Literal:
        return f"one of {', '.join(map(repr, args))}" if len(args) > 1 else repr(args[0])
    if origin in (Union, UnionType):
        options = _options(hint)
        if all(dataclasses.is_dataclass(option) for option in options):
            return "a mapping of settings"
        return " or ".join(_describe(option) for option in options)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list (each item {_describe(args[0])})"
        return f"a list of {len(args)} items (each {_describe(args[0])})"
    if origin is Mapping:
        return f"a mapping (each value {_describe(args[1])})"
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {', '.join(f.name for f in _file_fields(hint))}"
    raise TypeError(f"daskmeta.app.config: no reader for the type hint {hint!r}")


class _Reader:
    """Reads the mappings of one file into the dataclasses, driven by their fields' type hints.

    Parameters
    ----------
    path : Path
        The file, named by every error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        """The error for ``key``: the file, the key and what was wrong."""
        return ConfigError(f"{self.path}: '{key}' {problem}")

    def wrong(self, key: str, value: Any, hint: Any, expect: str | None = None) -> ConfigError:
        """The error for a value of the wrong type: what was expected and what was given."""
        return self.fail(key, f"must be {expect or _describe(hint)}, got {_show(value)}")

    def build(self, cls: type, raw: Any, where: str, context: Mapping[str, Any],
              base: Any = None, fixed: Mapping[str, Any] | None = None) -> Any:
        """An instance of the dataclass ``cls`` from the mapping ``raw`` found at ``where``.

        Keys left out take the value of ``base`` (an instance of ``cls``), else of the
        enclosing section for fields marked :data:`INHERITED`, else the field's default.
        ``context`` holds the values of the enclosing sections' keys read so far.
        """
        fields = _file_fields(cls)
        names = [f.name for f in fields]
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be a mapping with keys {', '.join(names)}, got {_show(raw)}")
        self.check_known(raw, names, where)
        hints = get_type_hints(cls, include_extras=True)
        values = dict(fixed or {})
        for f in fields:
            key = _join(where, f.name)
            default = self.default(f, base, context)
            if f.name in raw:
                values[f.name] = self.field_value(raw[f.name], hints[f.name], key, f, default, context)
            elif default is dataclasses.MISSING:
                expect = f.metadata.get("expect") or _describe(hints[f.name])
                raise self.fail(key, f"is missing: give {expect}")
            else:
                values[f.name] = default
            context = {**context, f.name: values[f.name]}
        return cls(**values)

    def check_known(self, raw: dict[Any, Any], names: list[str], where: str) -> None:
        """Every key of ``raw`` must be one of ``names``; the error lists them."""
        for key in raw:
            if key in names:
                continue
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            section = f"'{where}'" if where else "the top level"
            raise ConfigError(f"{self.path}: unknown key '{_join(where, key)}'{hint}; "
                              f"the keys of {section} are: {', '.join(names)}")

    @staticmethod
    def default(f: dataclasses.Field, base: Any, context: Mapping[str, Any]) -> Any:
        """The value of a key left out (``MISSING`` when the key is required)."""
        if base is not None:
            return getattr(base, f.name)
        if f.metadata.get("inherits") and f.name in context:
            return context[f.name]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default

    def field_value(self, value: Any, hint: Any, key: str, f: dataclasses.Field, default: Any,
                    context: Mapping[str, Any]) -> Any:
        """The value of one key: a section left empty (``preprocess:``) takes its defaults."""
        options = _options(hint)
        section = len(options) == 1 and dataclasses.is_dataclass(options[0])
        if value is None and section and NoneType not in get_args(hint):
            value = {}
        base = default if section and dataclasses.is_dataclass(default) else None
        return self.value(value, hint, key, context, base=base, check=f.metadata.get("check"),
                          expect=f.metadata.get("expect"))

    def value(self, value: Any, hint: Any, key: str, context: Mapping[str, Any], base: Any = None,
              check: Any = None, expect: str | None = None) -> Any:
        """``value`` checked against (and converted to) the type ``hint``."""
        origin, args = get_origin(hint), get_args(hint)
        if origin is Annotated:
            result = self.value(value, args[0], key, context, base, check, expect)
            for mark in hint.__metadata__:
                if not mark.holds(result):
                    raise self.wrong(key, value, hint, expect)
            return result
        if origin in (Union, UnionType):
            return self.union(value, hint, key, context, base, check, expect)
        if origin is Literal:
            return self.literal(value, args, key, check)
        if origin is tuple:
            return self.sequence(value, hint, key, context, expect)
        if origin is Mapping:
            return self.mapping(value, hint, key, context, expect)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, key, context, base=base)
        return self.scalar(value, hint, key, expect)

    def union(self, value: Any, hint: Any, key: str, context: Mapping[str, Any], base: Any,
              check: Any, expect: str | None) -> Any:
        """``X | None`` (None allowed) or a union of sections chosen by their ``type`` key."""
        if value is None and NoneType in get_args(hint):
            return None
        options = _options(hint)
        if len(options) == 1:
            return self.value(value, options[0], key, context, base, check, expect)
        if not isinstance(value, dict):
            raise self.wrong(key, value, hint, expect)
        kinds = {get_args(get_type_hints(option)["type"])[0]: option for option in options}
        kind = value.get("type", next(iter(kinds)))
        if not isinstance(kind, str) or kind not in kinds:
            raise self.fail(_join(key, "type"), f"must be one of {', '.join(map(repr, kinds))}; "
                                                f"{_show(kind)} was provided.")
        return self.build(kinds[kind], value, key, context)

    def literal(self, value: Any, allowed: tuple[Any, ...], key: str, check: Any) -> Any:
        """One of the ``allowed`` values; a field's ``check`` (e.g. ``check_engine``) words the error."""
        if any(type(value) is type(option) and value == option for option in allowed):
            return value
        if check is not None and isinstance(value, str | int | float | bool):
            try:
                return check(value)
            except ValueError as exc:
                name = repr(key.rpartition(".")[2])
                reason = str(exc)
                if reason.startswith(name):  # "'engine' must be ..." -> "'analyses.x.engine' must be ..."
                    raise self.fail(key, reason.partition(name)[2].lstrip()) from None
                raise ConfigError(f"{self.path}: '{key}': {reason}") from None
        expected = f"one of {', '.join(map(repr, allowed))}" if len(allowed) > 1 else repr(allowed[0])
        raise self.fail(key, f"must be {expected}; {_show(value)} was provided.")

    def sequence(self, value: Any, hint: Any, key: str, context: Mapping[str, Any],
                 expect: str | None) -> tuple[Any, ...]:
        """A YAML list as a tuple: ``tuple[X, ...]`` any length, ``tuple[X, Y]`` exactly two."""
        args = get_args(hint)
        repeated = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, list) or (not repeated and len(value) != len(args)):
            raise self.wrong(key, value, hint, expect)
        items = [args[0]] * len(value) if repeated else list(args)
        return tuple(self.value(item, item_hint, f"{key}[{n}]", context)
                     for n, (item, item_hint) in enumerate(zip(value, items, strict=True)))

    def mapping(self, value: Any, hint: Any, key: str, context: Mapping[str, Any],
                expect: str | None) -> Mapping[str, Any]:
        """A YAML mapping of names (checked by the key hint) to values, read-only."""
        key_hint, value_hint = get_args(hint)
        if not isinstance(value, dict):
            raise self.wrong(key, value, hint, expect)
        result = {}
        for name, item in value.items():
            try:
                name = self.value(name, key_hint, key, context)
            except ConfigError:
                raise self.fail(key, f"has the name {_show(name)}, which must be "
                                     f"{_describe(key_hint)}") from None
            result[name] = self.value(item, value_hint, _join(key, name), context)
        return MappingProxyType(result)

    def scalar(self, value: Any, kind: type, key: str, expect: str | None) -> Any:
        """A bool, whole number, number (ints accepted), text or path (from text)."""
        flag = isinstance(value, bool)
        accepted = {bool: flag, int: isinstance(value, int) and not flag,
                    float: isinstance(value, int | float) and not flag, str: isinstance(value, str),
                    Path: isinstance(value, str) and value != ""}
        if kind not in accepted:
            raise TypeError(f"daskmeta.app.config: no reader for the type hint {kind!r}")
        if not accepted[kind]:
            error = self.wrong(key, value, kind, expect)
            if kind in (str, Path) and isinstance(value, bool | int | float | None):
                # YAML reads null, ~, yes/no, on/off, true/false and numbers as other types
                error = ConfigError(f"{error} (write it in quotes to keep it as text)")
            raise error
        return kind(value)


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
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys "
                          f"({', '.join(f.name for f in _file_fields(Config))})")
    config = _Reader(path).build(Config, raw, "", {}, fixed={"path": path})
    _check_sections(config)
    return config

