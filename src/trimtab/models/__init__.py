"""Predictive models and micro-segments, learned from the logs and served live.

Training (``trimtab train``, ``trimtab segments fit``) needs the ``models`` extra
(scikit-learn, LightGBM, PyTorch CPU); serving needs numpy only. See ``docs/models.md``.

- :mod:`trimtab.models.spec` — the ``models:`` and ``segments:`` config sections;
- :mod:`trimtab.models.columns` — how feature columns read attributes;
- :mod:`trimtab.models.dataset` — point-in-time training rows from the logs;
- :mod:`trimtab.models.train` — fitting, holdout metrics next to the baseline, registering;
- :mod:`trimtab.models.trees`, :mod:`~trimtab.models.mlp`, :mod:`~trimtab.models.linear` —
  the compiled forms served live;
- :mod:`trimtab.models.segments` — clustering, stable ids, the live assignment;
- :mod:`trimtab.models.registry` — versions, stages, rollback;
- :mod:`trimtab.models.live` — scores and segments as attributes, on every feature update.
"""
