"""`trimtab bench bandits`: trimtab's policies replayed on real logs, next to VW and MABWiser.

Data: the Open Bandit Dataset sample (ZOZOTOWN, 80 items, 3 positions), ``random`` logs, whose
logging policy is uniform with known propensities (1/80). Each policy runs through the log in
time order, learning from every logged impression, and is valued by progressive IPS (see
:mod:`trimtab.bandits.replay`): ``V̂ = (1/n) Σ π_t(a_t|x_t) r_t / p_t`` with a normal 95%
interval. Vowpal Wabbit (``--cb_explore_adf``, its pmf gives ``π_t``) and MABWiser (its
deterministic LinUCB choice, or one Thompson draw, gives ``π_t`` as an indicator) run on the
same rows in the same process. The logged random and production Bernoulli-TS (``bts``) CTRs
are shown as on-policy means of their own logs.

Context ``x``: ``[1, one-hot(user_feature_0..3), one-hot(position)]`` (28 values). trimtab's
"shared" variants use one model over ``[x, one-hot(item)]``. Configurations are fixed in
advance (not tuned on these results): the Thompson scale 0.06 is the Bernoulli noise s.d. at
a 0.4% click rate; LinUCB's α values bracket the reward scale. Clicks are rare (~0.4%), so
intervals are wide: read them, not only the point estimates.

Latency is the median wall time of one ``choose`` (VW: ``predict`` incl. parsing its text
example; MABWiser: ``predict``) and one ``update`` (``learn`` / ``partial_fit``), measured
on the OBD rows and on a synthetic 20-feature, 80-arm shape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trimtab.bandits import ope
from trimtab.bandits.logged import ObdLog, load_obd, one_hot_contexts
from trimtab.bandits.policies import EpsilonGreedy, LinearThompson, LinUCB, LogisticThompson
from trimtab.bandits.replay import replay


@dataclass(frozen=True)
class BanditRow:
    """One line of the comparison. CTRs are fractions; latencies are medians in µs."""

    policy: str
    library: str
    estimator: str
    ctr: float
    lower: float
    upper: float
    n: int
    choose_us: float | None = None
    update_us: float | None = None
    synthetic_choose_us: float | None = None
    synthetic_update_us: float | None = None


def _median_us(samples_ns: np.ndarray | list[int]) -> float:
    return float(np.median(np.asarray(samples_ns))) / 1000.0


def default_data_dir() -> Path:
    """``$TRIMTAB_OBD``, else the sample vendored in the source checkout (``tests/data/obd``)."""
    if "TRIMTAB_OBD" in os.environ:
        return Path(os.environ["TRIMTAB_OBD"])
    checkout = Path(__file__).resolve().parents[1] / "tests" / "data" / "obd"
    return checkout if checkout.is_dir() else Path.cwd() / "tests" / "data" / "obd"


def trimtab_policies(
    n_arms: int, dim: int, seed: int, shared: bool = True
) -> dict[str, Callable[[], Any]]:
    """The fixed trimtab configurations compared (factories, so each run starts fresh)."""
    items = np.eye(n_arms)
    out: dict[str, Callable[[], Any]] = {
        "EpsilonGreedy(ε=0.05)": lambda: EpsilonGreedy(n_arms, dim, epsilon=0.05, seed=seed),
        "LinUCB(α=0.01)": lambda: LinUCB(n_arms, dim, alpha=0.01, seed=seed),
        "LinUCB(α=0.1)": lambda: LinUCB(n_arms, dim, alpha=0.1, seed=seed),
        "LinearThompson(v=0.06)": lambda: LinearThompson(n_arms, dim, scale=0.06, seed=seed),
        "LogisticThompson": lambda: LogisticThompson(n_arms, dim, seed=seed),
    }
    if shared:
        out |= {
            "LinUCB shared(α=0.01)": lambda: LinUCB(
                n_arms, dim, alpha=0.01, arm_features=items, seed=seed
            ),
            "LinearThompson shared(v=0.06)": lambda: LinearThompson(
                n_arms, dim, scale=0.06, arm_features=items, seed=seed
            ),
        }
    return out


VW_CONFIGS = (
    "--cb_explore_adf --epsilon 0.05 -q ua",
    "--cb_explore_adf --softmax --lambda 10 -q ua",
    "--cb_explore_adf --bag 5 -q ua",
    "--cb_explore_adf --cover 4 -q ua",
)


def _synthetic(n: int, dim: int, n_arms: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(n, dim))
    contexts[:, 0] = 1.0
    return contexts, (rng.random(n) < 0.05).astype(float)


def _time_policy(policy: Any, contexts: np.ndarray, rewards: np.ndarray) -> tuple[float, float]:
    clock = time.perf_counter_ns
    choose_ns, update_ns = [], []
    for x, r in zip(contexts, rewards, strict=True):
        start = clock()
        arm, p = policy.choose(x)
        mid = clock()
        policy.update(x, arm, float(r), p)
        choose_ns.append(mid - start)
        update_ns.append(clock() - mid)
    return _median_us(choose_ns), _median_us(update_ns)


# -- Vowpal Wabbit -------------------------------------------------------------------------------
def _vw_lines(shared: str, n_arms: int) -> list[str]:
    return [shared] + [f"|a item={i}" for i in range(n_arms)]


def _vw_shared(features: np.ndarray | list[str], position: int) -> str:
    user = " ".join(f"f{j}={v}" for j, v in enumerate(features))
    return f"shared |u {user} pos={position}"


def run_vw(
    args: str,
    shared_lines: list[str],
    actions: np.ndarray,
    rewards: np.ndarray,
    p: np.ndarray,
    n_arms: int,
    seed: int,
) -> tuple[np.ndarray, list[int], list[int]]:
    """π_t(a_t) from VW's pmf, learning each logged (action, cost = −click, probability)."""
    from vowpalwabbit import Workspace

    vw = Workspace(f"{args} --quiet --random_seed {seed}")
    target = np.empty(len(actions))
    predict_ns, learn_ns = [], []
    clock = time.perf_counter_ns
    try:
        for t, shared in enumerate(shared_lines):
            lines = _vw_lines(shared, n_arms)
            start = clock()
            pmf = vw.predict(lines)
            predict_ns.append(clock() - start)
            target[t] = pmf[actions[t]]
            a = int(actions[t])
            lines[a + 1] = f"0:{-rewards[t]}:{p[t]} {lines[a + 1]}"
            start = clock()
            vw.learn(lines)
            learn_ns.append(clock() - start)
    finally:
        vw.finish()
    return target, predict_ns, learn_ns


# -- MABWiser ------------------------------------------------------------------------------------
def run_mabwiser(
    kind: str,
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    n_arms: int,
    seed: int,
) -> tuple[np.ndarray, list[int], list[int]]:
    """π_t(a_t) as the indicator of MABWiser's choice (unbiased, higher variance)."""
    from mabwiser.mab import MAB, LearningPolicy

    policy = (
        LearningPolicy.LinUCB(alpha=0.1) if kind == "LinUCB" else LearningPolicy.ThompsonSampling()
    )
    mab = MAB(arms=list(range(n_arms)), learning_policy=policy, seed=seed)
    contextual = kind == "LinUCB"
    target = np.empty(len(actions))
    target[0] = 1.0 / n_arms  # nothing learned yet: uniform
    first = ([int(actions[0])], [float(rewards[0])])
    mab.fit(*first, contexts[:1]) if contextual else mab.fit(*first)
    predict_ns, learn_ns = [], []
    clock = time.perf_counter_ns
    for t in range(1, len(actions)):
        x = contexts[t : t + 1]
        start = clock()
        chosen = mab.predict(x) if contextual else mab.predict()
        predict_ns.append(clock() - start)
        target[t] = float(int(chosen) == int(actions[t]))
        decision = ([int(actions[t])], [float(rewards[t])])
        start = clock()
        mab.partial_fit(*decision, x) if contextual else mab.partial_fit(*decision)
        learn_ns.append(clock() - start)
    return target, predict_ns, learn_ns


# -- the benchmark -------------------------------------------------------------------------------
def _on_policy_row(name: str, log: ObdLog) -> BanditRow:
    estimate = ope.ips(log.click, log.propensity, log.propensity)  # weights 1: the plain mean
    return BanditRow(
        name, "logged", "on-policy mean", estimate.value, estimate.lower, estimate.upper, estimate.n
    )


def _ips_row(
    name: str,
    library: str,
    estimator: str,
    log: ObdLog,
    target: np.ndarray,
    choose_ns: Any,
    update_ns: Any,
    synthetic: tuple[float, float] | None,
) -> BanditRow:
    estimate = ope.ips(log.click, log.propensity, target)
    return BanditRow(
        name,
        library,
        estimator,
        estimate.value,
        estimate.lower,
        estimate.upper,
        estimate.n,
        _median_us(choose_ns),
        _median_us(update_ns),
        synthetic[0] if synthetic else None,
        synthetic[1] if synthetic else None,
    )


def run(
    data_dir: Path | str | None = None,
    campaign: str = "all",
    *,
    peers: bool = True,
    seed: int = 0,
    limit: int | None = None,
    synthetic_rounds: int = 2000,
    render: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Replay every policy on the OBD ``random`` logs of ``campaign``; return rows as dicts.

    ``limit`` caps the number of logged rows (default: all); ``peers=False`` skips VW and
    MABWiser. With ``render`` a Rich table is printed.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    log = load_obd(root, "random", campaign)
    bts = load_obd(root, "bts", campaign)
    if limit is not None:
        log = _head(log, limit)
    note = progress or (lambda _msg: None)
    contexts = one_hot_contexts(log)
    n_arms, dim = log.n_items, contexts.shape[1]
    syn_x, syn_r = _synthetic(synthetic_rounds, 20, 80, seed)
    rows = [
        _on_policy_row("random (logged)", log),
        _on_policy_row("Bernoulli TS (logged, bts)", bts),
    ]

    for name, factory in trimtab_policies(n_arms, dim, seed).items():
        note(f"trimtab {name}")
        result = replay(factory(), contexts, log.item, log.click, log.propensity)
        synthetic_factory = trimtab_policies(80, 20, seed, shared=False).get(name)
        synthetic = _time_policy(synthetic_factory(), syn_x, syn_r) if synthetic_factory else None
        rows.append(
            _ips_row(
                name,
                "trimtab",
                "IPS (progressive)",
                log,
                result.target_probability,
                result.choose_ns,
                result.update_ns,
                synthetic,
            )
        )

    if peers:
        shared_lines = [
            _vw_shared(f, int(pos)) for f, pos in zip(log.user_features, log.position, strict=True)
        ]
        syn_lines = [
            "shared |u " + " ".join(f"x{j}:{v:.4f}" for j, v in enumerate(x)) for x in syn_x
        ]
        syn_actions = np.random.default_rng(seed).integers(0, 80, synthetic_rounds)
        syn_p = np.full(synthetic_rounds, 1.0 / 80)
        for args in VW_CONFIGS:
            note(f"vowpalwabbit {args}")
            target, p_ns, l_ns = run_vw(
                args, shared_lines, log.item, log.click, log.propensity, n_arms, seed
            )
            _, sp, sl = run_vw(args, syn_lines, syn_actions, syn_r, syn_p, 80, seed)
            label = args.replace("--cb_explore_adf ", "").replace(" -q ua", "")
            rows.append(
                _ips_row(
                    f"VW {label}",
                    "vowpalwabbit",
                    "IPS (progressive)",
                    log,
                    target,
                    p_ns,
                    l_ns,
                    (_median_us(sp), _median_us(sl)),
                )
            )
        for kind in ("LinUCB", "ThompsonSampling"):
            note(f"mabwiser {kind}")
            target, p_ns, l_ns = run_mabwiser(kind, contexts, log.item, log.click, n_arms, seed)
            _, sp, sl = run_mabwiser(kind, syn_x, syn_actions, syn_r, 80, seed)
            label = "LinUCB(α=0.1)" if kind == "LinUCB" else "ThompsonSampling (no context)"
            rows.append(
                _ips_row(
                    f"MABWiser {label}",
                    "mabwiser",
                    "IPS (replay, indicator)",
                    log,
                    target,
                    p_ns,
                    l_ns,
                    (_median_us(sp), _median_us(sl)),
                )
            )

    out = [asdict(row) for row in rows]
    if render:
        render_table(out, title=f"Open Bandit Dataset sample, random logs, campaign {campaign!r}")
    return out


def _head(log: ObdLog, n: int) -> ObdLog:
    return ObdLog(
        log.item[:n],
        log.position[:n],
        log.click[:n],
        log.propensity[:n],
        log.user_features[:n],
        log.affinity[:n],
        log.n_items,
    )


def render_table(rows: list[dict[str, Any]], title: str = "") -> None:
    """Print the rows as a Rich table, CTR in percent with its 95% interval."""
    from rich.console import Console
    from rich.table import Table

    def us(value: float | None) -> str:
        return "" if value is None else f"{value:.0f}"

    table = Table(title=title)
    for column in (
        "policy",
        "library",
        "estimator",
        "CTR %",
        "95% CI %",
        "choose µs",
        "update µs",
        "20×80 choose µs",
        "20×80 update µs",
    ):
        table.add_column(
            column, justify="left" if column in ("policy", "library", "estimator") else "right"
        )
    for row in rows:
        table.add_row(
            row["policy"],
            row["library"],
            row["estimator"],
            f"{100 * row['ctr']:.3f}",
            f"[{100 * row['lower']:.3f}, {100 * row['upper']:.3f}]",
            us(row["choose_us"]),
            us(row["update_us"]),
            us(row["synthetic_choose_us"]),
            us(row["synthetic_update_us"]),
        )
    console = Console()
    Console(width=max(console.width, 150)).print(table)
