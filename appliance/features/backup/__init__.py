"""Backups with restic: encrypted, deduplicated snapshots of the settings, the mail, the queue
and the agent's state, to a target the user owns (a USB disk, their VPS over SFTP, a bucket)."""
