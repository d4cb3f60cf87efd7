"""The package that `pip install .` builds is the package the tests run.

The wheel is built from a copy of the tree (so no build/ or egg-info lands in the checkout, where
the image build writes too) and installed into a fresh venv made from Debian's Python with its
system site-packages: on the box the agent's libraries are Debian's python3-* packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"

HASH = ("$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaN"
        "GStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.")
SETTINGS = f"""\
domain = "example.org"

[[users]]
address = "alice@example.org"
password_hash = "{HASH}"
"""


def repository_files() -> set[str]:
    tree = REPO / "appliance"
    return {str(p.relative_to(REPO)) for p in tree.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(REPO / "appliance", src / "appliance",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=120)
    (whl,) = out.glob("mail_appliance-*.whl")
    return whl


def test_wheel_holds_every_module_and_template(wheel: Path) -> None:
    inside = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(repository_files() - inside)
    assert not missing, f"not in the wheel: {missing}"


def test_installed_agent_runs_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip inside (ensurepip is most of a venv's creation time): the test's pip installs into it.
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
                    "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=120)
    settings = tmp_path / "settings.toml"
    settings.write_text(SETTINGS)
    # Run outside the checkout, so nothing can be imported from the source tree by accident.
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 60}
    where = subprocess.run([str(venv / "bin/python"), "-c", "import appliance; print(appliance.__file__)"],
                           **run)  # type: ignore[call-overload]
    assert where.stdout.startswith(str(venv)), where
    helped = subprocess.run([str(venv / "bin/appliance"), "--help"], **run)  # type: ignore[call-overload]
    assert helped.returncode == 0, helped.stderr
    assert "check" in helped.stdout
    checked = subprocess.run([str(venv / "bin/appliance"), "check", str(settings)],
                             **run)  # type: ignore[call-overload]
    assert checked.returncode == 0, checked.stdout + checked.stderr
    bad = settings.with_name("bad.toml")
    bad.write_text(SETTINGS.replace('domain = "example.org"', 'domain = "not a domain"'))
    refused = subprocess.run([str(venv / "bin/appliance"), "check", str(bad)],
                             **run)  # type: ignore[call-overload]
    assert refused.returncode != 0 and "domain" in refused.stdout + refused.stderr
