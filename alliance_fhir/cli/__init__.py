"""The ``alliance-fhir`` command line."""

from .main import app

__all__ = ["app"]
