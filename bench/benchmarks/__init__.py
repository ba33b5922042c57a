"""Benchmark scripts (python -m bench.benchmarks.<name>): they print a table and write JSON; nothing imports them."""
