"""``python -m jsqa.cli`` (what ``torchrun -m jsqa.cli`` runs)."""

import sys

from jsqa.cli.app import main

sys.exit(main())
