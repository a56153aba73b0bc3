"""``sppnet demo``: SPP-net's headline results in minutes on a CPU, with a report to look at."""

from .run import DemoConfig, plan, run_demo

__all__ = ["DemoConfig", "plan", "run_demo"]
