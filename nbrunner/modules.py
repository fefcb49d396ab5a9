"""Module specs: what can be run, its typed parameters, and how parameters become argv."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InvalidParameter, ModulesFileError, NbrunnerError, UnknownModule
from .notebook import executor_argv, infer_params
from .resources import Resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PARAM_TYPES = ("int", "float", "str", "bool", "choice")
_PARAM_KEYS = {"type", "default", "min", "max", "choices", "help"}
_MODULE_KEYS = {
    "description",
    "python_module",
    "script",
    "command",
    "params",
    "timeout",
    "env",
    "cwd",
    "resources",
    "group",
    "on_done",
    "hide_gpus",
    "unbuffered",
    "notebook",
    "kernel",
}
_TARGETS = ("python_module", "script", "command", "notebook")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str = "str"
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def coerce(self, value: Any, module: str) -> Any:
        """The value as this parameter's type, or InvalidParameter saying what is allowed."""
        if isinstance(value, str) and self.type != "str":
            value = self._parse_text(value, module)
        checked = self._check_type(value, module)
        self._check_range(checked, module)
        return checked

    def _fail(self, module: str, value: Any, allowed: str) -> InvalidParameter:
        return InvalidParameter(
            f"parameter {self.name!r} of module {module!r} must be {allowed}, got {value!r}"
        )

    def _describe(self) -> str:
        if self.type == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        bounds = [
            f"≥ {self.min}" if self.min is not None else "",
            f"≤ {self.max}" if self.max is not None else "",
        ]
        article = "an" if self.type == "int" else "a"
        return " ".join([f"{article} {self.type}", *filter(None, bounds)])

    def _parse_text(self, text: str, module: str) -> Any:
        try:
            if self.type == "int":
                return int(text)
            if self.type == "float":
                return float(text)
        except ValueError:
            raise self._fail(module, text, self._describe()) from None
        if self.type == "bool":
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise self._fail(module, text, "true or false")
        if self.type == "choice":
            for choice in self.choices:
                if str(choice) == text:
                    return choice
        return text

    def _check_type(self, value: Any, module: str) -> Any:
        kind = self.type
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._fail(module, value, self._describe())
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._fail(module, value, self._describe())
            return float(value)
        if kind == "bool" and not isinstance(value, bool):
            raise self._fail(module, value, "true or false")
        if kind == "str" and not isinstance(value, str):
            raise self._fail(module, value, "a string")
        if kind == "choice" and value not in self.choices:
            raise self._fail(module, value, self._describe())
        return value

    def _check_range(self, value: Any, module: str) -> None:
        if self.type not in ("int", "float"):
            return
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            raise self._fail(module, value, self._describe())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for key in ("default", "min", "max", "help"):
            if getattr(self, key) not in (None, ""):
                data[key] = getattr(self, key)
        if self.choices:
            data["choices"] = list(self.choices)
        return data


def parse_param(module: str, name: str, data: Mapping[str, Any] | str) -> ParamSpec:
    if isinstance(data, str):  # shorthand: epochs = "int"
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise InvalidParameter(
            f"parameter {name!r} of module {module!r} must be a table like "
            f'{{ type = "int", default = 3 }}, got {data!r}'
        )
    unknown = set(data) - _PARAM_KEYS
    if unknown:
        raise InvalidParameter(
            f"parameter {name!r} of module {module!r} has unknown key {sorted(unknown)[0]!r}; "
            f"allowed keys: {', '.join(sorted(_PARAM_KEYS))}"
        )
    kind = data.get("type", "str")
    if kind not in PARAM_TYPES:
        raise InvalidParameter(
            f"parameter {name!r} of module {module!r} has type {kind!r}; "
            f"use one of {', '.join(PARAM_TYPES)}"
        )
    choices = tuple(data.get("choices", ()))
    if kind == "choice" and not choices:
        raise InvalidParameter(
            f"parameter {name!r} of module {module!r} is a choice but lists no choices"
        )
    spec = ParamSpec(
        name=name,
        type=kind,
        min=data.get("min"),
        max=data.get("max"),
        choices=choices,
        help=str(data.get("help", "")),
    )
    default = data.get("default")
    if default is not None:
        spec = replace(spec, default=spec.coerce(default, module))
    return spec


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    python_module: str | None = None
    script: str | None = None
    command: tuple[str, ...] | None = None
    description: str = ""
    params: tuple[ParamSpec, ...] = ()
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    resources: Resources = field(default_factory=Resources)
    group: str | None = None
    on_done: tuple[str, ...] | None = None
    hide_gpus: bool = False
    unbuffered: bool = True  # Python children write each line at once (live logs)
    notebook: str | None = None  # run by nbrunner.notebook's executor
    kernel: str | None = None  # the notebook's kernel; None: its own kernelspec

    @property
    def param_map(self) -> dict[str, ParamSpec]:
        return {p.name: p for p in self.params}

    def validate_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Complete, typed parameters for one run, defaults filled in."""
        given = dict(given or {})
        specs = self.param_map
        unknown = [key for key in given if key not in specs]
        if unknown:
            known = ", ".join(specs) or "none"
            raise InvalidParameter(
                f"unknown parameter {unknown[0]!r} for module {self.name!r}; "
                f"its parameters: {known}"
            )
        values: dict[str, Any] = {}
        for name, spec in specs.items():
            if name in given and given[name] is not None:
                values[name] = spec.coerce(given[name], self.name)
            elif spec.required:
                raise InvalidParameter(
                    f"parameter {name!r} of module {self.name!r} is required "
                    f"({spec._describe()}); pass it with -p {name}=VALUE"
                )
            else:
                values[name] = spec.default
        return values

    def argv(self, params: Mapping[str, Any], python: str = sys.executable) -> list[str]:
        """The run's command line: parameters become flags, never a shell string."""
        if self.python_module:
            head = [python, "-m", self.python_module]
        elif self.notebook:
            return executor_argv(self.notebook, self.kernel, dict(params), python)
        elif self.script:
            head = [python, self.script] if self.script.endswith(".py") else [self.script]
        else:
            head = list(self.command or ())
        return head + params_to_args(self.params, params)

    def to_dict(self) -> dict[str, Any]:
        target = {key: getattr(self, key) for key in _TARGETS if getattr(self, key)}
        if "command" in target:
            target["command"] = list(target["command"])
        extra = {
            key: getattr(self, key)
            for key in ("timeout", "cwd", "group", "kernel")
            if getattr(self, key) is not None
        }
        if self.on_done:
            extra["on_done"] = list(self.on_done)
        return {
            "name": self.name,
            "description": self.description,
            **target,
            **extra,
            "env": dict(self.env),
            "hide_gpus": self.hide_gpus,
            "unbuffered": self.unbuffered,
            "params": {p.name: p.to_dict() for p in self.params},
            "resources": self.resources.to_dict(),
        }


def params_to_args(specs: Iterable[ParamSpec], values: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for spec in specs:
        value = values.get(spec.name)
        if value is None:
            continue
        if spec.type == "bool":
            if value:
                args.append(f"--{spec.name}")
            elif spec.default:
                args.append(f"--no-{spec.name}")
        else:
            args += [f"--{spec.name}", str(value)]
    return args


def build_module(name: str, data: Mapping[str, Any], base_dir: Path | None = None) -> ModuleSpec:
    """A ModuleSpec from a modules.toml table or register() keywords, fully checked."""
    if not name or not isinstance(name, str):
        raise ModulesFileError(f"module names must be non-empty strings, got {name!r}")
    unknown = set(data) - _MODULE_KEYS
    if unknown:
        raise ModulesFileError(
            f"module {name!r} has unknown key {sorted(unknown)[0]!r}; "
            f"allowed keys: {', '.join(sorted(_MODULE_KEYS))}"
        )
    targets = [key for key in _TARGETS if data.get(key)]
    if len(targets) != 1:
        raise ModulesFileError(
            f"module {name!r} needs exactly one of python_module, script, command or notebook; "
            f"got {', '.join(targets) or 'none'}"
        )
    command = data.get("command")
    if command is not None:
        if isinstance(command, str) or not all(isinstance(a, str) for a in command):
            raise ModulesFileError(
                f"module {name!r}: command must be a list of strings like "
                f'["prog", "--flag"], got {command!r}'
            )
        command = tuple(command)
    script = data.get("script")
    cwd = data.get("cwd")
    if base_dir is not None:
        if script and not os.path.isabs(script) and ("/" in script or script.endswith(".py")):
            script = str(base_dir / script)
        cwd = str(base_dir / cwd) if cwd else str(base_dir)
    notebook = _notebook_path(name, data, base_dir or Path(cwd or "."))
    timeout = data.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ModulesFileError(
            f"module {name!r}: timeout must be a positive number of seconds, got {timeout!r}"
        )
    env = data.get("env") or {}
    if not isinstance(env, Mapping):
        raise ModulesFileError(f"module {name!r}: env must be a table of strings, got {env!r}")
    params = data.get("params") or (infer_params(notebook) if notebook else {})
    if not isinstance(params, Mapping):
        raise ModulesFileError(f"module {name!r}: params must be a table, got {params!r}")
    try:
        resources = Resources.from_mapping(data.get("resources"))
    except NbrunnerError as exc:
        raise ModulesFileError(f"module {name!r}: {exc}") from None
    return ModuleSpec(
        name=name,
        python_module=data.get("python_module"),
        script=script,
        command=command,
        description=str(data.get("description", "")),
        params=tuple(parse_param(name, key, value) for key, value in params.items()),
        timeout=float(timeout) if timeout is not None else None,
        env={str(k): str(v) for k, v in env.items()},
        cwd=cwd,
        resources=resources,
        group=data.get("group"),
        on_done=_hook_argv(name, data.get("on_done")),
        hide_gpus=bool(data.get("hide_gpus", False)),
        unbuffered=bool(data.get("unbuffered", True)),
        notebook=notebook,
        kernel=data.get("kernel"),
    )


def _notebook_path(module: str, data: Mapping[str, Any], base: Path) -> str | None:
    """The notebook as an absolute path (relative ones are to modules.toml, or to cwd for a
    registered module); a kernel is only a notebook's."""
    notebook, kernel = data.get("notebook"), data.get("kernel")
    if kernel is not None and (not notebook or not isinstance(kernel, str)):
        raise ModulesFileError(
            f'module {module!r}: kernel names a notebook\'s Jupyter kernel (like "python3") '
            f"and needs notebook = PATH; got kernel = {kernel!r}"
        )
    if not notebook:
        return None
    if not isinstance(notebook, str):
        raise ModulesFileError(f"module {module!r}: notebook must be a path, got {notebook!r}")
    return str((base / notebook).absolute())


def _hook_argv(module: str, hook: object) -> tuple[str, ...] | None:
    """on_done as argv: a list, or a string split like a shell would (but never run by one)."""
    if hook is None or hook == "":
        return None
    if isinstance(hook, str):
        return tuple(shlex.split(hook))
    if isinstance(hook, list | tuple) and all(isinstance(part, str) for part in hook):
        return tuple(hook)
    raise ModulesFileError(
        f'module {module!r}: on_done must be a command like "notify-send {{module}} '
        f'{{status}}" or a list of strings, got {hook!r}'
    )


def load_modules_file(path: Path) -> dict[str, ModuleSpec]:
    """Every module in a modules.toml; a missing file is an empty set."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ModulesFileError(f"cannot read modules file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModulesFileError(f"modules file {path} is not valid TOML: {exc}") from None
    tables = data.get("modules", {})
    if not isinstance(tables, Mapping) or set(data) - {"modules"}:
        raise ModulesFileError(
            f"modules file {path} must hold only [modules.NAME] tables, "
            f"found top-level keys: {', '.join(sorted(data))}"
        )
    try:
        return {
            name: build_module(name, table, base_dir=path.parent) for name, table in tables.items()
        }
    except NbrunnerError as exc:
        raise ModulesFileError(f"{path}: {exc}") from None


def lookup(modules: Mapping[str, ModuleSpec], name: str) -> ModuleSpec:
    try:
        return modules[name]
    except KeyError:
        raise UnknownModule(name, list(modules)) from None
