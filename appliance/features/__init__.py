"""One folder per capability of the box; appliance.registry lists them in order. A feature
imports the core and its own modules; the package files stay empty so that a feature's daemon
loads nothing else."""
