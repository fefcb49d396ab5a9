"""nbrunner: run many jobs at once from Jupyter.

A run's child imports this package (for nbrunner.report), so names are loaded lazily: importing
`nbrunner` costs nothing until `Runner` (and with it pandas, psutil) is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BadInput",
    "InvalidConfig",
    "InvalidParameter",
    "InvalidTransition",
    "ModuleSpec",
    "ModulesFileError",
    "NbrunnerError",
    "OperationFailed",
    "ParamSpec",
    "ResourceRequestError",
    "Resources",
    "Run",
    "RunRecord",
    "RunStatus",
    "Runner",
    "UnknownModule",
    "UnknownRun",
    "__version__",
    "report",
]

_HOMES = {
    "Runner": "runner",
    "Run": "run",
    "RunRecord": "models",
    "RunStatus": "states",
    "ModuleSpec": "modules",
    "ParamSpec": "modules",
    "Resources": "resources",
    "report": "reporting",
}

if TYPE_CHECKING:
    from .errors import (
        BadInput,
        InvalidConfig,
        InvalidParameter,
        InvalidTransition,
        ModulesFileError,
        NbrunnerError,
        OperationFailed,
        ResourceRequestError,
        UnknownModule,
        UnknownRun,
    )
    from .models import RunRecord
    from .modules import ModuleSpec, ParamSpec
    from .reporting import report
    from .resources import Resources
    from .run import Run
    from .runner import Runner
    from .states import RunStatus


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'nbrunner' has no attribute {name!r}")
    module = import_module(f".{_HOMES.get(name, 'errors')}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
