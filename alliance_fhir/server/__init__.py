"""Everything that talks to a FHIR server or keeps state: config, auth, client, sync."""
