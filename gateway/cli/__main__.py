"""``python -m gateway.cli`` runs the ``gateway`` command."""

import sys

from . import main

sys.exit(main())
