"""`python -m digitlab` (and `torchrun -m digitlab`) runs the CLI."""

import sys

from .cli import main

if __name__ == "__main__":  # not on import (pkgutil.walk_packages, documentation tools)
    sys.exit(main())
