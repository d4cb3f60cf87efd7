"""What every feature uses and nothing that knows a feature: settings primitives, facts, the
plan, apply, services, the pipeline and its lock, the one privileged path (system.py)."""
