"""Shared plumbing: checkpoints, run outputs, distributed helpers."""
