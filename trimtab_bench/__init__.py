"""Benchmarks behind `trimtab bench`: figures with medians, next to the comparison each asks for."""
