"""Settings kept in the store, shared by every kernel, CLI and worker using one home."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import checks
from .errors import BadInput, InvalidConfig
from .units import parse_age

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


# Limits are counts of runs; a bound keeps them far inside what SQL's LIMIT can take.
_MAX_LIMIT = 100_000
# inf would make a cancel wait forever for a child that ignores SIGTERM; a day is plenty.
_MAX_GRACE_S = 86_400.0


def _int_at_least(minimum: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        return checks.whole_number(value, key, minimum, _MAX_LIMIT, InvalidConfig)

    return parse


def _seconds(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0 <= number <= _MAX_GRACE_S:
        raise InvalidConfig(
            f"{key} must be a number of seconds ≥ 0 and ≤ {_MAX_GRACE_S:g}, got {value!r}"
        )
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise InvalidConfig(f"{key} must be true or false, got {value!r}")


def _backend(key: str, value: Any) -> str:
    if value not in ("local", "ray"):
        raise InvalidConfig(f"{key} must be 'local' or 'ray', got {value!r}")
    return str(value)


def _text(key: str, value: Any) -> str:
    if value == "":  # clears the setting
        return ""
    return checks.text(str(value), key, "text", InvalidConfig)


# 4KB as every size here reads it (1000-based, like "256MB"): the message promises "4KB".
MIN_LOG_SIZE = 4_000


def _log_size(key: str, value: Any) -> int:
    """A size like 256MB (or bytes); 0 keeps logs whole, however large."""
    from .errors import ResourceRequestError
    from .units import parse_size

    try:
        size = 0 if value in (0, "0") else parse_size(value, key)
    except ResourceRequestError:
        size = -1
    if size != 0 and size < MIN_LOG_SIZE:
        raise InvalidConfig(
            f"{key} must be a size of at least 4KB like 256MB, or 0 for no cap; got {value!r}"
        )
    return size


def _gpu_mask(key: str, value: Any) -> str:
    """The GPUs nbrunner may hand out: indices in PCI order like 0,2; none; or "" for all."""
    text = str(value).replace(" ", "").lower()
    if text in ("", "none"):
        return text
    indices = text.split(",")
    if not all(i.isdigit() for i in indices):
        raise InvalidConfig(
            f"{key} must be GPU indices like 0,2 (as nvidia-smi numbers them), none, or an "
            f"empty value for all GPUs; got {value!r}"
        )
    return ",".join(str(i) for i in sorted({int(i) for i in indices}))


def _age(key: str, value: Any) -> str:
    """An age like 30d (see nbrunner.units.parse_age), or "" for none."""
    if value in ("", None):
        return ""
    try:
        parse_age(value, key)
    except BadInput as exc:
        raise InvalidConfig(f"{exc}, or an empty value for none") from None
    return str(value).strip()


def _directory(key: str, value: Any) -> str:
    """An absolute directory (created if missing), or "" for the default."""
    if value in ("", None):
        return ""
    path = Path(str(value)).expanduser()
    if not path.is_absolute() or (path.exists() and not path.is_dir()):
        raise InvalidConfig(
            f"{key} must be an absolute path to a directory (created if missing), or an "
            f"empty value for the default; got {value!r}"
        )
    return str(path)


def _share_or_size(key: str, value: Any) -> str:
    """A share of a GPU's memory like 90% (0% takes any GPU), or a size like 8GB."""
    from .units import parse_size

    text = str(value).strip().replace(" ", "")
    try:
        ok = 0 <= float(text[:-1]) <= 100 if text.endswith("%") else parse_size(text, key) >= 0
    except (ValueError, BadInput):
        ok = False
    if not ok:
        raise InvalidConfig(
            f"{key} must be a share of a GPU's memory like 90% (0% for any GPU) or a size "
            f"like 8GB; got {value!r}"
        )
    return text


DEFAULTS: dict[str, Any] = {
    "max_concurrent": 10,
    "paused": False,
    "grace_period": 5.0,
    "backend": "local",
    "ray.address": "",
    "max_log_size": 256_000_000,
    "gpus": "",
    "retention": "",  # an age like 30d: the service removes runs ended longer ago
    "logs_dir": "",  # where new runs' logs go; "" is HOME/logs
    "keep_awake": True,  # keep the machine from sleeping while runs are active
    "gpu_min_free": "90%",  # what others must leave free of a GPU a whole-GPU run gets
}
_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "max_concurrent": _int_at_least(1),
    "paused": _bool,
    "grace_period": _seconds,
    "backend": _backend,
    "ray.address": _text,
    "max_log_size": _log_size,
    "gpus": _gpu_mask,
    "retention": _age,
    "logs_dir": _directory,
    "keep_awake": _bool,
    "gpu_min_free": _share_or_size,
}
GROUP_PREFIX = "group."


def check_key(key: str) -> Callable[[str, Any], Any]:
    """The parser for a config key, or InvalidConfig naming the keys there are."""
    if key.startswith(GROUP_PREFIX) and len(key) > len(GROUP_PREFIX):
        return _int_at_least(1)
    parser = _PARSERS.get(key)
    if parser is None:
        keys = ", ".join([*_PARSERS, "group.NAME"])
        raise InvalidConfig(f"unknown config key {key!r}; known keys: {keys}")
    return parser


def parse_value(key: str, value: Any) -> Any:
    """The typed value for a config key, or InvalidConfig saying what form is allowed."""
    return check_key(key)(key, value)


def seconds_from_env(name: str, default: float) -> float:
    """A duration from the environment (tests and benchmarks shorten some), else default."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def encode(value: Any) -> str:
    return json.dumps(value)


def decode(text: str) -> Any:
    return json.loads(text)
