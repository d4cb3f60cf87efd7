# Image build targets, included by the top-level Makefile.
#
#   make image                      Raspberry Pi image (arm64): build/mail-appliance-<version>-arm64.img.xz
#   make image ARCH=amd64           PC/VM image with the same roles
#   make image-test [ARCH=...]      boot the built image under qemu and check it
#   make image-powercut [POWERCUTS=50]  power cuts while mail arrives (after image-test)
#   make image-ci                   the CI path (README: "How the image is tested")
#   make provisioning-lint          ansible-playbook --syntax-check + ansible-lint
#
# Variables (environment or command line):
ARCH ?= arm64
MIRROR ?= http://deb.debian.org/debian
SECURITY_MIRROR ?= http://deb.debian.org/debian-security
# More Debian packages, space-separated: EXTRA_PACKAGES="vim-tiny tmux"
EXTRA_PACKAGES ?=
# More Ansible roles (by name, from provisioning/roles or provisioning/local-roles)
EXTRA_ROLES ?=
# A YAML or JSON file of Ansible variables: EXTRA_VARS=my-vars.yml
EXTRA_VARS ?=
# Host name until the settings name the machine. (Not HOSTNAME: shells often
# export that, and the build host's name must not end up in the image.)
IMAGE_HOSTNAME ?= mail-appliance
# Downloaded packages and the cached base rootfs live here, outside the repo.
IMAGE_CACHE ?= /var/cache/mail-appliance-image
# 1: reuse a cached base rootfs (< 7 days old, same inputs); 0: rebuild it.
REUSE_BASE ?= 1
# Where the .img.xz will be published (for the Raspberry Pi Imager entry).
IMAGE_BASE_URL ?=
# xz level of the .img.xz (6: release size; 1: about 5x faster, ~15% larger).
XZ_LEVEL ?= 6
# Seconds the boot test may take in all.
IMAGE_TEST_TIMEOUT ?= 900
# Power cuts the power-cut test makes (CI: 5; the long run: make image-powercut POWERCUTS=50),
# and the seed of their random moments (0: a new one, printed).
POWERCUTS ?= 5
POWERCUT_SEED ?= 0

IMAGE_ENV = ARCH='$(ARCH)' MIRROR='$(MIRROR)' SECURITY_MIRROR='$(SECURITY_MIRROR)' \
	EXTRA_PACKAGES='$(EXTRA_PACKAGES)' EXTRA_ROLES='$(EXTRA_ROLES)' EXTRA_VARS='$(EXTRA_VARS)' \
	IMAGE_HOSTNAME='$(IMAGE_HOSTNAME)' CACHE_DIR='$(IMAGE_CACHE)' REUSE_BASE='$(REUSE_BASE)' \
	IMAGE_BASE_URL='$(IMAGE_BASE_URL)' XZ_LEVEL='$(XZ_LEVEL)'

.PHONY: image image-deps image-test image-powercut image-ssh-test image-ci provisioning-lint

image-deps:
	image/host-deps.sh $(ARCH)

image: image-deps
	$(IMAGE_ENV) /usr/bin/python3 image/build.py

image-test: image-deps
	ARCH='$(ARCH)' /usr/bin/python3 tests/image/boot_test.py --timeout $(IMAGE_TEST_TIMEOUT)

# Power cuts while mail arrives, on the card image-test left behind (run that first).
image-powercut: image-deps
	ARCH='$(ARCH)' POWERCUTS='$(POWERCUTS)' POWERCUT_SEED='$(POWERCUT_SEED)' \
		/usr/bin/python3 tests/image/powercut_test.py --timeout $$(( $(POWERCUTS) * 600 + 900 ))

# The tinkerer's path: the same playbook over SSH into a fresh Debian 12 host
# (a chroot + network namespace); uses the amd64 package cache of make image ARCH=amd64.
image-ssh-test: image-deps
	/usr/bin/python3 tests/image/ssh_provision_test.py --timeout 1200

# CI: the whole pipeline for amd64 (mmdebstrap, the same roles through the
# chroot connection, assembly, xz, first boot under qemu, ports, SSH), then the
# playbook over SSH. First a few seconds proving the arm64 toolchain is complete
# (tests/image/toolchain_test.py), since CI never builds arm64. The arm64 image takes ~35-45 min cold here (base rootfs
# and provisioning under qemu-user): run `make image image-test` for it.
IMAGE_CI_ARCH ?= amd64
image-ci:
	image/host-deps.sh arm64
	/usr/bin/python3 tests/image/toolchain_test.py arm64
	$(MAKE) image ARCH=$(IMAGE_CI_ARCH) XZ_LEVEL=1
	$(MAKE) image-test ARCH=$(IMAGE_CI_ARCH)
	$(MAKE) image-powercut ARCH=$(IMAGE_CI_ARCH) POWERCUTS=5
	$(MAKE) image-ssh-test

provisioning-lint:
	image/host-deps.sh lint
	cd provisioning && ANSIBLE_CONFIG=ansible.cfg ansible-playbook -i localhost, --syntax-check site.yml
	cd provisioning && ANSIBLE_CONFIG=ansible.cfg ansible-lint --profile production site.yml roles
