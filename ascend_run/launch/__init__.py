"""Orchestration over the nodes: preflight, launch, watch, stop."""
