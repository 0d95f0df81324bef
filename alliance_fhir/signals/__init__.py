"""Alliance signals: trajectories from score Observations, the rules, DetectedIssues, reports."""
