"""Alliance signals: trajectories from score Observations, the rules, DetectedIssues, reports.

Internal modules; the public names are re-exported by :mod:`alliance_fhir`. Only :mod:`.report_images`
(PNG, SVG and PDF reports) needs matplotlib, an optional extra; the HTML report draws its own charts.
"""

MISSING_MATPLOTLIB = "reports need matplotlib, an optional extra: pip install 'alliance-fhir[report]'"
