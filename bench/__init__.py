"""Benchmarks: ``make bench`` (``python -m bench``). They measure; they assert nothing."""
