"""Experiments: assignment, exposures and the statistics engine (``.stats``)."""
