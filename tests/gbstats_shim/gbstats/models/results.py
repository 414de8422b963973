"""gbstats' result containers (plain dataclasses, so the test files can ``asdict`` them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Uplift:
    dist: str
    mean: float
    stddev: float


@dataclass
class FrequentistTestResult:
    expected: float
    ci: tuple
    uplift: Uplift
    errorMessage: str | None
    pValue: float | None = None
    pValueErrorMessage: str | None = None


@dataclass
class BayesianTestResult:
    expected: float
    ci: tuple
    uplift: Uplift
    errorMessage: str | None
    chanceToWin: float
    risk: list
    riskType: str
