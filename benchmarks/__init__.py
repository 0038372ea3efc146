"""Benchmark scripts of metanlp (speed, memory and accuracy against peers); see README.md."""
