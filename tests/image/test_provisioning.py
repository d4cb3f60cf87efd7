"""Static checks of provisioning/ and the image tooling (seconds; no root).

Needs Debian 12's `ansible` and `ansible-lint` packages. Without them the
Ansible checks skip locally and fail under CI (CI=true), so a missing install
step cannot turn them green.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "provisioning"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(PROVISIONING / "ansible.cfg"),
       "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": "/tmp/ansible-local"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed (apt-get install ansible ansible-lint)")
        pytest.skip(f"{tool} is not installed (apt-get install ansible ansible-lint)")
    return path


def test_playbook_syntax() -> None:
    r = subprocess.run([need("ansible-playbook"), "-i", "localhost,", "--syntax-check",
                        "site.yml"], cwd=PROVISIONING, env=ENV, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ansible_lint_production_profile() -> None:
    r = subprocess.run([need("ansible-lint"), "--nocolor", "--profile", "production",
                        "site.yml", "roles"], cwd=PROVISIONING, env=ENV, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_roles_ship_no_mail_daemon_config() -> None:
    """Ansible installs; the agent configures: one template per config file."""
    offenders = []
    for path in (PROVISIONING / "roles").rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if re.search(r"/etc/(postfix|dovecot|fail2ban)/", text) or \
                re.search(r"(main\.cf|master\.cf|dovecot\.conf|jail\.local)", path.name):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_every_role_variable_is_documented() -> None:
    for role in (PROVISIONING / "roles").iterdir():
        defaults = role / "defaults" / "main.yml"
        if not defaults.exists():
            continue
        readme = (role / "README.md").read_text()
        names = re.findall(r"^([a-z_]+):", defaults.read_text(), flags=re.M)
        missing = [n for n in names if n not in readme]
        assert missing == [], f"{role.name}/README.md does not document {missing}"
        assert all(n.startswith(role.name + "_") for n in names), names


def load_firstboot():
    path = PROVISIONING / "roles/appliance_firstboot/files/appliance-firstboot"
    loader = importlib.machinery.SourceFileLoader("appliance_firstboot", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_firstboot_treats_the_commented_example_as_empty(tmp_path: Path) -> None:
    fb = load_firstboot()
    example = PROVISIONING / "roles/appliance_firstboot/files/appliance.toml"
    assert not fb.has_content(example)
    filled = tmp_path / "appliance.toml"
    filled.write_text(example.read_text() + 'domain = "example.org"\n')
    assert fb.has_content(filled)


def test_firstboot_erases_before_deleting(tmp_path: Path) -> None:
    fb = load_firstboot()
    secret = tmp_path / "appliance.toml"
    secret.write_text('password_hash = "$6$x"\n')
    fb.erase(secret)
    assert not secret.exists()


def test_build_configuration_from_environment() -> None:
    loader = importlib.machinery.SourceFileLoader("image_build", str(REPO / "image/build.py"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    build = importlib.util.module_from_spec(spec)
    loader.exec_module(build)
    cfg = build.Config({"ARCH": "amd64", "EXTRA_PACKAGES": "vim-tiny tmux",
                        "SOURCE_DATE_EPOCH": "1700000000", "VERSION": "9.9"})
    assert cfg.name == "mail-appliance-9.9-amd64"
    assert cfg.extra_packages == ["vim-tiny", "tmux"]
    assert "linux-image-amd64" in cfg.base_packages()
    assert all("non-free-firmware" in s for s in cfg.sources())
    with pytest.raises(build.BuildError):
        build.Config({"ARCH": "riscv64"})


def fake_chroot(root: Path) -> None:
    """The state finalize.sh meets after the playbook: the build host's resolver lent to
    apt, systemd-resolved's link saved beside it (dangling: /run is empty in a chroot)."""
    for d in ("etc/ssh/sshd_config.d", "var/cache/apt", "var/lib/apt/lists", "var/lib/systemd",
              "tmp", "var/tmp", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/resolv.conf").write_text("nameserver 10.99.0.1\n")
    (root / "etc/resolv.conf.image-build").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (root / "etc/hostname").write_text("mail-appliance\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 mail-appliance\n")
    (root / "etc/apt/apt.conf.d").mkdir(parents=True)
    (root / "etc/apt/apt.conf.d/99mmdebstrap").write_text('Acquire::Retries "3";\n')


def finalize(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(REPO / "image/hooks/finalize.sh"), str(root)],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "IMAGE_HOSTNAME": "mail-appliance"})


def test_finalize_puts_the_resolver_link_back(tmp_path: Path) -> None:
    fake_chroot(tmp_path)
    r = subprocess.run(["sh", str(REPO / "image/hooks/finalize.sh"), str(tmp_path)],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    conf = tmp_path / "etc/resolv.conf"
    assert conf.is_symlink(), "the build host's resolv.conf stayed in the image"
    assert os.readlink(conf) == "../run/systemd/resolve/stub-resolv.conf"
    assert not os.path.lexists(tmp_path / "etc/resolv.conf.image-build")


def test_finalize_refuses_an_image_without_the_resolver_link(tmp_path: Path) -> None:
    fake_chroot(tmp_path)
    (tmp_path / "etc/resolv.conf.image-build").unlink()
    r = subprocess.run(["sh", str(REPO / "image/hooks/finalize.sh"), str(tmp_path)],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode != 0
    assert "stub link" in r.stderr


@pytest.mark.parametrize("leak, why", [
    (("etc/hostname", f"{socket.gethostname()}\n"), "/etc/hostname"),
    (("etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {socket.gethostname()}-x {socket.gethostname()}\n"),
     "build host's name"),
    (("etc/apt/apt.conf.d/01proxy", 'Acquire::http::Proxy "http://10.0.0.1:3142";\n'), "proxy"),
    (("etc/apt/apt.conf", 'Acquire { https::Proxy "http://cache:3142"; }\n'), "proxy"),
    (("etc/environment", "http_proxy=http://10.0.0.1:3128\n"), "proxy"),
])
def test_finalize_refuses_files_of_the_build_host(tmp_path: Path, leak: tuple[str, str], why: str) -> None:
    """The image audit: the build host's name, its /etc/hosts entries and apt proxy must not
    ship (a card would carry another machine's name, or fetch updates through a proxy that
    only exists on the build network)."""
    if socket.gethostname() in ("mail-appliance", "localhost"):
        pytest.fail("the build host is named like the image; these cases need another name")
    fake_chroot(tmp_path)
    assert finalize(tmp_path).returncode == 0  # the clean chroot passes
    fake_chroot_again = tmp_path / "again"
    fake_chroot(fake_chroot_again)
    path, text = leak
    (fake_chroot_again / path).write_text(text)
    r = finalize(fake_chroot_again)
    assert r.returncode != 0 and why in r.stderr, r.stderr


def test_the_boot_tests_name_check_reads_the_outside_parties_table() -> None:
    """The boot test records every DNS name the guest looks up and fails on any that
    docs/outside-parties.md does not list; here that check itself, on names it must pass and
    names it must catch (the rspamd.com services the box must not use)."""
    import sys

    sys.path.insert(0, str(REPO / "tests/image"))
    import recording_dns

    patterns = recording_dns.documented_patterns(REPO / "docs/outside-parties.md", "example.org",
                                                 "mail.example.org")
    ok = ["deb.debian.org", "2.debian.pool.ntp.org", "mail.example.org", "_mta-sts.example.org",
          "2.2.0.10.in-addr.arpa", "1.2.0.192.zen.spamhaus.org", "_dmarc.sender.example",
          "mx.sender.example", "sender.example"]
    bad = ["maps.rspamd.com", "25.113.0.203.asn.rspamd.com", "example.com.uribl.rspamd.com",
           "telemetry.example.net", "example.org.evil.test"]
    assert recording_dns.undocumented(ok, patterns, ("sender.example",)) == []
    assert recording_dns.undocumented(ok + bad, patterns, ("sender.example",)) == sorted(bad)


def test_packaged_daemons_wait_for_the_first_apply() -> None:
    """Every packaged daemon the agent configures gets the drop-in that keeps it off until
    the first apply has written its configuration, tested on the file apply records; the
    ones meant to run before it are named here with the reason."""
    import yaml

    from appliance import registry
    from appliance.core import apply, system

    before_apply = {
        "nftables.service": "the firewall is up before any network",
        "ssh.service": "kept off until a key is installed by its own drop-in",
        "logrotate.timer": "touches no network and no mail",
    }
    defaults = yaml.safe_load((PROVISIONING / "roles/appliance_agent/defaults/main.yml").read_text())
    gated = set(defaults["appliance_agent_configured_units"])
    assert defaults["appliance_agent_manifest"] == apply.MANIFEST
    packaged = {s.unit for s in registry.all_services(system.Root("/nonexistent")).values()
                if not s.unit.startswith("appliance-")}
    assert packaged - set(before_apply) <= gated, packaged - set(before_apply) - gated
    assert "postfix@.service" in gated  # the instance that does the work
    tasks = (PROVISIONING / "roles/appliance_agent/tasks/main.yml").read_text()
    dropin = PROVISIONING / "roles/appliance_agent/templates/appliance-configured.conf.j2"
    assert "ConditionPathExists={{ appliance_agent_manifest }}" in dropin.read_text()
    assert tasks.index("appliance-configured.conf") < tasks.index(
        "Install the packages the agent configures")


def test_firstboot_logs_each_apply_step_as_it_happens(tmp_path: Path, monkeypatch) -> None:
    """The first-boot log is the timeline of the first apply: each step the agent reports
    on stderr is written when it happens, with the seconds since the apply began."""
    fb = load_firstboot()
    fake = tmp_path / "appliance"
    fake.write_text("#!/bin/sh\necho 'appliance: validating rspamd' >&2\nsleep 1\n"
                    "echo 'appliance: reloading rspamd (systemd)' >&2\n"
                    "echo 'changed 2 file(s); reloaded 1 service(s): rspamd'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fb, "APPLIANCE", [str(fake)])
    monkeypatch.setattr(fb, "BOOT", tmp_path)
    assert fb.apply()
    lines = (tmp_path / "appliance-firstboot.log").read_text().splitlines()
    steps = [ln for ln in lines if "appliance: " in ln]
    assert [s.split(" s  ", 1)[1] for s in steps] == [
        "appliance: validating rspamd", "appliance: reloading rspamd (systemd)"]
    elapsed = [float(re.search(r"\+\s*([\d.]+) s", s).group(1)) for s in steps]
    assert elapsed[0] < 1.0 <= elapsed[1]
    assert re.search(r"apply succeeded in [\d.]+ s:", "\n".join(lines))
    assert lines[-1] == "changed 2 file(s); reloaded 1 service(s): rspamd"

    fake.write_text("#!/bin/sh\necho 'appliance: error: rspamd: validation failed' >&2\nexit 3\n")
    assert not fb.apply()
    assert "apply FAILED (exit 3)" in (tmp_path / "appliance-firstboot.log").read_text()


def render_role_template(role: str, name: str, **variables) -> str:
    import jinja2
    import yaml

    defaults = yaml.safe_load((PROVISIONING / "roles" / role / "defaults/main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PROVISIONING / "roles" / role / "templates"),
                             trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(ansible_managed="managed", **{**defaults, **variables})


def test_firstboot_makes_only_the_host_keys_sshd_serves(tmp_path: Path) -> None:
    """The first boot makes each card's SSH host keys: exactly the types the image's sshd
    drop-in names (an RSA key nobody is configured to use only cost first-boot time), each
    with its own private key (no key of the build ends up shared)."""
    need("ssh-keygen")
    fb = load_firstboot()
    ssh = tmp_path / "etc/ssh"
    (ssh / "sshd_config.d").mkdir(parents=True)
    # Debian's sshd_config: the drop-ins first, HostKey lines commented out.
    (ssh / "sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n"
                                     "#HostKey /etc/ssh/ssh_host_rsa_key\n"
                                     "#HostKey /etc/ssh/ssh_host_ecdsa_key\n"
                                     "#HostKey /etc/ssh/ssh_host_ed25519_key\n")
    dropin = render_role_template("appliance_firstboot", "ssh-host-keys.conf.j2")
    (ssh / "sshd_config.d/host-keys.conf").write_text(dropin.replace("/etc/ssh/", f"{ssh}/"))
    (ssh / "sshd_config.d/50-appliance.conf").write_text("PasswordAuthentication no\n")
    served = sorted(re.findall(r"^HostKey /etc/ssh/ssh_host_(\w+)_key$", dropin, re.M))
    assert served == ["ecdsa", "ed25519"]

    fb.make_host_keys(ssh)
    made = sorted(p.name for p in ssh.glob("ssh_host_*"))
    assert made == sorted(f"ssh_host_{k}_key{ext}" for k in served for ext in ("", ".pub"))
    for kind in served:
        key = ssh / f"ssh_host_{kind}_key"
        assert key.stat().st_mode & 0o077 == 0
        shown = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True,
                               text=True, check=True).stdout
        assert f"({kind.upper()})" in shown
    before = {p: p.read_bytes() for p in ssh.glob("ssh_host_*")}
    fb.make_host_keys(ssh)  # a second run keeps the keys it made
    assert before == {p: p.read_bytes() for p in ssh.glob("ssh_host_*")}


def test_firstboot_without_hostkey_lines_makes_sshds_default_keys(tmp_path: Path, monkeypatch) -> None:
    """A configuration that names no HostKey: sshd loads its built-in list, so every type
    is made (ssh-keygen -A), as before."""
    fb = load_firstboot()
    ssh = tmp_path / "ssh"
    (ssh / "sshd_config.d").mkdir(parents=True)
    (ssh / "sshd_config").write_text("#HostKey /etc/ssh/ssh_host_rsa_key\nPort 22\n")
    calls: list[list[str]] = []
    monkeypatch.setattr(fb, "must", lambda cmd, timeout=120: calls.append(cmd) or "")
    fb.make_host_keys(ssh)
    assert calls == [["ssh-keygen", "-A"]]


def test_firstboot_makes_no_snakeoil_certificate() -> None:
    """Nothing on the appliance reads Debian's snakeoil certificate (the agent makes its own
    self-signed one for Postfix, Dovecot and nginx), so the first boot does not spend time on it."""
    script = (PROVISIONING / "roles/appliance_firstboot/files/appliance-firstboot").read_text()
    assert "make-ssl-cert" not in script
    users = [str(p.relative_to(REPO)) for p in (REPO / "appliance").rglob("*")
             if p.is_file() and "snakeoil" in p.read_text(errors="replace")]
    assert users == []


def test_rspamd_url_matcher_is_compiled_at_build_time() -> None:
    """rspamd's URL matcher (hyperscan, amd64) is compiled by the image build, after the
    playbook installed rspamd and before finalize.sh audits the tree, into rspamd's own cache
    directory, without network; the arm64 build (no hyperscan) skips it."""
    src = (REPO / "image/build.py").read_text()
    hooks = re.findall(r"--customize-hook=(?:\{HOOKS\}/)?([\w.-]+)", src)
    assert hooks.index("rspamd-cache.sh") < hooks.index("finalize.sh")
    assert src.index("rspamd-cache.sh") > src.index('"--customize-hook=env "')
    hook = (REPO / "image/hooks/rspamd-cache.sh").read_text()
    assert "unshare --net chroot" in hook
    assert "cache=/var/lib/rspamd" in hook
    assert "libhyperscan5" in hook and "exit 0" in hook


def test_nginx_waits_for_a_file_only_the_web_feature_writes() -> None:
    """Debian's nginx.service is enabled by its package; with [web] off it must not start with
    Debian's welcome page on port 80. The drop-in's marker is a file the web feature plans."""
    import yaml

    from appliance.features.web import web

    defaults = yaml.safe_load((PROVISIONING / "roles/appliance_agent/defaults/main.yml").read_text())
    marker = defaults["appliance_agent_web_marker"]
    assert marker == f"{web.WWW}/mta-sts/.well-known/mta-sts.txt"
    template = (PROVISIONING / "roles/appliance_agent/templates/appliance-configured.conf.j2").read_text()
    assert "item == 'nginx.service'" in template and "appliance_agent_web_marker" in template


def test_firstboot_restores_from_restore_txt_and_erases_it_only_when_that_worked(
        tmp_path: Path, monkeypatch) -> None:
    """restore.txt (the recovery sheet's text) on the boot partition: `appliance restore
    --sheet` on a private copy, its steps in the log; the file (password, key) erased after a
    success, kept for the next boot after a failure. The real restore: tests/lab/test_backup.py."""
    fb = load_firstboot()
    boot = tmp_path / "boot"
    boot.mkdir()
    seen = tmp_path / "seen"
    fake = tmp_path / "appliance"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {seen}\ncat \"$3\" >> {seen}\n"
                    "echo 'appliance: restoring snapshot 1a2b' >&2\necho 'restored 1a2b'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fb, "APPLIANCE", [str(fake)])
    monkeypatch.setattr(fb, "BOOT", boot)
    monkeypatch.setattr(fb, "SHEET_COPY", tmp_path / "sheet-copy")
    monkeypatch.setattr(fb, "wait_for_network", lambda seconds=0: True)
    assert not fb.restore_from_sheet()  # nothing to restore
    sheet = '[recovery]\nrepository = "sftp:me@vps.example.net:/srv/mail"\npassword = "p"\n'
    (boot / "restore.txt").write_text(sheet)
    assert fb.restore_from_sheet()
    assert seen.read_text() == f"restore --sheet {tmp_path / 'sheet-copy'}\n{sheet}"
    assert not (boot / "restore.txt").exists() and not (tmp_path / "sheet-copy").exists()
    log = (boot / "appliance-firstboot.log").read_text()
    assert "appliance: restoring snapshot 1a2b" in log and "restored the backup from restore.txt" in log

    (boot / "restore.txt").write_text(sheet)
    fake.write_text("#!/bin/sh\necho 'appliance: the repository refused the key' >&2\nexit 1\n")
    assert not fb.restore_from_sheet()
    assert (boot / "restore.txt").read_text() == sheet  # for the next boot
    assert "restoring from restore.txt FAILED (exit 1)" in (boot / "appliance-firstboot.log").read_text()
