"""The fault suite: faults, process death, concurrency, bad input and security scans against the real pipeline,
reported as one table (`python -m reliability.run`, `make reliability`; docs/reliability.md)."""
