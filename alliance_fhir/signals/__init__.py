"""Alliance signals: trajectories from score Observations, the rules, DetectedIssues, reports.

Internal modules; the public names are re-exported by :mod:`alliance_fhir`. Only :mod:`.report`
needs matplotlib, an optional extra.
"""

MISSING_MATPLOTLIB = "reports need matplotlib, an optional extra: pip install 'alliance-fhir[report]'"
