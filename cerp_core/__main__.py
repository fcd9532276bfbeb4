"""``python -m cerp_core``: see :mod:`cerp_core.cli`."""

import sys

from cerp_core.cli import main

sys.exit(main())
