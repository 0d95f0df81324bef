"""Publishable FHIR content: Questionnaires, text packs, definitions and the FHIR package."""
