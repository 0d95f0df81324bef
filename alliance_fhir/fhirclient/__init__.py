"""The transport: everything that talks HTTP to a FHIR server (settings, auth, client, retries, Bulk Data).

The only part of the package that imports httpx, httpcore and tenacity, and the one that signs
SMART Backend Services assertions. The jobs above it (``server/``) hold a :class:`FhirClient`
per server and never see a connection; a second server is a second client.
"""
