"""Module specs: what can be run, its typed parameters, and how parameters become argv."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import checks, platform
from .errors import InvalidParameter, ModulesFileError, NbrunnerError, UnknownModule
from .notebook import executor_argv, infer_params
from .resources import Resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PARAM_TYPES = ("int", "float", "str", "bool", "choice", "json")  # json: lists, tables
_PARAM_KEYS = {"type", "default", "min", "max", "choices", "help", "flag", "optional"}
NONE_TEXT = "none"  # how the command line says None: -p max_depth=none
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
    "keep_leftovers",
    "flags",
    "notebook",
    "kernel",
    "retry_lost",
    "snapshot",
}
_TARGETS = ("python_module", "script", "command", "notebook")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
# Parameter names become --flags, so they must read as one.
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.-]*$")
# How a module's parameter names become its child's options: n_estimators becomes
# --n_estimators ("as-is", the default) or --n-estimators ("dashes", argparse's own style).
FLAG_STYLES = ("as-is", "dashes")
_DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# What each string key of a module should look like, as said in an error about it.
_TEXT_FORMS = {
    "python_module": 'a dotted module name like "pkg.train"',
    "script": 'a path like "train.py"',
    "cwd": 'a directory like "."',
    "group": 'a group name like "gpu"',
}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str = "str"
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""
    flag: str = ""  # the child's option for it; "" is --NAME
    optional: bool = False  # None (`-p NAME=none`) is a value: the flag is left out

    @property
    def option(self) -> str:
        return self.flag or f"--{self.name}"

    @property
    def required(self) -> bool:
        return self.default is None and not self.optional

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

    def describe(self) -> str:
        """What a value must be, in words: "an int ≥ 1", "one of 'a', 'b'"."""
        if self.type == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type == "json":
            return 'a JSON value like [1, 2] or {"k": 1}'
        bounds = [
            f"≥ {self.min}" if self.min is not None else "",
            f"≤ {self.max}" if self.max is not None else "",
        ]
        article = "an" if self.type == "int" else "a"
        return " ".join([f"{article} {self.type}", " and ".join(filter(None, bounds))]).strip()

    def _parse_text(self, text: str, module: str) -> Any:
        try:
            if self.type == "int":
                return int(text)
            if self.type == "float":
                return float(text)
        except ValueError:
            raise self._fail(module, text, self.describe()) from None
        if self.type == "json":
            try:
                return json.loads(text)
            except ValueError:
                raise self._fail(module, text, self.describe()) from None
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
            raise self._fail(module, value, self.describe())
        if kind == "float":
            if not checks.is_number(value):  # nan and inf would pass every min and max
                raise self._fail(module, value, "a finite " + self.describe().removeprefix("a "))
            return float(value)
        if kind == "bool" and not isinstance(value, bool):
            raise self._fail(module, value, "true or false")
        if kind == "str" and not isinstance(value, str):
            raise self._fail(module, value, "a string")
        if kind == "str" and "\0" in value:  # the OS refuses NUL in argv
            raise self._fail(module, value, "a string without NUL bytes (\\0)")
        if kind == "choice" and value not in self.choices:
            raise self._fail(module, value, self.describe())
        if kind == "json":
            try:  # what reaches the run is this text: it must round-trip
                return json.loads(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError):
                raise self._fail(module, value, self.describe()) from None
        return value

    def text(self, value: Any) -> str:
        """The value as a command line (or a form field) spells it."""
        return json.dumps(value) if self.type == "json" else str(value)

    def _check_range(self, value: Any, module: str) -> None:
        if self.type not in ("int", "float"):
            return
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            raise self._fail(module, value, self.describe())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for key in ("default", "min", "max", "help"):
            if getattr(self, key) not in (None, ""):
                data[key] = getattr(self, key)
        if self.choices:
            data["choices"] = list(self.choices)
        if self.option != f"--{self.name}":
            data["flag"] = self.option
        if self.optional:
            data["optional"] = True
        return data


def parse_param(
    module: str, name: str, data: Mapping[str, Any] | str, flags: str = "as-is"
) -> ParamSpec:
    where = f"parameter {name!r} of module {module!r}"
    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        raise InvalidParameter(
            f"{where}: a name becomes a --flag, so use letters, digits, _, - or . "
            f"(starting with a letter or _)"
        )
    if isinstance(data, str):  # shorthand: epochs = "int"
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise InvalidParameter(
            f'{where} must be a table like {{ type = "int", default = 3 }}, got {data!r}'
        )
    unknown = set(data) - _PARAM_KEYS
    if unknown:
        raise InvalidParameter(
            f"{where} has unknown key {sorted(unknown)[0]!r}; "
            f"allowed keys: {', '.join(sorted(_PARAM_KEYS))}"
        )
    kind = data.get("type", "str")
    if kind not in PARAM_TYPES:
        raise InvalidParameter(f"{where} has type {kind!r}; use one of {', '.join(PARAM_TYPES)}")
    help_text = data.get("help", "")
    if not isinstance(help_text, str):
        raise InvalidParameter(f"{where}: help must be text, got {help_text!r}")
    optional = data.get("optional", False)
    if not isinstance(optional, bool):
        raise InvalidParameter(f"{where}: optional must be true or false, got {optional!r}")
    spec = ParamSpec(
        name=name,
        type=kind,
        min=_bound(where, kind, data, "min"),
        max=_bound(where, kind, data, "max"),
        choices=_choices(where, kind, data.get("choices")),
        help=help_text,
        flag=_param_flag(where, name, data.get("flag"), flags),
        optional=optional,
    )
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        raise InvalidParameter(f"{where}: min {spec.min} is above max {spec.max}")
    default = data.get("default")
    if default is not None:
        try:
            spec = replace(spec, default=spec.coerce(default, module))
        except InvalidParameter:  # say it is the file's default, not a value someone gave
            raise InvalidParameter(
                f"{where}: default must be {spec.describe()}, got {default!r}"
            ) from None
    return spec


def _param_flag(where: str, name: str, flag: Any, style: str) -> str:
    if flag is None:
        return "--" + (name.replace("_", "-") if style == "dashes" else name)
    if not isinstance(flag, str) or not _FLAG.match(flag):
        raise InvalidParameter(
            f'{where}: flag must be an option like "--n-estimators", got {flag!r}'
        )
    return flag


def _bound(where: str, kind: str, data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if kind not in ("int", "float"):
        raise InvalidParameter(f"{where}: {key} only applies to int and float parameters")
    if not checks.is_number(value):
        raise InvalidParameter(f"{where}: {key} must be a number like 0, got {value!r}")
    return value


def _choices(where: str, kind: str, choices: Any) -> tuple[Any, ...]:
    if choices is None:
        if kind == "choice":
            raise InvalidParameter(f"{where} is a choice but lists no choices")
        return ()
    if kind != "choice":
        raise InvalidParameter(f'{where}: choices only apply to type = "choice"')
    if not isinstance(choices, list | tuple) or not choices:
        raise InvalidParameter(
            f'{where}: choices must be a list like ["small", "large"], got {choices!r}'
        )
    for choice in choices:
        if not ((isinstance(choice, str) and "\0" not in choice) or checks.is_number(choice)):
            raise InvalidParameter(
                f"{where}: choices must be strings (without NUL bytes) or numbers, got {choice!r}"
            )
    return tuple(choices)


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
    keep_leftovers: bool = False  # leave processes the run started behind when it ends
    flags: str = "as-is"  # one of FLAG_STYLES
    notebook: str | None = None  # run by nbrunner.notebook's executor
    kernel: str | None = None  # the notebook's kernel; None: its own kernelspec
    retry_lost: int = 0  # queue a run lost to a reboot again, this many times
    snapshot: bool = False  # run a copy of the code taken at submit (nbrunner.snapshot)

    @property
    def param_map(self) -> dict[str, ParamSpec]:
        return {p.name: p for p in self.params}

    def validate_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Complete, typed parameters for one run, defaults filled in."""
        if given is not None and not isinstance(given, Mapping):
            raise InvalidParameter(
                f"params of module {self.name!r} must be a mapping like {{'epochs': 5}}, "
                f"got {given!r}"
            )
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
            elif name in given and not spec.optional:
                # None must not quietly mean "the default": that would run another config
                instead = (
                    f"give {spec.describe()}"
                    if spec.required
                    else f"leave it out for its default {spec.default!r}"
                )
                raise InvalidParameter(
                    f"parameter {name!r} of module {self.name!r} cannot be None: {instead}, "
                    "or declare it { optional = true } in the modules file"
                )
            elif name in given:
                values[name] = None
            elif spec.required:
                raise InvalidParameter(
                    f"parameter {name!r} of module {self.name!r} is required "
                    f"({spec.describe()}); pass it with -p {name}=VALUE"
                )
            else:
                values[name] = spec.default
        return values

    def from_text(self, name: str, text: str) -> str | None:
        """A command-line value: `none` is None for an optional parameter (its flag is then
        left out of argv); any other text is checked by validate_params."""
        spec = self.param_map.get(name)
        optional = spec is not None and spec.optional
        return None if optional and text.strip().lower() == NONE_TEXT else text

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

    def run_row(
        self,
        params: Mapping[str, Any],
        priority: int,
        timeout: float | None,
        resources: Mapping[str, Any] | None,
        group: str | None,
        after: list[int],
    ) -> dict[str, Any]:
        """The store row of one submission of this module, every value checked (`after`:
        run ids the caller found in the store)."""
        values = self.validate_params(params)
        priority, timeout, group = (
            checks.priority(priority),
            checks.timeout(timeout),
            checks.group(group),
        )
        needs = self.resources.merged(dict(resources) if resources else None)
        # An empty PYTHONUNBUFFERED turns it off even where the service's own env sets it.
        env = {"PYTHONUNBUFFERED": "1" if self.unbuffered else "", **self.env}
        if self.hide_gpus and not (needs.gpus or needs.gpu_memory):
            env["CUDA_VISIBLE_DEVICES"] = ""  # opted in: a CPU-only run sees no GPU
        return {
            "module": self.name,
            "params": values,
            "argv": self.argv(values),
            "env": env,
            "on_done": list(self.on_done or ()),
            "cwd": self.cwd,
            "priority": priority,
            "timeout": timeout if timeout is not None else self.timeout,
            "resources": needs.to_dict(),
            "group": group or self.group,
            "after": after,
            "keep_leftovers": self.keep_leftovers,
            "retry_lost": self.retry_lost,
        }

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
            "keep_leftovers": self.keep_leftovers,
            "retry_lost": self.retry_lost,
            "snapshot": self.snapshot,
            "flags": self.flags,
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
                args.append(spec.option)
            elif spec.default:
                args.append("--no-" + spec.option.lstrip("-"))
        elif spec.text(value).startswith("-"):
            # One word, so argparse reads "--n=7" or "-1e-3" as the value, not as an option.
            args.append(f"{spec.option}={spec.text(value)}")
        else:
            args += [spec.option, spec.text(value)]
    return args


def build_module(
    name: str,
    data: Mapping[str, Any],
    base_dir: Path | None = None,
    *,
    check_files: bool = True,
) -> ModuleSpec:
    """A ModuleSpec from a modules.toml table or register() keywords, fully checked.

    check_files: the script and cwd must exist now, so a typo is refused where the module is
    defined rather than when its run starts.
    """
    checks.text(name, "module names", "non-empty strings", ModulesFileError)
    _check_shape(name, data)
    python_module, script, cwd = _target(name, data, base_dir)
    notebook = _notebook_path(name, data, base_dir or Path(cwd or "."))
    flags = data.get("flags", "as-is")
    if flags not in FLAG_STYLES:
        raise ModulesFileError(
            f'module {name!r}: flags must be "as-is" (--n_estimators) or "dashes" '
            f"(--n-estimators), got {flags!r}"
        )
    spec = ModuleSpec(
        name=name,
        python_module=python_module,
        script=script,
        command=_command(name, data.get("command")),
        description=_description(name, data.get("description", "")),
        params=_params(
            name, data.get("params") or (infer_params(notebook) if notebook else {}), flags
        ),
        timeout=_timeout(name, data.get("timeout")),
        env=_env(name, data.get("env")),
        cwd=cwd,
        resources=_resources(name, data.get("resources") or {}),
        group=_text_key(name, data, "group"),
        on_done=_hook_argv(name, data.get("on_done")),
        hide_gpus=_bool_key(name, data, "hide_gpus", default=False),
        unbuffered=_bool_key(name, data, "unbuffered", default=True),
        keep_leftovers=_bool_key(name, data, "keep_leftovers", default=False),
        flags=flags,
        notebook=notebook,
        kernel=data.get("kernel"),
        retry_lost=checks.whole_number(
            data.get("retry_lost", 0), f"module {name!r}: retry_lost", 0, 10, ModulesFileError
        ),
        snapshot=_bool_key(name, data, "snapshot", default=False),
    )
    if spec.snapshot and not (spec.script or spec.python_module):
        raise ModulesFileError(
            f"module {name!r}: snapshot copies a script or a python_module's package; "
            "a command or notebook module cannot have it"
        )
    if check_files:
        _check_files(spec)
    return spec


def _check_shape(name: str, data: Any) -> None:
    """A table of known keys naming exactly one thing to run."""
    if not isinstance(data, Mapping):
        raise ModulesFileError(
            f"module {name!r} must be a table ([modules.{name}] with keys like "
            f'python_module = "pkg.train"), got {data!r}'
        )
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


def _target(
    name: str, data: Mapping[str, Any], base_dir: Path | None
) -> tuple[str | None, str | None, str | None]:
    """python_module, script and cwd; in a modules file, paths are relative to the file."""
    python_module = _text_key(name, data, "python_module")
    # "train.py" is a valid dotted name, but nobody names a submodule "py"
    if python_module and (not _DOTTED_NAME.match(python_module) or python_module.endswith(".py")):
        raise ModulesFileError(
            f"module {name!r}: python_module must be {_TEXT_FORMS['python_module']}, "
            f'got {python_module!r} (for a file, use script = "train.py")'
        )
    script, cwd = _text_key(name, data, "script"), _text_key(name, data, "cwd")
    if base_dir is not None:
        if script and not os.path.isabs(script) and ("/" in script or script.endswith(".py")):
            script = str(base_dir / script)
        cwd = str(base_dir / cwd) if cwd else str(base_dir)
    return python_module, script, cwd


def _description(module: str, description: Any) -> str:
    if not isinstance(description, str):
        raise ModulesFileError(f"module {module!r}: description must be text, got {description!r}")
    return description


def _params(module: str, params: Any, flags: str) -> tuple[ParamSpec, ...]:
    if not isinstance(params, Mapping):
        raise ModulesFileError(f"module {module!r}: params must be a table, got {params!r}")
    return tuple(parse_param(module, key, value, flags) for key, value in params.items())


def _timeout(module: str, timeout: Any) -> float | None:
    if timeout is not None and not (checks.is_number(timeout) and timeout > 0):
        raise ModulesFileError(
            f"module {module!r}: timeout must be a positive number of seconds, got {timeout!r}"
        )
    return None if timeout is None else float(timeout)


def _resources(module: str, resources: Any) -> Resources:
    if not isinstance(resources, Mapping):
        raise ModulesFileError(
            f"module {module!r}: resources must be a table like {{ cpus = 2 }}, got {resources!r}"
        )
    try:
        return Resources.from_mapping(dict(resources))
    except NbrunnerError as exc:
        raise ModulesFileError(f"module {module!r}: {exc}") from None


def _text_key(module: str, data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    return checks.text(value, f"module {module!r}: {key}", _TEXT_FORMS[key], ModulesFileError)


def _bool_key(module: str, data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):  # bool("no") is True: text is refused, not guessed
        raise ModulesFileError(f"module {module!r}: {key} must be true or false, got {value!r}")
    return value


def _argv_list(module: str, key: str, value: Any, example: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ModulesFileError(
            f"module {module!r}: {key} must be a list of strings like {example}, got {value!r}"
        )
    form = f"a list of strings like {example}"
    return tuple(
        checks.text(part, f"module {module!r}: {key}", form, ModulesFileError) for part in value
    )


def _command(module: str, command: Any) -> tuple[str, ...] | None:
    if command is None:
        return None
    return _argv_list(module, "command", command, '["prog", "--flag"]')


def _env(module: str, env: Any) -> dict[str, str]:
    """Environment values as text; numbers are written as TOML users expect (4 → "4")."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ModulesFileError(f"module {module!r}: env must be a table of strings, got {env!r}")
    values: dict[str, str] = {}
    for key, value in env.items():
        what = f"module {module!r}: env {key!r}"
        checks.text(key, f"module {module!r}: env names", "non-empty text", ModulesFileError)
        if "=" in key:
            raise ModulesFileError(f"{what}: a variable name cannot contain '='")
        if checks.is_number(value):
            value = str(value)
        values[key] = checks.text(value, what, 'text like "4"', ModulesFileError)
    return values


def _check_files(spec: ModuleSpec) -> None:
    if spec.cwd and not os.path.isdir(spec.cwd):
        raise ModulesFileError(f"module {spec.name!r}: cwd {spec.cwd!r} is not a directory")
    script = spec.script
    if script and not (
        os.path.isfile(os.path.join(spec.cwd or "", script)) or shutil.which(script)
    ):
        raise ModulesFileError(
            f"module {spec.name!r}: script {script!r} is not a file; paths are relative to "
            f"the modules file (or the working directory for register())"
        )
    if spec.notebook and not os.path.isfile(spec.notebook):
        raise ModulesFileError(f"module {spec.name!r}: notebook {spec.notebook!r} is not a file")


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
    """on_done as argv: a list, or a string split as this platform's command lines are
    (POSIX shell words; Windows rules, which keep C:\\tools\\notify.exe whole), never run
    by a shell."""
    if hook is None or hook == "" or hook == []:
        return None
    if isinstance(hook, str):
        try:
            hook = platform.split_command(hook)
        except ValueError as exc:
            raise ModulesFileError(
                f"module {module!r}: on_done {hook!r} cannot be split into words ({exc}); "
                f"close the quote, or give a list of strings"
            ) from None
    return _argv_list(module, "on_done", hook, '["notify-send", "{module} {status}"]')


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
