"""Benchmarks that print JSON figures, with their peers measured in the same run."""
