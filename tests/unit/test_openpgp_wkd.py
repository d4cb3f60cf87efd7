"""WKD file tree: the hash checked against GnuPG's own gpg-wks-client."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from appliance.features.openpgp import wkd

WKS = shutil.which("gpg-wks-client") or "/usr/lib/gnupg/gpg-wks-client"


@pytest.mark.parametrize("address", ["alice@example.org", "Joe.Doe@example.org", "x+y@example.org"])
def test_hash_matches_gnupg(address: str) -> None:
    if not shutil.which(WKS):
        pytest.skip("gpg-wks-client not installed (Debian package gpg-wks-client)")
    out = subprocess.run([WKS, "--print-wkd-hash", address], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    assert wkd.wkd_hash(address) == out


def test_tree_has_both_layouts_and_policies() -> None:
    files = wkd.tree("example.org", {"alice@example.org": b"KEY", "eve@other.org": b"X"})
    h = wkd.wkd_hash("alice@example.org")
    assert files == {
        "openpgpkey/example.org/policy": b"", "openpgpkey/policy": b"",
        f"openpgpkey/example.org/hu/{h}": b"KEY", f"openpgpkey/hu/{h}": b"KEY",
    }
