"""`python -m nbrunner.notebook`: the executor a notebook run's child is."""

import sys

# jsonschema (imported by nbformat) loads rfc3987_syntax where it is installed, which builds
# an IRI grammar as it is imported: ~0.9 s of every notebook run's start-up, for a string
# format no notebook schema uses. The executor does without it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]

from .executor import main  # noqa: E402

sys.exit(main())
