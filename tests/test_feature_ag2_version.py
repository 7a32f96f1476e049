"""The feature refuses a missing or untested AG2 at import, naming both extras (#10 part b)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from persistency import _ag2
from persistency.errors import AG2VersionError, PersistencyError

EXTRAS = ("ag2-persistency[ag2]", "ag2-persistency[autogen]")


@pytest.mark.parametrize("version", ["1.2.1", "0.9.3", "0.15.0", ""])
def test_an_untested_ag2_version_is_refused(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    import autogen

    monkeypatch.setattr(autogen, "__version__", version)
    with pytest.raises(AG2VersionError) as err:
        _ag2.require_ag2()
    assert all(extra in str(err.value) for extra in EXTRAS)
    assert isinstance(err.value, PersistencyError) and isinstance(err.value, ImportError)


@pytest.mark.parametrize("version", ["0.10.0", "0.12.1", "0.14.1"])
def test_the_tested_range_is_accepted(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    import autogen

    monkeypatch.setattr(autogen, "__version__", version)
    assert _ag2.require_ag2() == version


def test_importing_the_feature_without_autogen_names_the_extras() -> None:
    code = (
        "import sys; sys.modules['autogen'] = None\n"
        "try:\n    import persistency.feature\nexcept ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("AG2VersionError") and all(extra in out for extra in EXTRAS)
