"""``python -m metadip`` = the ``metadip`` command."""

import sys

from metadip.cli import main

sys.exit(main())
