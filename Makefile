# mail-appliance: `make test` sets up what it needs (Debian packages, a venv) and runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
# The agent's runtime libraries come from Debian, as on the box (python3-* from Debian 12).
APT_RUNTIME := python3 python3-venv python3-jinja2 python3-tomlkit python3-gnupg \
               python3-dnspython python3-miniupnpc python3-cryptography openssl ca-certificates \
               iproute2 util-linux logrotate python3-publicsuffix2 publicsuffix python3-systemd restic \
               python3-flask python3-waitress python3-argon2 python3-pyotp python3-segno radicale
# The real daemons the lab runs, and the tools it uses.
APT_LAB := postfix dovecot-imapd dovecot-lmtpd dovecot-auth-lua dovecot-managesieved knot knot-dnsutils nftables procps \
           miniupnpd miniupnpd-nftables wireguard-tools wireguard-go tcpdump ansible unbound \
           pebble certbot nginx-light postfix-mta-sts-resolver sq gnupg gpg-wks-client testssl.sh \
           fail2ban openssh-server openssh-client lynis logrotate ansible-lint \
           rspamd dovecot-sieve python3-dkim sieve-connect \
           libpython3.11-testsuite chromium chromium-driver python3-selenium python3-caldav rclone
APT_PACKAGES := $(APT_RUNTIME) $(APT_LAB)

.PHONY: help deps apt venv test unit lab lint bench clean

help:
	@echo "make test    install what the tests need, run unit + lab tests (root for the lab)"
	@echo "make unit    unit tests only (no root, seconds)"
	@echo "make lab     lab tests only (root: network namespaces, real daemons)"
	@echo "make lint    ruff, mypy, and the privileged-primitive check"
	@echo "make bench   figures: apply times, delivery rate, Postfix+Dovecot memory (PSS)"
	@echo "make image   build the SD-card image (see README)"

deps: apt venv

# Installs only what is missing; postfix is preseeded so its installer asks nothing.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.ok: requirements-dev.txt pyproject.toml
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . || \
	  echo "note: editable install skipped; tests import from the source tree"
	touch $@

venv: $(VENV)/.ok

unit: venv
	$(PY) -m pytest -q -n 2 --dist worksteal tests/unit

lab: deps
	$(PY) -m pytest -q tests/lab

test: deps
	$(PY) -m pytest -q tests/unit tests/image/test_provisioning.py tests/lab $(TEST_EXTRA)

lint: venv
	$(PY) -m ruff check appliance tests bench
	$(PY) -m mypy appliance
	$(PY) tests/check_privileged.py appliance

# Each script builds its own lab and prints figures with a same-run baseline; none asserts.
bench: deps
	$(PY) bench/run.py
	$(PY) bench/openpgp.py
	$(PY) bench/lan_defence.py
	$(PY) bench/privacy.py
	$(PY) bench/spam.py
	$(PY) bench/daemons.py
	$(PY) bench/backup.py
	$(PY) bench/console.py
	$(PY) bench/imports.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include image/image.mk
