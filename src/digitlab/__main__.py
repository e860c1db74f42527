"""`python -m digitlab` (and `torchrun -m digitlab`) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
