"""Ahead-of-time compilation for TPU slices on any machine: `agentjax compile` (libtpu + topology descriptions)."""
