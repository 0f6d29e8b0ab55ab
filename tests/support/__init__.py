"""Helpers only the tests use, built on the production code (the benchmarks share bench.workload)."""
