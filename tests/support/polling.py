"""Waiting for something a background thread does, bounded: the one poll the service tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["wait_for"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``check()``'s first truthy value; the test fails naming ``what`` once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value
