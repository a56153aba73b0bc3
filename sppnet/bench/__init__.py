"""Speed measurements that compare against a reference in the same run (never asserted in tests)."""

from .ops import run_ops_benchmark

__all__ = ["run_ops_benchmark"]
