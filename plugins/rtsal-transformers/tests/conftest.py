"""rtsal's own test helpers (``tests.helpers``: run_main, run_rtsal, the shared data) are
importable also when pytest runs from this directory."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if (REPO / "tests" / "helpers.py").is_file() and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
