"""``python -m pgtm.cli ...`` is ``pgtm ...``."""

import sys

from pgtm.cli import main

sys.exit(main())
