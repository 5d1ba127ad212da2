# banger build, install and test entry points.
SHELL := /bin/bash
GO ?= go
PREFIX ?= $(HOME)/.local
HELPER_DIR ?= /usr/local/libexec/banger
SUDOERS_FILE ?= /etc/sudoers.d/banger
TESTFLAGS ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
BIN := build/bin

.PHONY: all setup build test test-unit test-system install install-helper uninstall-helper fcfake clean vet fmt

all: build

setup: ## build, install, check the host, create a VM and open a shell in it
	./scripts/setup.sh

# banger is the small front (-tags banger_front: the everyday commands that
# only talk to bangerd); it execs banger-full, the complete CLI built from
# the same main package, for every other command (internal/cli/front.go).
build: ## static banger, banger-full, bangerd and banger-agent into build/bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -tags banger_front -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger-full ./cmd/banger
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger-agent ./cmd/banger-agent

fcfake: ## the fake Firecracker used by the system tests
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/fcfake ./test/fcfake

vet:
	$(GO) vet ./...
	$(GO) vet -tags banger_front ./cmd/banger ./internal/cli
	@test -z "$$(gofmt -l cmd internal test)" || { gofmt -l cmd internal test; echo "gofmt needed"; exit 1; }

# Every tier that can run on this machine (build, vet, unit + privileged,
# system, image), each even when an earlier one failed, then one result line
# per tier (scripts/test.sh). Tests that need root or a tool skip with the
# reason. (The recipe must not name the MAKE variable: make -n would run it.)
test:
	@GO='$(GO)' TESTFLAGS='$(TESTFLAGS)' ./scripts/test.sh

test-unit:
	$(GO) test -count=1 ./internal/...
	$(GO) test -count=1 -tags banger_front ./internal/cli

test-system: build fcfake
	$(GO) test -count=1 -timeout 20m -tags system -v ./test/...

install: build ## binaries into $(PREFIX)/bin, the manifest and image scripts into $(PREFIX)/share/banger
	@install -d $(PREFIX)/bin
	@install -m 0755 $(BIN)/banger $(BIN)/banger-full $(BIN)/bangerd $(BIN)/banger-agent $(PREFIX)/bin/
	@install -d $(PREFIX)/share/banger
	@install -m 0644 runtime-bundle.toml $(PREFIX)/share/banger/runtime-bundle.toml
	@rm -rf $(PREFIX)/share/banger/images && cp -r images $(PREFIX)/share/banger/images
	@echo "installed banger, banger-full, bangerd and banger-agent in $(PREFIX)/bin, runtime-bundle.toml and images/ in $(PREFIX)/share/banger"
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*|*":$(PREFIX)/bin/:"*) ;; *) \
		echo "$(PREFIX)/bin is not on your PATH; add this line to your shell's startup file (~/.bashrc, ~/.zshrc) and run it now:"; \
		if [ "$(PREFIX)" = "$$HOME/.local" ]; then echo '  export PATH="$$HOME/.local/bin:$$PATH"'; else echo '  export PATH="$(PREFIX)/bin:$$PATH"'; fi ;; \
	esac

# Root-owned helper copy for sudo, and the sudoers drop-in for the invoking
# user (SUDO_USER, or HELPER_USER=name). The helper is the complete CLI
# (banger-full, which has `internal`) installed as $(HELPER_DIR)/banger.
install-helper: build
	@user="$${HELPER_USER:-$${SUDO_USER:-}}"; \
	if [ "$$(id -u)" != 0 ]; then echo "run as: sudo make install-helper (or set HELPER_USER=name)"; exit 2; fi; \
	if [ -z "$$user" ] || [ "$$user" = root ]; then echo "install-helper: not needed for root (a root bangerd does privileged work in-process); for a normal user run sudo make install-helper as that user, or set HELPER_USER=name"; exit 0; fi; \
	install -d -o root -g root -m 0755 $(HELPER_DIR); \
	install -o root -g root -m 0755 $(BIN)/banger-full $(HELPER_DIR)/banger; \
	rm -rf $(HELPER_DIR)/images && cp -R --no-preserve=ownership,mode images $(HELPER_DIR)/images && chown -R root:root $(HELPER_DIR)/images && chmod -R u=rwX,go=rX $(HELPER_DIR)/images; \
	tmp=$$(mktemp); \
	echo "$$user ALL=(root) NOPASSWD: $(HELPER_DIR)/banger internal *" > $$tmp; \
	visudo -cf $$tmp >/dev/null || { rm -f $$tmp; echo "sudoers rule failed validation"; exit 1; }; \
	install -o root -g root -m 0440 $$tmp $(SUDOERS_FILE); rm -f $$tmp; \
	echo "installed $(HELPER_DIR)/banger and $(SUDOERS_FILE) for $$user"

uninstall-helper:
	rm -f $(SUDOERS_FILE) $(HELPER_DIR)/banger
	rm -rf $(HELPER_DIR)/images

clean:
	rm -rf build

# Daemon benchmarks need root and run inside a throwaway network namespace;
# CreateToRunning reports every progress stage's min/median/p95/max.
# bench-cli times whole CLI processes side by side (vm create/start with
# progress against -q/--json, vm list with 500 VMs and version against a Go
# hello-world, version also against banger-full; instruction counts when
# valgrind is installed).
.PHONY: bench bench-cli
bench: fcfake bench-cli
	@ns=bgbench$$$$; ip netns add $$ns; ip -n $$ns link set lo up; \
	trap 'ip netns del '$$ns EXIT; \
	ip netns exec $$ns env BANGER_BENCH_NETNS=1 $(GO) test -run '^$$' -bench 'CreateToRunning|Create20' -benchtime $${BENCHTIME:-20x} ./internal/daemon/

bench-cli:
	$(GO) test -tags system -run '^$$' -bench 'CLI' -benchtime $${BENCHTIME:-20x} ./test/

# The guest kernel: Debian's linux-source-6.1 (or KERNEL_SRC=tree|tarball),
# `make defconfig` + scripts/kernel/banger.config + KERNEL_FRAGMENTS (e.g.
# scripts/kernel/pvm-guest.config for PVM hosts, with a PVM-patched tree),
# built once per machine and cached by the inputs' hash; prints the vmlinux
# path. kernel-config stops after the merged, checked .config (seconds).
# test-image is the real boot lane (Debian image built by banger, booted
# under QEMU TCG, checked over SSH; root).
KERNEL_FRAGMENTS ?=
KERNEL_SRC ?=
.PHONY: kernel kernel-config test-image
kernel:
	@KERNEL_FRAGMENTS='$(KERNEL_FRAGMENTS)' KERNEL_SRC='$(KERNEL_SRC)' ./scripts/build-kernel.sh

kernel-config:
	@KERNEL_FRAGMENTS='$(KERNEL_FRAGMENTS)' KERNEL_SRC='$(KERNEL_SRC)' ./scripts/build-kernel.sh --config-only

test-image: build
	./scripts/test-image.sh
