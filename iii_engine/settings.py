"""Typed settings: the base of the engine configuration and of every module's settings, and the one error they
raise.

A :class:`Settings` model is strict (``"5"`` is not an integer, ``true`` is not a number), immutable, and decides
per model what an unknown key means (``unknown_keys``: refuse it, log and ignore it, or ignore it; a near-miss of a
known key is refused in the second case and logged with the closest name in the third). A string that a
``${VAR}`` placeholder produced (:func:`from_env`) is the one exception to strictness: a field converts it to its
declared type (decimal digits for an integer, a decimal number for a float, ``true`` / ``false`` for a flag), and a
string field keeps its text as written. Whatever is
wrong, :class:`ConfigError` names the path of the bad value and says what was expected, in one line:
``modules[3].config.queue_configs.default.max_retries: must be >= 1, got 0``.

Example:
    >>> class Limits(Settings):
    ...     label: ClassVar[str] = "limits"
    ...     retries: int = Field(3, ge=1)
    >>> Limits.parse({"retries": 0})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: retries: must be >= 1, got 0
    >>> Limits.parse({"retries": 2, "colour": 1}, at="modules[0].config")
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: modules[0].config: unknown key 'colour' (allowed: retries)
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import types
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.connection import check_url

__all__ = ["MAX_TIMEOUT_MS", "MAX_TIMEOUT_S", "AdapterSpec", "ConfigError", "EngineUrl", "EnvFloat", "EnvInt",
           "EnvText", "Field", "Names", "NoSettings", "NonEmpty", "Port", "RedisAdapterSettings", "Settings",
           "UnknownKeys", "YamlFlag", "YamlFloat", "YamlInt", "closest_key", "duration_bound", "env_text", "from_env",
           "join_path", "pick_adapter"]

MAX_TIMEOUT_MS = 10**12
"""The longest duration in milliseconds a setting takes (about 31 years): each becomes seconds as a float where
used, and a larger integer (10**400) raised OverflowError there, at start, on every call or per connection.
Every settings model applies it to each of its duration fields (see :func:`duration_bound`); a field may set a
lower bound of its own."""
MAX_TIMEOUT_S = MAX_TIMEOUT_MS // 1000
"""The same bound for a duration given in seconds."""

# A numeric field whose name (or key in the file) says it is a duration: in seconds when the name ends so, else in
# milliseconds (``default_timeout``, ``header_timeout`` of the REST API module are milliseconds).
_SECONDS_NAME = re.compile(r"_(?:s|sec|secs|seconds)$")
_DURATION_NAME = re.compile(r"_(?:ms|s|sec|secs|seconds)$|timeout|interval|debounce|backoff|delay|_ttl|grace")

log = logging.getLogger(__name__)

_SHOWN_CHARS = 80
# How close an unknown key must be to a known one to be taken for its typo (difflib's ratio: 'adaptr' ~ 'adapter'
# is 0.92) and refused, in a model that otherwise logs and ignores the keys it does not know.
_TYPO_CUTOFF = 0.8

# How close an unknown key must be to a known one to be named as the one meant (difflib's ratio: 'prot' ~ 'port'
# is 0.75).
_NEAR_CUTOFF = 0.6

# Set while a model validates, so nested models leave their errors to the outermost one (which knows the path).
_validating: ContextVar[bool] = ContextVar("iii_engine_settings_validating", default=False)
SettingsT = TypeVar("SettingsT", bound="Settings")
UnknownKeys = Literal["forbid", "warn", "ignore"]

#: A YAML list of strings, kept as a tuple (settings are immutable).
Names = Annotated[tuple[StrictStr, ...], Field(strict=False)]
#: A TCP port; 0 asks for a free one.
Port = Annotated[int, Field(ge=0, le=65535)]
#: A string that must not be empty (ids, URLs, names).
NonEmpty = Annotated[str, Field(min_length=1)]
#: The ``ws://`` or ``wss://`` URL of an engine (checked as the SDK checks it).
EngineUrl = Annotated[str, AfterValidator(check_url)]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong shape; ``str()`` is ``<path>: <problem>``.

    Example:
        >>> str(ConfigError("must be >= 0, got -1", "max_retries").under("queue_configs.default"))
        'queue_configs.default.max_retries: must be >= 0, got -1'
    """

    def __init__(self, problem: str, path: str = "") -> None:
        self.problem = problem
        self.path = path
        super().__init__(f"{path}: {problem}" if path else problem)

    def under(self, prefix: str) -> ConfigError:
        """The same error, its path placed under ``prefix`` (where the settings sit in a larger document)."""
        return ConfigError(self.problem, join_path(prefix, self.path))


def join_path(prefix: str, path: str | int = "") -> str:
    """``prefix`` extended by a key or a list index.

    Example:
        >>> join_path("modules", 3), join_path("modules[3]", "config"), join_path("", "port")
        ('modules[3]', 'modules[3].config', 'port')
    """
    if isinstance(path, int):
        return f"{prefix}[{path}]"
    if not prefix or not path:
        return prefix or path
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def closest_key(key: str, known: Iterable[str], *, cutoff: float = _NEAR_CUTOFF) -> str | None:
    """The known key closest to an unknown ``key`` (a typo's intended name), ``None`` when none is close enough.

    Example:
        >>> closest_key("clas", ["class", "config", "start_timeout_ms"]), closest_key("colour", ["port"])
        ('class', None)
    """
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=cutoff)
    return near[0] if near else None


# What an expanded ``${VAR}`` may be read as: ASCII decimal only (YAML 1.1 read 010 as 8, 0x1A as 26, 1:20 as 80).
_DECIMAL_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Past this many characters an expanded value stays text (int() refuses more than 4,300 digits).
_MAX_NUMBER_CHARS = 400
_FLAGS = {"true": True, "false": False}


class EnvText(str):
    """A string a ``${VAR}`` placeholder produced; a typed field converts it (see :func:`from_env`)."""

    @property
    def text(self) -> str:
        """The expanded text as written."""
        return str.__str__(self)


class EnvInt(int):
    """An expanded ``${VAR}`` of decimal digits: the number for code that reads the raw configuration, its text
    (``text``, leading zeros kept) for a string field."""

    text: str


class EnvFloat(float):
    """An expanded ``${VAR}`` that is a decimal number: the number, and its text (``1.10`` stays ``1.10``)."""

    text: str


class _WrittenText:
    """``text`` of a number written in the file, stored only when it differs from the number's own spelling.

    Why: an attribute gives each instance a dictionary, about 260 bytes an integer and 430 a float; most numbers
    are written as Python spells them (``5``, ``0.5``) and need none.
    """

    _written: str

    @property
    def text(self) -> str:
        """The number as written in the file."""
        written: str | None = getattr(self, "_written", None)
        return written if written is not None else repr(self)

    @text.setter
    def text(self, text: str) -> None:
        if text != repr(self):
            self._written = text


class YamlInt(_WrittenText, EnvInt):
    """An integer written in the file (not expanded), with the text it was written as: a string field keeps that
    text (``010`` stays ``"010"``, ``1:20`` ``"1:20"``); any other field reads it as the number YAML made of it.

    Example:
        >>> number = YamlInt(8)
        >>> number.text = "010"
        >>> number + 0, number.text
        (8, '010')
    """


class YamlFloat(_WrittenText, EnvFloat):
    """A float written in the file, with its text: a string field keeps ``1.10`` (YAML made it 1.1).

    Example:
        >>> number = YamlFloat(1.1)
        >>> number.text = "1.10"
        >>> number * 1, number.text
        (1.1, '1.10')
    """


class YamlFlag(EnvText):
    """A plain ``yes``, ``no``, ``on`` or ``off`` (``On``, ``ON``...) in the file: YAML 1.1 reads it as a flag,
    YAML 1.2 (production's) as the text. A flag field reads the flag, as before; a string field keeps the text
    (``service_version: on`` became "True").

    Example:
        >>> YamlFlag("On").flag, YamlFlag("no").flag, YamlFlag("On").text
        (True, False, 'On')
    """

    @property
    def flag(self) -> bool:
        """What YAML 1.1 reads the word as."""
        return self.text.lower() in ("yes", "on")


def from_env(text: str) -> EnvText | EnvInt | EnvFloat:
    """What a string with ``${VAR}`` in it is once expanded: its text, marked as coming from the environment, as a
    number when it is one in base 10 (so a raw configuration reads ``port: ${PORT}`` as a number).

    A settings field converts it to its declared type: an integer field takes decimal digits, a float field a
    decimal number, a flag ``true`` / ``false``, and a string field keeps the text as written.

    Example:
        >>> from_env("010"), from_env("010").text, from_env("1.10").text, from_env("0x1A")
        (10, '010', '1.10', '0x1A')
        >>> class Limits(Settings):
        ...     port: int = 0
        ...     prefix: str = ""
        ...     debug: bool = False
        >>> Limits(port=from_env("010"), prefix=from_env("12345"), debug=from_env("TRUE"))
        Limits(port=10, prefix='12345', debug=True)
        >>> Limits(port=from_env("1:20"))
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: port: must be an integer, got '1:20'
    """
    number: EnvInt | EnvFloat
    if len(text) <= _MAX_NUMBER_CHARS and _DECIMAL_INT.fullmatch(text):
        number = EnvInt(int(text))
    elif len(text) <= _MAX_NUMBER_CHARS and _DECIMAL_FLOAT.fullmatch(text) and math.isfinite(float(text)):
        number = EnvFloat(float(text))
    else:
        return EnvText(text)
    number.text = text
    return number


def env_text(value: object) -> str | None:
    """The text of a value :func:`from_env` made, ``None`` for any other value.

    Example:
        >>> env_text(from_env("1.10")), env_text(1.1)
        ('1.10', None)
    """
    return value.text if isinstance(value, EnvText | EnvInt | EnvFloat) else None


def _declared(value: Any, annotation: Any) -> Any:
    """``value`` with each :func:`from_env` value in it converted to the type ``annotation`` declares for it.

    Why: settings are strict, and an expanded value is text until a field says what it is; the YAML 1.1 reading it
    had before turned a zero-led port octal, a version ``1.10`` into ``1.1``, and a numeric prefix into a number
    its string field refused.
    """
    if get_origin(annotation) is Annotated:
        return _declared(value, get_args(annotation)[0])
    # ``Names | None``: a list type inside its Annotated
    arms = [_unannotated(arm) for arm in get_args(annotation) if arm is not type(None)] \
        if get_origin(annotation) in (Union, types.UnionType) else [annotation]
    text = env_text(value)
    if text is not None:
        return _scalar(value, text, arms)
    for arm in arms:
        origin, args = get_origin(arm), get_args(arm)
        if isinstance(value, list | tuple) and origin in (list, tuple, set, frozenset) and args \
                and (origin is not tuple or args[-1] is Ellipsis):
            return type(value)(_declared(item, args[0]) for item in value)
        if isinstance(value, Mapping) and origin in (dict, Mapping) and len(args) == 2:
            return {key: _declared(item, args[1]) for key, item in value.items()}
    return value


def _unannotated(annotation: Any) -> Any:
    """``annotation`` without the ``Annotated`` wrappers around it."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _scalar(value: Any, text: str, arms: list[Any]) -> Any:
    """An expanded value for a field whose types are ``arms``: the first of flag, integer, number its text is and
    the field takes, else the text (which a non-string field refuses, quoting it)."""
    kinds: set[type] = set()
    for arm in arms:
        if arm is Any or arm is object:
            return value  # checked later by whatever reads it (a module's ``config``, an adapter's)
        if get_origin(arm) is Literal:
            kinds.update(type(choice) for choice in get_args(arm))
        elif arm in (str, int, float, bool):
            kinds.add(arm)
    if isinstance(value, YamlFlag):  # the flag for a flag field; any other field gets (or refuses) the word written
        return value.flag if bool in kinds else text
    if bool in kinds and text.lower() in _FLAGS:
        return _FLAGS[text.lower()]
    if int in kinds and isinstance(value, EnvInt):
        return int(value)
    if float in kinds and isinstance(value, EnvInt | EnvFloat):
        return float(value)
    if isinstance(value, YamlInt | YamlFloat) and str not in kinds:
        return value  # the number as written refused as it always was ("must be a mapping, got 3")
    return text


def duration_bound(*names: str | None) -> int | None:
    """The largest value a numeric setting called ``names`` (its attribute, its key in the file) takes when the
    name says it is a duration (:data:`MAX_TIMEOUT_S` in seconds, else :data:`MAX_TIMEOUT_MS`), ``None`` otherwise.

    Why: a duration becomes seconds as a float where it is used; 15 fields without an upper bound passed the
    configuration check with 10**400 and raised OverflowError later (a traceback at start, a 500 on every request,
    a queue job delayed for good, a module stop never run).

    Example:
        >>> duration_bound("lease_ms"), duration_bound("attach_timeout_s"), duration_bound("max_retries")
        (1000000000000, 1000000000, None)
        >>> duration_bound("header_timeout_ms", "header_timeout")
        1000000000000
    """
    for name in names:
        if name and _DURATION_NAME.search(name):
            return MAX_TIMEOUT_S if _SECONDS_NAME.search(name) else MAX_TIMEOUT_MS
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}…"


_EXPECTED = {
    "int_type": "must be an integer", "int_parsing": "must be an integer", "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string", "list_type": "must be a list", "tuple_type": "must be a list",
    "frozen_set_type": "must be a list", "set_type": "must be a list",
    "dict_type": "must be a mapping", "model_type": "must be a mapping", "model_attributes_type": "must be a mapping",
    "dataclass_type": "must be a mapping", "string_too_short": "must not be empty",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _problem(error: ErrorDetails) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "is required"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound}, got {_shown(value)}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, got {_shown(value)}"
    expected = _EXPECTED.get(kind) or error["msg"].replace("Input should be", "must be")
    return f"{expected}, got {_shown(value)}"


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, str) and part.startswith(("function-", "tagged-union")):
            continue  # pydantic's own names for validator layers, not keys of the document
        path = join_path(path, part)
    return path


def error_from(exc: ValidationError) -> ConfigError:
    """The first problem of a pydantic ``ValidationError`` as a :class:`ConfigError` (one line)."""
    first = exc.errors(include_url=False)[0]
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, ConfigError):  # a validator checked a sub-document itself: its path continues ours
        return inner.under(_path(first["loc"]))
    return ConfigError(_problem(first), _path(first["loc"]))


# Deeper than any settings document goes; a deeper (or self-containing) one is refused rather than walked.
_MAX_KEY_DEPTH = 64


def _check_string_keys(value: Any, path: str, depth: int) -> None:
    """:class:`ConfigError` naming the first mapping key that is not a string (YAML allows ``1: x``).

    Why: a settings model receives its document as keyword arguments (its ``__init__`` is ours), and Python
    refuses a keyword that is not a string with a bare ``TypeError: keywords must be strings``.
    """
    if depth > _MAX_KEY_DEPTH:
        raise ConfigError(f"nested deeper than {_MAX_KEY_DEPTH} levels", path)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"key {_shown(key)} is not a string", path)
            _check_string_keys(item, join_path(path, key), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_string_keys(item, join_path(path, index), depth + 1)


class Settings(BaseModel):
    """Base of every settings model: strict, frozen, one error type, a per-model unknown-key policy.

    ``unknown_keys``: ``"forbid"`` (a :class:`ConfigError` listing the allowed keys), ``"warn"`` (logged once
    and ignored; a near-miss of a known key refused, naming it) or ``"ignore"`` (a near-miss logged with the closest
    known key). ``unused_keys``: keys production reads that this engine takes without using them (logged at info,
    and known to the near-miss check, so one is never refused as the typo of another key).
    ``label`` names the settings in those warnings. Fields whose key in the file
    differs from the attribute carry the file's key as ``alias``; both spellings are accepted.

    Example:
        >>> class Otel(Settings):
        ...     unknown_keys: ClassVar[UnknownKeys] = "warn"
        ...     unused_keys: ClassVar[frozenset[str]] = frozenset({"logs_retention_seconds"})
        ...     metrics_retention_seconds: int = 3600
        >>> Otel.parse({"logs_retention_seconds": 60}).metrics_retention_seconds
        3600
        >>> Otel.parse({"metrics_retention_second": 60})
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: unknown key 'metrics_retention_second' (did you mean \
'metrics_retention_seconds'? allowed: metrics_retention_seconds)
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", validate_by_name=True,
                              validate_by_alias=True)

    unknown_keys: ClassVar[UnknownKeys] = "forbid"
    unused_keys: ClassVar[frozenset[str]] = frozenset()
    label: ClassVar[str] = "settings"

    def __init__(self, /, **data: Any) -> None:
        if _validating.get():  # a nested model: pydantic places its errors under the outer model's path
            super().__init__(**data)
            return
        token = _validating.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise error_from(exc) from None
        finally:
            _validating.reset(token)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, *, at: str = "") -> Self:
        """Validate ``raw`` (``None`` means all defaults); errors are :class:`ConfigError` under path ``at``."""
        token = _validating.set(True)
        try:
            _check_string_keys(raw, "", 0)
            return cls.model_validate({} if raw is None else raw)
        except ConfigError as bad_key:
            raise (bad_key.under(at) if at else bad_key) from None
        except ValidationError as exc:
            error = error_from(exc)
            raise (error.under(at) if at else error) from None
        finally:
            _validating.reset(token)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_duration(cls, value: Any, info: ValidationInfo) -> Any:
        """Every duration field at most :func:`duration_bound` (and finite), whether or not it says so itself."""
        if isinstance(value, bool) or not isinstance(value, int | float) or info.field_name is None:
            return value
        field = cls.model_fields.get(info.field_name)
        bound = duration_bound(info.field_name, field.alias if field is not None else None)
        if bound is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {_shown(value)}")
        if value > bound:
            raise ValueError(f"must be <= {bound}, got {_shown(value)}")
        return value

    @classmethod
    def allowed_keys(cls) -> list[str]:
        """The keys a settings document may use (the file's spelling)."""
        return sorted(field.alias or name for name, field in cls.model_fields.items())

    @classmethod
    def _rename(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Hook for models that still accept an older spelling of a key: rewrite it to the current one."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return cls._declared(cls._known_keys_only(cls._rename(data)))

    @classmethod
    def _declared(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with the values ``${VAR}`` produced converted to their field's type (see :func:`from_env`)."""
        declared = {key: field.annotation for name, field in cls.model_fields.items()
                    for key in (name, field.alias) if key}
        return {key: _declared(value, declared[key]) if key in declared else value for key, value in data.items()}

    @classmethod
    def _known_keys_only(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """``data`` past the ``unknown_keys`` policy: refused (:class:`ValueError`), or without the keys it ignores."""
        known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        unknown = sorted(str(key) for key in data if key not in known)
        if not unknown:
            return data
        unused = [key for key in unknown if key in cls.unused_keys]
        if unused:
            log.info("%s: ignoring %s (production's; this engine does not use them)", cls.label, ", ".join(unused))
            unknown = [key for key in unknown if key not in cls.unused_keys]
        if not unknown:
            return {key: value for key, value in data.items() if key not in cls.unused_keys}
        if cls.unknown_keys == "ignore":
            # still ignored (production ignores it), but a near-miss is said: `prot:` left the engine on its
            # default port without a word
            for key in unknown:
                near = closest_key(key, known)
                if near is not None:
                    log.warning("%s: ignoring unknown key %r (did you mean %r?)", cls.label, key, near)
            return data
        # A key one letter or two off a known one is a typo, not a production key we do not implement: ignored, an
        # `adaptr:` left the state or queue module on its in-memory store, its data lost at the next restart.
        typos = {key: closest_key(key, known | cls.unused_keys, cutoff=_TYPO_CUTOFF) for key in unknown}
        typo = next((key for key in unknown if typos[key] is not None), None)
        if cls.unknown_keys == "forbid" or typo is not None:
            key = typo or unknown[0]
            meant = f"did you mean {typos[key]!r}? " if typos[key] else ""
            raise ValueError(f"unknown key {key!r} ({meant}allowed: {', '.join(cls.allowed_keys())})")
        log.warning("%s: ignoring unknown keys %s", cls.label, ", ".join(unknown))
        return {key: value for key, value in data.items() if key in known}


class AdapterSpec(Settings):
    """``adapter: {class, config}``, the production shape of a module's pluggable backend.

    Example:
        >>> AdapterSpec.parse({"class": "modules::queue::RedisAdapter", "config": {"redis_url": "redis://r"}})
        AdapterSpec(class_name='modules::queue::RedisAdapter', config={'redis_url': 'redis://r'})
    """

    class_name: str = Field(alias="class")
    config: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def _rename(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        # ``config:`` with nothing under it reads as null in YAML: the adapter's defaults.
        return {k: v for k, v in data.items() if k != "config"} if data.get("config", {}) is None else data

    def settings(self, model: type[SettingsT], *, at: str = "adapter.config") -> SettingsT:
        """The adapter's own ``config`` validated by ``model``; errors name ``adapter.config.<key>``."""
        return model.parse(self.config, at=at)


def pick_adapter(spec: AdapterSpec | None, default: str, choices: Mapping[str, type[Settings]]) -> tuple[str, Settings]:
    """The adapter class a module's settings name (``default`` when none) and its ``config`` validated by the model
    ``choices`` gives for that class.

    Example:
        >>> class Redis(Settings):
        ...     redis_url: str
        >>> choices = {"x::Local": Settings, "x::Redis": Redis}
        >>> pick_adapter(None, "x::Local", choices)
        ('x::Local', Settings())
        >>> pick_adapter(AdapterSpec.parse({"class": "x::Redis"}), "x::Local", choices)
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: adapter.config.redis_url: is required
        >>> pick_adapter(AdapterSpec.parse({"class": "x::Kafka"}), "x::Local", {"x::Local": Settings})
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: adapter.class: unknown adapter class 'x::Kafka' (expected x::Local)
    """
    class_name = default if spec is None else spec.class_name
    model = choices.get(class_name)
    if model is None:
        raise ConfigError(f"unknown adapter class {class_name!r} (expected {' or '.join(choices)})", "adapter.class")
    return class_name, model.parse(spec.config if spec is not None else {}, at="adapter.config")


class NoSettings(Settings):
    """An adapter without settings of its own (anything given is logged and ignored)."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "adapter.config"


class RedisAdapterSettings(Settings):
    """``adapter.config`` of the queue, pubsub and cron ``RedisAdapter`` classes: ``redis_url`` and our
    ``key_prefix`` (other keys are logged and ignored)."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "adapter.config"

    redis_url: NonEmpty
    key_prefix: str = ""
