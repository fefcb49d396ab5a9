"""The spawned recorder's entry point (Windows, and tests elsewhere):
`python -m nbrunner.recording`, its RecorderSpec as JSON on stdin.

It sits above both nbrunner.holding and nbrunner.service, so the holder reaches the
service through the link made here and never imports it.
"""

from __future__ import annotations

import json
import sys

from . import contact
from .holding import record
from .recorder import RecorderSpec, ServiceLink


def main() -> int:
    spec = RecorderSpec.from_json(json.load(sys.stdin))
    return record(spec, ServiceLink(contact.wake, contact.notify))


if __name__ == "__main__":
    sys.exit(main())
