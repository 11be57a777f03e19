"""The numerical environment recorded beside the coded bits, and the refusal of a different one."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from lmgc.environment import check_environment, context_environment
from lmgc.errors import EnvironmentMismatchError


def test_the_context_prior_records_the_installed_constriction():
    assert context_environment() == {"constriction": version("constriction")}


def test_a_different_environment_is_refused_with_what_differs():
    recorded = {"torch": "2.13.0", "numpy": "2.4.6"}
    with pytest.raises(EnvironmentMismatchError, match=r"\(torch: encoded with 2.13.0, here 2.0.0\); use the same versions"):
        check_environment(recorded, {"torch": "2.0.0", "numpy": "2.4.6"}, allow_mismatch=False)
    check_environment(recorded, {"torch": "2.0.0", "numpy": "2.4.6"}, allow_mismatch=True)
    check_environment(recorded, dict(recorded), allow_mismatch=False)


def test_unknown_recorded_versions_are_not_compared():
    """Version-1 writers recorded constriction as "unknown" (the module has no __version__)."""
    check_environment({"constriction": "unknown"}, context_environment(), allow_mismatch=False)
