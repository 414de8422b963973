"""A thin stand-in for GrowthBook's ``gbstats`` package, backed by trimtab.

It exists only so GrowthBook's own unittest files (vendored in ``tests/data/gbstats/``) can
run unchanged as data against :mod:`trimtab.experiments.stats`. Every class here converts its
arguments to trimtab types, calls trimtab, and converts the answer back; no statistics live
here.
"""
