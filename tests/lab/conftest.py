"""The lab is built once per test session (≈ 10 s) and torn down at the end, also on failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mail_lab import MailLab

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Iterator[MailLab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces); run `make test` as root")
    missing = [t for t in ("postfix", "dovecot", "knotd", "nft", "nsenter") if not shutil.which(t)]
    if missing:
        pytest.fail(f"lab tools missing: {missing}; `make test` installs them")
    workdir = Path(tempfile.mkdtemp(prefix="mail-appliance-lab."))
    m = MailLab(workdir, REPO)
    try:
        m.up()
        yield m
    finally:
        m.down()
        if os.environ.get("LAB_KEEP_LOGS"):
            print(f"lab logs kept in {workdir}/logs")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
