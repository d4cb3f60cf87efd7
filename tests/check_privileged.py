"""Lint: the unsafe primitives live only in appliance/core/exec.py and rootfs.py (certbot bans
bare `os` calls the same way). Fails on subprocess, os.system/exec*/chmod/chown/unlink/replace,
shell=True, and open(..., "w"/"a"/"x") anywhere else in the agent."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# The one privileged path: appliance/core/exec.py and rootfs.py (system.py names both).
ALLOWED = {("core", "exec.py"), ("core", "rootfs.py")}
BANNED_MODULES = {"subprocess", "shutil"}
BANNED_OS = {"system", "popen", "chmod", "chown", "unlink", "remove", "replace", "rename",
             "rmdir", "makedirs", "mkdir", "execv", "execvp", "spawnv", "kill"}


def problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"{where}: imports {n}" for n in names if n.split(".")[0] in BANNED_MODULES]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in BANNED_OS:
                out.append(f"{where}: os.{node.attr}")
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "shell":
                    out.append(f"{where}: shell=")
            f = node.func
            is_open = isinstance(f, ast.Name) and f.id == "open"
            is_write = isinstance(f, ast.Attribute) and f.attr in ("write_text", "write_bytes", "open")
            if is_open or is_write:
                mode = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                if is_write and f.attr != "open":  # type: ignore[union-attr]
                    out.append(f"{where}: {f.attr}()")  # type: ignore[union-attr]
                elif isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+"):
                    out.append(f"{where}: open(..., {mode.value!r})")
    return out


def main(root: str) -> int:
    found = [p for f in sorted(Path(root).rglob("*.py"))
             if (f.parent.name, f.name) not in ALLOWED for p in problems(f)]
    for p in found:
        print(f"privileged primitive outside appliance/core/exec.py and rootfs.py: {p}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "appliance"))
