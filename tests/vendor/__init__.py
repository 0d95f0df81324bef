"""Vendor-shaped test servers: a proxy per EHR vendor in front of the real HAPI (see docs/your-ehr.md)."""
