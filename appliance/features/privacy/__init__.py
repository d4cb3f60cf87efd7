"""Privacy: the typo guard (held mail, release by reply) and log retention."""
