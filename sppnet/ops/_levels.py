"""Pyramid levels: the bins of a level, the pooled length, and which finer level a coarse one is
derived from. Shared by whole-map pooling (:mod:`.pyramid`) and window pooling (:mod:`.windows`
and its backends), so neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._checks import check_levels

__all__ = ["bin_edges", "spp_output_dim", "derivation_plan"]


def bin_edges(length: int, n: int) -> list[tuple[int, int]]:
    """The ``n`` bins over ``length`` cells as ``(start, end)`` pairs, end exclusive.

    >>> bin_edges(10, 6)
    [(0, 2), (1, 4), (3, 5), (5, 7), (6, 9), (8, 10)]
    """
    return [((i * length) // n, -((-(i + 1) * length) // n)) for i in range(n)]


def spp_output_dim(channels: int, levels: Sequence[int] = (6, 3, 2, 1)) -> int:
    """Length of the pyramid vector: ``channels * sum(n*n for n in levels)``.

    ZF-5's conv5 (256 channels) with ``{6, 3, 2, 1}`` gives ``256 * 50 = 12800``.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"channels must be a positive int, got channels={channels!r}")
    return channels * sum(n * n for n in check_levels(levels))


def derivation_plan(levels: Sequence[int]) -> list[int]:
    """For each level, the index of a finer level whose ``n`` it divides, or -1 (pool directly).

    With floor/ceil bins, bin ``i`` of ``n`` is exactly the union of bins ``i*k .. i*k+k-1`` of
    ``n*k`` (for any map size), so for max pooling a coarse level is the max over groups of fine
    bins and the map is read once. The source is the coarsest such level (fewest bins to read).
    """
    plan = [-1] * len(levels)
    done: list[int] = []
    for idx in sorted(range(len(levels)), key=lambda i: -levels[i]):
        n = levels[idx]
        # the coarsest finer level that n divides: fewest fine bins to read
        sources = [j for j in done if levels[j] % n == 0 and levels[j] != n]
        if sources:
            plan[idx] = min(sources, key=lambda j: levels[j])
        done.append(idx)
    return plan
