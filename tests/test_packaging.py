"""What the built package carries besides code."""

from __future__ import annotations

import re

from tests.helpers import REPO


def test_package_is_marked_typed():
    """PEP 561: type checkers read rtsal's annotations only if ``rtsal/py.typed`` is shipped."""
    assert (REPO / "rtsal" / "py.typed").is_file()
    pyproject = (REPO / "pyproject.toml").read_text()
    package_data = re.search(
        r"^\[tool\.setuptools\.package-data\]\n(.*?)^\[", pyproject, re.M | re.S
    )
    assert package_data and re.search(r'^rtsal = \[.*"py\.typed"', package_data[1], re.M)
