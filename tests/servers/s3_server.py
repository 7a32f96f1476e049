"""Placeholder until the S3 provider lands: defines s3_url."""

from __future__ import annotations

import pytest


@pytest.fixture
def s3_url() -> str:
    pytest.skip("S3 provider not implemented yet")
