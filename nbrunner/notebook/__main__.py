"""`python -m nbrunner.notebook`: the executor a notebook run's child is."""

import sys

from .executor import main

sys.exit(main())
