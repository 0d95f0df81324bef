"""Test and benchmark support that is not a test: loopback proxies, shared by tests/ and benchmarks/."""
