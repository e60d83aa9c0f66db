"""Validation of configuration sections from their dataclass fields (one place for every rule).

A section is a frozen dataclass; :class:`Reader` fills it from a YAML mapping, reading each
field's type hint: the types, ``Literal`` for the allowed values, ``Annotated`` for the limits
(:class:`AtLeast`, :class:`Between`, :class:`NonEmpty`, :class:`Matches`), field defaults for
the keys that may be left out, and field metadata (:func:`expect`, :data:`INHERITED`) for the
wording of errors and values inherited from the enclosing section. :func:`read_yaml` keeps
mapping keys as their source text. Errors are :class:`~daskmeta.errors.ConfigError` naming the
file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from daskmeta.errors import ConfigError, plain

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


#: Field metadata: the default is the enclosing section's value of the same key (merged key by key).
INHERITED = MappingProxyType({"inherits": True})


def expect(text: str, **metadata: Any) -> Mapping[str, Any]:
    """Field metadata: how to describe what the field expects in error messages."""
    return MappingProxyType({"expect": text, **metadata})


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


def read_yaml(path: Path) -> Any:
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


def file_fields(cls: type) -> list[dataclasses.Field]:
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
        return f"a mapping with keys {', '.join(f.name for f in file_fields(hint))}"
    raise TypeError(f"daskmeta.app.config: no reader for the type hint {hint!r}")


class Reader:
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
        fields = file_fields(cls)
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


