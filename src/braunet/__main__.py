"""``python -m braunet`` runs the command line."""

import sys

from braunet.cli import main

sys.exit(main())
