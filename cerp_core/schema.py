"""Reading settings from YAML and mappings into the suite's dataclasses, checked.

The dataclasses (:class:`~cerp_core.train.TrainConfig`,
:class:`~cerp_core.experiment.ExperimentConfig`, :class:`~cerp_core.sweep.SweepConfig`) are the
schema; :func:`parse` validates a mapping against one of them with pydantic in strict JSON mode:
a type that does not match (``"32"`` for an int, ``true`` for a float), an unknown key, a value
its ``__post_init__`` refuses, each raises :class:`ConfigError` naming the key's path
(``train.lr``). Lists become tuples and ints floats where the annotation says so; nothing else
is converted.

Each field of a run is declared once, with :func:`setting`: its default, the line its command-line
option shows and whether it changes results. The ``train`` command's options
(:func:`setting_fields`), the run key and the columns of ``results.csv`` (:func:`results_part`)
are derived from those declarations.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar, get_type_hints

import yaml
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")

STRICT = {"extra": "forbid"}
"""``__pydantic_config__`` of every schema dataclass: unknown keys are refused."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    choices: Collection[str] | None = None,
    changes_results: bool = True,
) -> Any:
    """A field of a run's configuration, declared once.

    Args:
        default: The default value (``factory`` instead for a mutable one).
        help: One line for the command-line option.
        factory: Builds the default (a dict, a nested configuration).
        flag: The ``train`` command's option (default ``--<name>`` with dashes); ``""``: none.
        choices: The values the option accepts (a registry, read when the parser is built).
        changes_results: ``False`` for a field that leaves every number alone (where the data
            lives, progress bars): it stays out of the run key and of ``results.csv``, so
            changing it reuses stored results.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "changes_results": changes_results}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class SettingField(NamedTuple):
    """One field of a schema dataclass: its name, declaration and type."""

    name: str
    field: dataclasses.Field[Any]
    annotation: Any


def setting_fields(cls: type) -> Iterator[SettingField]:
    """The fields of the dataclass ``cls`` with their resolved types, in order."""
    hints = get_type_hints(cls)
    for item in dataclasses.fields(cls):
        yield SettingField(item.name, item, hints[item.name])


def results_part(values: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """``values`` (a ``cls`` as :func:`dataclasses.asdict` gives it, or as a run file stored it)
    without the fields that do not change results; nested configurations are filtered too, and
    keys that ``cls`` does not declare are kept."""
    kept = dict(values)
    for name, item, annotation in setting_fields(cls):
        if not item.metadata.get("changes_results", True):
            kept.pop(name, None)
        elif dataclasses.is_dataclass(annotation) and isinstance(kept.get(name), Mapping):
            kept[name] = results_part(kept[name], annotation)
    return kept


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the key (and the file)."""


class YamlLoader(yaml.SafeLoader):
    """Safe loader that also reads ``1e-3`` as a float (YAML 1.1 only accepts ``1.0e-3``) and
    refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse(cls: type[T], values: Mapping[str, Any], *, hide: str | None = None) -> T:
    """``cls`` built from ``values``, every field checked; the first problem raises.

    Args:
        cls: A dataclass of the schema.
        values: Field names to values, as YAML or JSON give them (mappings, lists, scalars).
        hide: A leading path element left out of messages (a field that the flat YAML layout
            does not show, such as a sweep's ``base``).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a mapping of fields, got {type(values).__name__}")
    try:
        text = json.dumps(values, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"values must be numbers, strings, lists or mappings: {error}") from None
    try:
        return TypeAdapter(cls).validate_json(text, strict=True)
    except ValidationError as error:
        raise ConfigError(_describe(cls, error.errors()[0], hide)) from None


def field_names(cls: type) -> list[str]:
    """The fields of the dataclass ``cls``, in order."""
    return [f.name for f in dataclasses.fields(cls)]


def _owner(cls: type, path: list[str]) -> type:
    """The dataclass whose field is the last element of ``path``."""
    for name in path[:-1]:
        cls = get_type_hints(cls)[name]
    return cls


def _describe(cls: type, problem: Mapping[str, Any], hide: str | None) -> str:
    """One line: ``path: what is wrong (got value)``."""
    loc = [str(part) for part in problem["loc"]]
    shown = ".".join(loc[1:] if loc and loc[0] == hide else loc)
    if problem["type"] == "value_error":  # raised by a __post_init__: its own message
        message = str(problem["ctx"]["error"])
        return f"{shown}: {message}" if shown else message
    if problem["type"] == "unexpected_keyword_argument":
        known = field_names(_owner(cls, loc))
        return f"{shown}: unknown key; known: {known}"
    return f"{shown or 'value'}: {problem['msg'].lower()} (got {problem['input']!r})"


def check_arguments(
    target: Callable[..., Any],
    values: Mapping[str, Any],
    what: str,
    skip: Collection[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ConfigError` if ``target`` (a class or function) would not take
    ``values`` as keyword arguments: an unknown name (the message lists the accepted ones) or a
    value whose type differs from the parameter's annotation (checked as :func:`parse` checks
    fields: ``"abc"`` is not a float). ``what`` names the target in messages (``method
    'cerp'``); ``skip`` are parameters the caller sets itself, ``extra`` further accepted names
    with their types (options a builder takes before calling ``target``)."""
    hints = get_type_hints(target.__init__ if isinstance(target, type) else target)
    names = [name for name in inspect.signature(target).parameters if name not in skip]
    accepted = {name: hints.get(name, Any) for name in names} | dict(extra or {})
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{what} does not take the option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    for name, value in values.items():
        try:
            text = json.dumps(value, allow_nan=True)
            TypeAdapter(accepted[name]).validate_json(text, strict=True)
        except (TypeError, ValueError) as error:  # ValidationError is a ValueError
            problem = error.errors()[0]["msg"] if isinstance(error, ValidationError) else error
            raise ConfigError(
                f"{what}: option {name}={value!r}: {str(problem).lower()} "
                f"(expected {_type_name(accepted[name])})"
            ) from None


def _type_name(annotation: Any) -> str:
    """``float``, ``int | None``, ``Literal['add', 'concat']``: how a type reads in a message."""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)
