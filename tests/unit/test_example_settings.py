"""The commented example settings file that ships on the card's boot partition: a user who
removes every "#" in front of a setting line (and fills in a password hash) gets a file
`appliance check` accepts, or first boot would ignore their file."""

from __future__ import annotations

import io
import re
from pathlib import Path

from appliance import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "provisioning/roles/appliance_firstboot/files/appliance.toml"
# A hash in the format `openssl passwd -6` prints, in place of the file's "$6$..." placeholder.
HASH = ("$6$OJq3NkU2tYQZ1k3b$pZzM2vOUkHfeN0TGLpNFoxRSz4I8qcq5.F.Q/N71J3pJ7aL9BS7vFwq2nKM0V4V9iN8pXl0A2cL5"
        "vN1o7Dm7p/")


def uncommented(text: str) -> str:
    """Every example line ("#key = ...", "#[section]") without its "#"; prose stays a comment."""
    out = []
    for line in text.splitlines():
        if re.match(r"#(\[|[a-z_]+ = )", line):
            line = line[1:]
        out.append(line.replace('"$6$..."', f'"{HASH}"'))
    return "\n".join(out) + "\n"


def test_every_example_line_uncommented_is_accepted(tmp_path: Path) -> None:
    text = uncommented(EXAMPLE.read_text())
    assert "\ndomain = " in text and "\n[[users]]" in text and "\n[spam]" in text  # really uncommented
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["check", str(path)], cli.Env(stdout=out, stderr=err))
    assert rc == 0, err.getvalue()
    assert "ok (example.org, 1 user(s), host mail.example.org)" in out.getvalue()


def test_the_example_tells_a_512_mb_board_about_light_mode() -> None:
    assert re.search(r'^#mode = "light"', EXAMPLE.read_text(), re.M)
