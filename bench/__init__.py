"""Benchmarks: the live fan-out load generator (`bench.fanout`) and its publisher."""
