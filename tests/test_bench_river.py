"""The River baseline of `trimtab bench core` computes what trimtab computes."""

from __future__ import annotations

from trimtab.config import parse_config
from trimtab.features import FeatureProcessor
from trimtab_bench import river
from trimtab_bench.core import BENCH_FEATURES, synthetic_events


def test_river_baselines_agree_with_trimtab_on_the_bench_declarations():
    config = parse_config(
        {"features": BENCH_FEATURES, "slots": {"s": {"default": "a", "variants": {"a": {}}}}}
    )
    stream = synthetic_events(4_000, users=40)
    processor = FeatureProcessor(config.feature_specs())
    processor.apply(stream)
    assert river.disagreements(stream, processor, users=40) == 0
    # the comparison is not vacuous: both River variants hold values for these users
    agg = river.RiverAgg()
    agg.learn(river.RiverAgg.dicts(stream))
    assert len(agg.depth._groups) > 40 and len(agg.hover_kind._groups) > 40
    assert (
        river.river_rate(stream, 1)[0] > 0
        and river.agg_rate(river.RiverAgg.dicts(stream), 1)[0] > 0
    )
