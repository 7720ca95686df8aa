# serverlessd: `make run` starts the daemon on its embedded default (SQLite +
# local mariadbd); `make test` runs every test against real components.
# Both install the Debian packages they need when they are missing.

GO      ?= go
BIN     := bin/serverlessd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/serverlessd/serverlessd/cli.Version=$(VERSION)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Packages the daemon needs to run, and the extra ones the tests need.
# mariadb-backup takes the snapshots of computes that never go idle.
RUN_PKGS  := mariadb-server mariadb-client mariadb-backup
# Client libraries of other languages prove that pooled sessions survive
# suspends and transaction pooling: PyMySQL, Perl's DBD::MariaDB, and
# MariaDB Connector/J run from source by a JDK (installed only when no
# javac is on the PATH). The web console is tested in a headless Chromium.
TEST_PKGS := $(RUN_PKGS) postgresql sysbench haproxy python3-pymysql libmariadb-java libdbd-mariadb-perl chromium
# The benchmarks also count each relay's system calls with strace, and
# branch onto an XFS loop mount (reflinks) made with xfsprogs.
BENCH_PKGS := $(TEST_PKGS) strace xfsprogs

.PHONY: all build run test test-unit test-kube test-kube-real e2e bench bench-proxy deps-run deps-test deps-s3 deps-bench fmt vet clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

# install-pkgs installs the listed Debian packages that are not installed yet.
define install-pkgs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then \
			echo "installing:$$missing"; \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "missing packages:$$missing (install them with your package manager)"; exit 1; \
		fi; \
	fi
endef

deps-run:
	$(call install-pkgs,$(RUN_PKGS))

deps-test:
	$(call install-pkgs,$(TEST_PKGS))
	$(if $(shell command -v javac),,$(call install-pkgs,default-jdk-headless))

# deps-s3 builds the S3-compatible server the backup tests store to
# (versitygw, from its Go module: about 2.5 minutes cold, once).
VERSITYGW := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/serverlessd-s3/v1.8.0/versitygw
deps-s3:
	@test -x $(VERSITYGW) || { echo "building versitygw v1.8.0 into $(dir $(VERSITYGW))"; \
		GOBIN=$(dir $(VERSITYGW)) CGO_ENABLED=0 $(GO) install github.com/versity/versitygw/cmd/versitygw@v1.8.0; }

deps-bench:
	$(call install-pkgs,$(BENCH_PKGS))

run: deps-run build
	./$(BIN) serve

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd test/kube && $(GO) vet ./...

# test runs every test. Nothing skips: the tests fail if mariadbd or
# PostgreSQL is missing.
test: deps-test deps-s3 fmt vet build test-unit test-kube

test-unit:
	$(GO) test -count=1 -timeout 30m ./...

# test-kube proves the kubernetes driver against a real kube-apiserver
# (built once from k8s.io/kubernetes into ~/.cache/serverlessd-kube: about
# 4 minutes cold on 2 idle cores, seconds warm) with etcd in-process; the
# harness plays the node with local mariadbd processes.
test-kube: deps-test
	cd test/kube && $(GO) test -count=1 -timeout 45m ./...

# test-kube-real brings up a real one-node Kubernetes cluster on this
# machine (root, Debian 12: apt-get installs containerd, runc, the CNI
# plugins, buildah, debootstrap, iptables, PostgreSQL), runs MariaDB Pods
# and `serverlessd serve` with the kubernetes driver on it, then builds the
# Dockerfile with buildah, deploys deploy/kubernetes (kustomize) with two
# replicas and checks kills, a rolling update and the NetworkPolicy (with
# kube-router as the policy controller). Cold, about 14 minutes on 2 cores
# (the Kubernetes binaries, the images, kube-router, into
# ~/.cache/serverlessd-kube); warm, about 5 minutes. Not part of
# `make test`: it changes the host's iptables, sysctls and cgroups while it
# runs (and puts them back).
test-kube-real:
	@[ "$$(id -u)" = 0 ] || { echo "test-kube-real needs root"; exit 1; }
	cd test/kube && $(GO) test -tags realnode -count=1 -timeout 60m -v ./realnode

# e2e drives a built `serverlessd serve` the way a user would: the CLI, the
# API, the mariadb client, sysbench and the Go driver (make test runs it too).
e2e: deps-test
	$(GO) test -count=1 -timeout 20m -v ./e2e

# bench runs the whole performance suite side by side (cold and warm logins,
# the first query of a kept connection after a suspend, sysbench direct /
# serverlessd / haproxy, wake storm, churn, pool churn, transaction
# pooling, scale, tenants, the node's memory, the kubernetes driver on a
# real node (as make test-kube-real; root), the Go benchmarks, a CPU
# profile of the proxy) and writes BENCHMARKS.md; about 60 minutes warm.
bench: deps-bench build
	$(GO) run ./bench/cmd/benchsuite -binary $(BIN) -out BENCHMARKS.md

# bench-proxy runs only the sysbench matrix (direct, serverlessd, haproxy).
bench-proxy: deps-bench build
	$(GO) run ./bench/cmd/benchsuite -binary $(BIN) -only throughput

clean:
	rm -rf bin
