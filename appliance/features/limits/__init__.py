"""The outbound limits: the policy service (policyd.py) that stops a user who sends too much,
and runs the submission checks other features name (core.policy)."""
