"""The installed package version, looked up once (``alliance_fhir.__version__``, the Device of
our signals, the FHIR package version). A source tree without an install says ``0.0.0+unknown``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["installed_version"]


def installed_version() -> str:
    """The version of the installed ``alliance-fhir`` distribution."""
    try:
        return version("alliance-fhir")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+unknown"
