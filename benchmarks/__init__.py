"""Benchmark orchestration: `python -m benchmarks.run_all` (what `make bench` runs)."""
