"""`python -m guard.cli`: the same as the `guard` command."""

import sys

from guard.cli import main

sys.exit(main())
