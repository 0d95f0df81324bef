"""Benchmark scripts (not tests): they print figures and ratios and write a JSON result file.

Run them from the repository root as modules, e.g. ``python -m benchmarks.bench_scoring``
(``make bench``). ``_report`` holds what every script shares: machine facts, timing, the
table and the JSON writer. See ``docs/benchmarks.md``.
"""
