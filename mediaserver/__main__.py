"""`python -m mediaserver` is the `mediaserver` command."""

import sys

from mediaserver.cli import main

sys.exit(main())
