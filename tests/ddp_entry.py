"""`torchrun ... tests/ddp_entry.py train ...`: the `ssat` command with the test-only tiny model registered."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tiny_model  # noqa: E402,F401

from ssat.cli import main  # noqa: E402

sys.exit(main())
