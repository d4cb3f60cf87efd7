"""The one privileged path: every file the agent writes and every command it runs goes through
here, so a reader can audit in three short modules everything the agent can do to the machine.
Nothing else in the package opens a file for writing or starts a process (`make lint` checks).

exec.py    commands and processes (run, daemons, signals, privileges)
rootfs.py  files under a root (read, atomic write, remove, the lock)
"""

from appliance.core.exec import (
    DEFAULT_TIMEOUT,
    BytesResult,
    CommandError,
    Result,
    daemonize,
    drop_privileges,
    listening_tcp_ports,
    pid_alive,
    process_start_time,
    run,
    run_bytes,
    run_daemon,
    run_lines,
    signal_pid,
    sigterm_as_exception,
    start_coprocess,
    stop_coprocess,
    stop_pid,
)
from appliance.core.rootfs import (
    LOCK_ENV,
    SETTLED_AGE,
    FileState,
    Root,
    chown_path,
    ensure_file,
    ensure_secret,
    remove_path,
    remove_tree,
    rewrite_in_place,
    stage_copy_tree,
    write_boot_note,
    write_private,
    write_user_file,
)

__all__ = [
    "DEFAULT_TIMEOUT", "BytesResult", "CommandError", "Result", "daemonize", "drop_privileges",
    "listening_tcp_ports", "pid_alive", "process_start_time", "run", "run_bytes", "run_lines", "run_daemon",
    "sigterm_as_exception", "signal_pid", "start_coprocess", "stop_coprocess", "stop_pid",
    "LOCK_ENV", "SETTLED_AGE", "FileState", "Root", "chown_path", "ensure_file", "ensure_secret",
    "remove_path", "remove_tree", "rewrite_in_place", "stage_copy_tree", "write_boot_note",
    "write_private", "write_user_file",
]
