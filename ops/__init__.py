"""Operator tooling that is not part of the served application: benchmarks and the like."""
