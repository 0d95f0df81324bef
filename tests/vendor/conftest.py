"""``vendor_server``: start a vendor-shaped proxy in front of the suite's HAPI (tests/conftest.py ``fhir_server``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from .server import VendorServer, run_vendor_server

VendorServerFactory = Callable[[str], VendorServer]


@pytest.fixture
def vendor_server(fhir_server: str) -> Iterator[VendorServerFactory]:
    """``vendor_server("epic")`` starts the Epic-shaped proxy on a free loopback port and returns it
    (``.url`` is its FHIR base); every proxy a test started stops when the test ends.

    HAPI behind it is the suite's (``ALLIANCE_FHIR_TEST_SERVER`` or the local harness)."""
    with ExitStack() as stack:

        def start(profile: str) -> VendorServer:
            return stack.enter_context(run_vendor_server(profile, fhir_server))

        yield start
