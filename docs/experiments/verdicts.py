"""The one rule by which every summarizer under docs/experiments/ judges a claim "A is better
than B" from paired differences A − B (one per seed: the same split, the same augmentation
order, the same windows).

- **holds**: every seed has A ahead *and* the two-sided 95% paired t-test rejects "no
  difference": |t| ≥ t(0.975, n − 1) (4.30 for 3 seeds).
- **reversed**: every seed has B ahead and the same two-sided test rejects "no difference".
- **not supported**: anything else with every planned seed in — the signs differ between seeds,
  or they agree but |t| is below the critical value: the spread cannot decide.
- **points A's way / B's way**: one seed only. A single run has no spread, so it never
  "holds" or "fails"; it only points.
- **open**: fewer seeds than planned so far.

Each claim is tested at 95% on its own. A table of m claims therefore carries up to m × 5%
false "holds" or "reversed" by chance when nothing differs; :func:`bonferroni_t` gives the
stricter cut that keeps the whole table at 5% (α = 0.05 / m per claim), and the summaries say
which verdicts survive it.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["ALPHA", "RULE", "bonferroni_note", "bonferroni_t", "critical_t", "paired_t",
           "survives_bonferroni", "verdict"]

ALPHA = 0.05  # two-sided


def _t_ppf(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def critical_t(n: int, alpha: float = ALPHA) -> float:
    """The two-sided critical value of Student's t for ``n`` paired differences (n − 1
    degrees of freedom): 12.71 for 2 seeds, 4.30 for 3, 2.78 for 5."""
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 differences, got n={n}")
    return _t_ppf(1 - alpha / 2, n - 1)


def bonferroni_t(n: int, claims: int, alpha: float = ALPHA) -> float:
    """The critical |t| that keeps ``claims`` tests at ``alpha`` together (Bonferroni):
    each at ``alpha / claims``, two-sided. 12.59 for 3 seeds and 8 claims, 15.44 for 12."""
    if claims < 1:
        raise ValueError(f"claims must be at least 1, got {claims}")
    return critical_t(n, alpha / claims)


def paired_t(diffs: list[float]) -> float | None:
    """mean / (sd / √n); ±inf when every difference is the same non-zero value; ``None`` for
    fewer than 2 differences or all zero."""
    if len(diffs) < 2:
        return None
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    if sd > 0:
        return mean / (sd / math.sqrt(len(diffs)))
    return math.copysign(math.inf, mean) if mean != 0 else None


def verdict(diffs: list[float], seeds: int) -> str:
    """The verdict on "A is better than B" from its paired differences A − B, with ``seeds``
    the number of seeds the study planned."""
    n = len(diffs)
    if n == 1 and seeds == 1:
        d = diffs[0]
        return ("points A's way (one seed)" if d > 0 else
                "points B's way (one seed)" if d < 0 else "no difference (one seed)")
    if n < seeds:
        return f"open: {n} of {seeds} seeds"
    t = paired_t(diffs)
    cut = critical_t(n)
    if t is not None and abs(t) >= cut:
        if all(d > 0 for d in diffs):
            return "**holds**"
        if all(d < 0 for d in diffs):
            return "**reversed**"
    for side, sign in (("A", 1), ("B", -1)):
        if all(sign * d > 0 for d in diffs):
            return f"not supported ({side} ahead on every seed, t within ±{cut:.2f})"
    return "not supported (signs differ between seeds)"


def survives_bonferroni(diffs: list[float], claims: int) -> bool:
    """Whether a "holds" or "reversed" verdict also clears the Bonferroni cut for ``claims``
    tests."""
    t = paired_t(diffs)
    return t is not None and abs(t) >= bonferroni_t(len(diffs), claims)


def bonferroni_note(claims: int, seeds: int, surviving: list[str]) -> str:
    """One sentence for a claims table: how many claims were tested and what Bonferroni
    keeps."""
    cut = bonferroni_t(seeds, claims)
    kept = ("; it keeps: " + "; ".join(surviving)) if surviving else "; it keeps none of them"
    return (f"{claims} claim{'s' if claims != 1 else ''} tested here, each at two-sided 95% (|t| ≥ "
            f"{critical_t(seeds):.2f} for {seeds} seeds), so up to {claims * ALPHA:.1f} "
            f"false verdicts are expected by chance if nothing differed. Holding the whole "
            f"table at 95% (Bonferroni, α = 0.05/{claims}) needs |t| ≥ {cut:.2f}{kept}.")


RULE = ("A claim \"A is better than B\" **holds** when every seed has A ahead and the two-sided "
        "95% paired t-test over the seeds rejects \"no difference\" (|t| ≥ 4.30 for 3 seeds, "
        "t(0.975, n − 1) in general); it is **reversed** when every seed has B ahead under the "
        "same test; otherwise it is **not supported** — the spread cannot decide. One seed "
        "never holds or fails: it *points* one way. Each claim is tested on its own at 95%; "
        "each table says how many claims it tests and which verdicts survive the Bonferroni "
        "cut that holds the whole table at 95% (`docs/experiments/verdicts.py`).")
