"""Benchmarks for batch-classify; `python -m benchmarks.compare --help` is the entry point."""
