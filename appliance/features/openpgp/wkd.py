"""Web Key Directory (draft-koch-openpgp-webkey-service): the users' public keys as files.

Both layouts, under one directory the web server serves as https://<host>/.well-known/:
  advanced (host openpgpkey.<domain>): openpgpkey/<domain>/hu/<hash>, openpgpkey/<domain>/policy
  direct   (host <domain>):            openpgpkey/hu/<hash>,          openpgpkey/policy
<hash> is the z-base-32 encoded SHA-1 of the lower-cased local part; each file holds the
binary (unarmored) key. The web feature serves them (features/web), and `appliance dns` lists the
record for openpgpkey.<domain>.
"""

from __future__ import annotations

import hashlib

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def zbase32(data: bytes) -> str:
    bits = "".join(f"{b:08b}" for b in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(ZBASE32[int(bits[i:i + 5], 2)] for i in range(0, len(bits), 5))


def wkd_hash(address: str) -> str:
    local = address.rsplit("@", 1)[0].lower()
    return zbase32(hashlib.sha1(local.encode("utf-8")).digest())  # noqa: S324 - WKD's hash


def tree(domain: str, keys: dict[str, bytes]) -> dict[str, bytes]:
    """Relative path under .well-known/ -> content, for every address -> binary key."""
    files: dict[str, bytes] = {
        f"openpgpkey/{domain}/policy": b"",  # empty policy: WKD, no submission protocol
        "openpgpkey/policy": b"",
    }
    for address, key in sorted(keys.items()):
        if address.rsplit("@", 1)[-1] != domain:
            continue
        h = wkd_hash(address)
        files[f"openpgpkey/{domain}/hu/{h}"] = key
        files[f"openpgpkey/hu/{h}"] = key
    return files
