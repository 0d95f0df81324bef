"""``python -m alliance_fhir`` runs the CLI."""

from .cli import app

app(prog_name="alliance-fhir")
