"""The one strict reader behind every YAML spec: tracks the key path, rejects unknown keys,
checks types and units, and turns every problem into a one-line SpecError(file, key, what)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..units import DIMENSION_WORDS, UnitError, described, parse_quantity

# Datasheet dimensions whose every real value is positive (capacities, bandwidths, peaks, power, prices).
POSITIVE_DIMENSIONS = frozenset({"bytes", "bytes_per_s", "flop_per_s", "W", "usd_per_s"})
MAX_SPEC_BYTES = 16 * 2**20  # a spec file larger than this is refused (catalogue files are a few kB)
MAX_TABLE_BYTES = 512 * 2**20  # traces and measurement tables


def read_text_file(path: str | Path, what: str = "file", max_bytes: int = MAX_SPEC_BYTES) -> str:
    """The text of a UTF-8 file; a missing, unreadable, oversized or binary file becomes a SpecError."""
    path = Path(path)
    try:
        if path.is_dir():
            raise SpecError(str(path), "", f"is a folder, expected a {what}")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise SpecError(str(path), "", f"file is larger than {max_bytes // 2**20} MiB; expected a {what}")
    if b"\x00" in data:
        raise SpecError(str(path), "", f"binary data (NUL bytes); expected a UTF-8 text {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), "", f"not UTF-8 text (byte {exc.start}); expected a {what}") from None


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (libyaml's parser where available) that refuses duplicate keys in a mapping (YAML says keys are
    unique; PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "unhashable key", key_node.start_mark) from None
            if dup:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_finite(file: str, data: Any, path: str = "") -> None:
    """Refuse NaN and infinities anywhere in a spec (``.nan``, ``.inf`` in YAML)."""
    if isinstance(data, float) and not math.isfinite(data):
        raise SpecError(file, path or "(top)", f"expected a finite number, got {data}")
    if isinstance(data, dict):
        for k, v in data.items():
            _check_finite(file, v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_finite(file, v, f"{path}[{i}]")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing, binary or oversized file, a syntax error, a duplicate key or a
    NaN/infinite number becomes a SpecError naming the file and where."""
    path = Path(path)
    text = read_text_file(path, "YAML file")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise SpecError(str(path), where, f"invalid YAML: {problem}") from None
    except RecursionError:
        raise SpecError(str(path), "", "invalid YAML: nested too deeply") from None
    if data is None:
        raise SpecError(str(path), "", "the file is empty (or only comments); expected a mapping of keys")
    if not isinstance(data, dict):
        raise SpecError(str(path), "", "expected a mapping at the top level")
    _check_finite(str(path), data)
    return data


class Reader:
    """A cursor over one mapping of a spec file. Call ``done()`` once every key was read."""

    def __init__(self, file: str | Path, data: Any, path: str = "", sources: dict | None = None):
        self.file = str(file)
        self.path = path
        self.sources = sources
        if not isinstance(data, dict):
            raise SpecError(self.file, path or "(top)", f"expected a mapping, got {type(data).__name__}")
        self.data = data
        self._seen: set[str] = set()

    # -- helpers -------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> SpecError:
        return SpecError(self.file, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def raw(self, name: str, default: Any = ..., ) -> Any:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is ...:
                raise self.error(name, "required key is missing" + self.typo_hint(name))
            return default
        return self.data[name]

    def typo_hint(self, name: str) -> str:
        """A note naming a key of this mapping spelt like ``name`` (a misspelt required key, "bandwith"), if any."""
        import difflib

        close = difflib.get_close_matches(name, [k for k in self.data if isinstance(k, str) and k != name], 1, 0.75)
        return f" (the mapping has {close[0]!r}: a typo?)" if close else ""

    # -- typed getters -------------------------------------------------------------------------
    def str(self, name: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(name, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, (list, dict)):
            raise self.error(name, f"expected a string, got a {'list' if isinstance(value, list) else 'mapping'}")
        if not isinstance(value, str):
            value = str(value)
        if choices is not None and value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def ref(self, name: str, load):
        """A catalogue reference (an id, an alias or a path) loaded with ``load``: a reference that does not
        resolve is reported at this key (the file and key that named it); an error inside the file it
        names stays that file's."""
        value = self.str(name)
        try:
            return load(value)
        except SpecError as exc:
            if exc.key_path == "" and (exc.file == value or os.path.normpath(str(exc.file)) == os.path.normpath(value)):
                raise self.error(name, f"{value}: {exc.message}") from None
            raise

    def names(self, name: str) -> tuple[str, ...]:
        """An optional list of non-empty strings (empty tuple when absent)."""
        value = self.raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(name, f"expected a list of names, got {value!r}")
        return tuple(v.strip() for v in value)

    def bool(self, name: str, default: Any = ...) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def int(self, name: str, default: Any = ..., minimum: int | None = 0, maximum: int | None = None) -> int:
        value = self.raw(name, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.error(name, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(name, f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:  # (a huge value shown as 1e+300, not its 301 digits)
            raise self.error(name, f"expected an integer <= {maximum:,}, got {value:,}" if value < 1e15 else
                             f"expected an integer <= {maximum:,}, got {float(value):g}")
        return value

    def number(self, name: str, default: Any = ..., minimum: float | None = None,
               maximum: float | None = None) -> float:
        value = self.raw(name, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(name, f"expected a finite number, got {value}")
        if minimum is not None and value < minimum:
            raise self.error(name, f"expected a number >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"expected a number <= {maximum}, got {value}")
        return value

    def quantity(self, name: str, dimension: str, default: Any = ..., minimum: float | None = 0.0,
                 positive: bool = False) -> float:
        """A plain unit-bearing value, e.g. ``bandwidth: 50 GB/s``: finite and (by default) not negative;
        ``positive``: above zero."""
        value = self.raw(name, default)
        if value is default and default is not ...:
            return value
        try:
            x = parse_quantity(value, dimension)
        except UnitError as exc:
            raise self.error(name, str(exc)) from None
        word = DIMENSION_WORDS.get(dimension, dimension)
        if not math.isfinite(x):
            raise self.error(name, f"expected a finite {word}, got {value!r}")
        if positive and not x > 0:  # (checked first: a negative value is told the one range, "> 0")
            raise self.error(name, f"expected {described(dimension, '> 0')}, got {value!r}")
        if minimum is not None and x < minimum:
            raise self.error(name, f"expected {described(dimension, f'>= {minimum:g}')}, got {value!r}")
        return x

    def sourced(self, name: str, dimension: str, default: Any = ...,
                minimum: float | None = 0.0) -> tuple[float, str] | Any:
        """A datasheet value that must name its source: ``{value: 3.35 TB/s, source: ID}``.

        ``source`` must be a key of the file's top-level ``sources`` map. Extra keys allowed:
        ``note`` (free text) and ``uncertain`` (bool). The value is above zero for ``POSITIVE_DIMENSIONS``, else at
        least ``minimum`` (None: the caller checks its range, at ``NAME.value`` too).
        """
        if not self.has(name):
            self._seen.add(name)
            if default is ...:
                raise self.error(name, "required key is missing" + self.typo_hint(name))
            return default
        node = self.child(name)
        # a datasheet never prints 0 GB/s (leave the key out)
        value = node.quantity("value", dimension, minimum=minimum, positive=dimension in POSITIVE_DIMENSIONS)
        return value, self._source_of(node)

    def _source_of(self, node: Reader) -> str:
        """The ``source`` of a sourced entry (with its optional ``note``, ``uncertain`` and ``date``), the entry read
        whole; an id (``A; B`` lists too) the file's ``sources`` map does not declare is refused."""
        source = node.str("source")
        node.str("note", None)
        node.bool("uncertain", False)
        node.str("date", None)
        node.done()
        if self.sources is not None:
            for part in (s.strip() for s in source.split(";")):
                if part not in self.sources:
                    raise node.error("source", f"unknown source id {part!r} (declare it under 'sources')")
        return source

    def sourced_flag(self, name: str, default: bool = False) -> bool:
        """A yes/no property: a bare ``true``/``false``, or ``{value: true, source: ID}`` naming where it is
        documented (the source checked as ``sourced`` checks it)."""
        if not isinstance(self.data.get(name), dict):
            return self.bool(name, default)
        node = self.child(name)
        value = node.bool("value")
        self._source_of(node)
        return value

    def child(self, name: str, default: Any = ...) -> Reader:
        value = self.raw(name, default)
        if value is default and default is not ...:
            return Reader(self.file, {}, self.key(name), self.sources)
        return Reader(self.file, value, self.key(name), self.sources)

    def children(self, name: str) -> list[Reader]:
        value = self.raw(name, [])
        if not isinstance(value, list):
            raise self.error(name, "expected a list")
        return [Reader(self.file, v, f"{self.key(name)}[{i}]", self.sources) for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling against the schema)")

    def schema_version(self, supported: int = 1) -> int:
        version = self.int("schema_version")
        if version != supported:
            raise self.error("schema_version", f"unsupported version {version}; this release reads {supported}")
        return version
