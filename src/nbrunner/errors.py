"""Errors nbrunner raises, as one tree so callers can catch as broadly as they need.

    NbrunnerError                  every error of ours
    ├── BadInput                   the caller asked for something invalid (CLI exit status 2)
    │   ├── UnknownModule          no module of that name is registered
    │   ├── InvalidParameter       unknown parameter, wrong type, out of range
    │   ├── ModulesFileError       modules.toml cannot be read or is malformed
    │   ├── UnknownRun             no run with that id in this home
    │   ├── InvalidConfig          unknown config key or a bad value for it
    │   ├── InvalidTransition      the run's state does not allow the operation
    │   ├── ResourceRequestError   a run asks for more than this machine could ever give
    │   └── InvalidHome            the home is not a directory nbrunner can use
    └── OperationFailed            a valid request that could not be carried out (exit status 1)
        ├── BackendUnavailable     an optional backend is missing or cannot be reached
        ├── StoreUnavailable       the store stayed locked past its patience, or a write failed
        └── CorruptStore           the store file cannot be read as a database

Messages name the input, the value and what would be right, because they are shown as
one line to someone who has to fix their call.
"""

from __future__ import annotations


class NbrunnerError(Exception):
    """Base class of every nbrunner error."""


class BadInput(NbrunnerError, ValueError):
    """The request itself is invalid; nothing was changed."""


class UnknownModule(BadInput, KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        choices = ", ".join(sorted(known)) or "none are registered"
        super().__init__(f"unknown module {name!r}; known modules: {choices}")
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class InvalidParameter(BadInput):
    pass


class ModulesFileError(BadInput):
    pass


class UnknownRun(BadInput, KeyError):
    def __init__(self, run_id: object) -> None:
        super().__init__(f"unknown run id {run_id!r}; `nbrunner history` lists the runs")
        self.run_id = run_id

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidConfig(BadInput):
    pass


class InvalidTransition(BadInput):
    pass


class ResourceRequestError(BadInput):
    pass


class InvalidHome(BadInput):
    pass


class OperationFailed(NbrunnerError, RuntimeError):
    """A valid request that could not be carried out."""


class BackendUnavailable(OperationFailed):
    pass


class StoreUnavailable(OperationFailed):
    pass


class CorruptStore(OperationFailed):
    def __init__(self, path: object, detail: object) -> None:
        super().__init__(
            f"the store {path} cannot be read ({detail}); move it aside "
            f"(mv {path} {path}.broken) and nbrunner starts again with an empty history"
        )
        self.path = path
