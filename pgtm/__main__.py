"""``python -m pgtm ...`` runs the ``pgtm`` command line (as ``torchrun -m pgtm`` will)."""

import sys

from pgtm.cli import main

sys.exit(main())
