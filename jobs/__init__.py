"""The scheduler process and its periodic sweeps."""
