"""Demo modules bundled with nbrunner, so a new home has something to run."""

from __future__ import annotations

import contextlib
import os
import shutil
from importlib import resources
from pathlib import Path

FILES = ("explore.ipynb", "modules.toml")  # the notebook first: the modules file names it


def seed(home: Path) -> None:
    """Copy the demo notebook and modules file into a new home, ready to edit."""
    for name in FILES:
        with resources.as_file(resources.files(__name__) / name) as source:
            shutil.copyfile(source, home / name)
        with contextlib.suppress(OSError):
            os.chmod(home / name, 0o600)  # module env may hold tokens
