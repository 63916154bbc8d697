"""``python -m batchdiff.fuzz``: see ``batchdiff.fuzz.cli``."""
import sys

from .cli import main

sys.exit(main())
