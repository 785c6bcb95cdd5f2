# epikv build. Everything builds and tests from here (DESIGN.md §1).
#
# Public targets first check that every build dependency is present and
# install the missing ones with apt-get (once, non-interactively), then run
# the real work in a sub-make, so that pkg-config is asked only after the
# packages exist.
#
#   make            build everything into $(BUILD)
#   make test       build and run every test
#   make asan       build and run the tests under AddressSanitizer
#   make ubsan      build and run the tests under UndefinedBehaviorSanitizer
#   make bench      build and run the benchmarks (figures go to bench/RESULTS.md by hand)
#   make clean
#
# Variables: BUILD (output folder), SANITIZE (address|undefined), OPT.

BUILD    ?= build
VERSION  := 0.1.0
OPT      ?= -O2
SANITIZE ?=

PC_PKGS  := lmdb libxxhash libsodium libprotobuf-c libuv cmocka
APT_PKGS := liblmdb-dev libxxhash-dev libsodium-dev libprotobuf-c-dev \
            protobuf-c-compiler libcmocka-dev libuv1-dev pkg-config \
            redis-tools

.PHONY: FORCE all test asan ubsan bench deps clean format run stop \
        _all _test _bench

all: deps
	@$(MAKE) --no-print-directory _all

test: deps
	@$(MAKE) --no-print-directory _test

asan: deps
	@$(MAKE) --no-print-directory _test BUILD=$(BUILD)/asan SANITIZE=address OPT=-O1

ubsan: deps
	@$(MAKE) --no-print-directory _test BUILD=$(BUILD)/ubsan SANITIZE=undefined OPT=-O1

bench: deps
	@$(MAKE) --no-print-directory _bench

run: deps
	@$(MAKE) --no-print-directory _all
	@KVD=$(BUILD)/kvd KVCTL=$(BUILD)/kvctl tools/run.sh start

stop:
	@tools/run.sh stop

# Installs only when something is missing; apt-get update runs first because a
# fresh Debian machine has empty package lists.
deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || \
	    ! pkg-config --exists $(PC_PKGS) || \
	    ! command -v protoc-c >/dev/null 2>&1 || \
	    ! command -v redis-benchmark >/dev/null 2>&1; then \
	  echo "deps: installing missing build dependencies: $(APT_PKGS)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -q && \
	  $$SUDO apt-get install -y -q --no-install-recommends $(APT_PKGS); \
	fi

clean:
	rm -rf $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# ---------------------------------------------------------------------------
# Internal part: runs with the dependencies present.

CC      ?= cc
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wwrite-strings \
           -Wno-missing-field-initializers
CFLAGS  := -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -MMD -MP -fPIC -I. -I$(BUILD)/gen
LDFLAGS :=
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# Public targets (or none: `all`) ask pkg-config only in their sub-make.
PUBLIC := all test asan ubsan bench deps clean format run stop install uninstall
ifneq ($(filter-out $(PUBLIC),$(MAKECMDGOALS)),)
PKG_CFLAGS := $(shell pkg-config --cflags lmdb libxxhash libsodium libprotobuf-c)
PKG_LIBS   := $(shell pkg-config --libs lmdb libxxhash libsodium libprotobuf-c) -lpthread
UV_CFLAGS  := $(shell pkg-config --cflags libuv)
UV_LIBS    := $(shell pkg-config --libs libuv)
CMOCKA_CFLAGS := $(shell pkg-config --cflags cmocka)
CMOCKA_LIBS   := $(shell pkg-config --libs cmocka)
endif
CFLAGS += $(PKG_CFLAGS)

# Objects depend on this stamp, rewritten only when the flags change, so a
# changed flag (a sanitizer, -fPIC) rebuilds everything it affects.
STAMP := $(BUILD)/.cflags
$(STAMP): FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDFLAGS)' | cmp -s - $@ || \
	  echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $@
FORCE:

# Generated protobuf-c code.
PROTOS   := $(wildcard proto/*.proto)
GEN_C    := $(patsubst %.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H    := $(GEN_C:.c=.h)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: %.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen $<

# The core library: proto, crdt, sync, storage (dependencies point down).
CORE_SRC := $(wildcard proto/*.c crdt/*.c sync/*.c storage/*.c)
CORE_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(CORE_SRC)) \
            $(patsubst $(BUILD)/gen/%.c,$(BUILD)/obj/gen/%.o,$(GEN_C))
CORE_LIB := $(BUILD)/libkvcore.a

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c $(STAMP) | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(CORE_LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The client library: its own copy of the protocol pieces it needs, so that
# libkvclient.so depends on nothing of ours.
CLIENT_OBJ := $(BUILD)/obj/client/kvclient.o $(BUILD)/obj/gen/proto/kv.pb-c.o \
              $(BUILD)/obj/proto/frame.o $(BUILD)/obj/proto/buf.o \
              $(BUILD)/obj/proto/kv_err.o
CLIENT_LIB := $(BUILD)/libkvclient.a
CLIENT_SO  := $(BUILD)/libkvclient.so.1

$(CLIENT_LIB): $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Only the kvc_ API is exported; the protocol internals stay private.
$(CLIENT_SO): $(CLIENT_OBJ) client/kvclient.map
	$(CC) -shared -Wl,-soname,libkvclient.so.1 \
	  -Wl,--version-script=client/kvclient.map $(LDFLAGS) $(CLIENT_OBJ) \
	  $(shell pkg-config --libs libprotobuf-c) -o $@
	ln -sf libkvclient.so.1 $(BUILD)/libkvclient.so

# pkg-config file for the client library, for PREFIX (make install's
# destination; the build tree's copy uses it too).
PREFIX ?= /usr/local
$(BUILD)/kvclient.pc: client/kvclient.pc.in Makefile
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

# kvd: the replica daemon.
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(SERVER_SRC))
KVD        := $(BUILD)/kvd

$(BUILD)/obj/server/%.o: server/%.c $(STAMP) | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(UV_CFLAGS) -DKV_VERSION='"$(VERSION)"' -c $< -o $@

$(KVD): $(SERVER_OBJ) $(CORE_LIB)
	$(CC) $(LDFLAGS) $(SERVER_OBJ) $(CORE_LIB) $(PKG_LIBS) $(UV_LIBS) -o $@

# kvctl: command-line client and local-cluster manager.
KVCTL := $(BUILD)/kvctl

$(BUILD)/obj/client/%.o: client/%.c $(STAMP) | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DKV_VERSION='"$(VERSION)"' -c $< -o $@

$(KVCTL): $(BUILD)/obj/client/kvctl.o $(BUILD)/obj/client/cluster.o $(CLIENT_LIB)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(CLIENT_LIB) $(shell pkg-config --libs libprotobuf-c) -o $@

# Unit tests: tests/unit/<module>_test.c, one binary each.
UNIT_SRC  := $(wildcard tests/unit/*_test.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
CRASH_BIN := $(BUILD)/tests/crash_test
# Integration tests: real kvd processes, through libkvclient.
INTEG_SRC := $(wildcard tests/integration/*_test.c)
INTEG_BIN := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRC))

$(BUILD)/obj/tests/%.o: tests/%.c $(STAMP) | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(CORE_LIB) $(PKG_LIBS) $(CMOCKA_LIBS) -o $@

$(CRASH_BIN): $(BUILD)/obj/tests/crash/crash_test.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(CORE_LIB) $(PKG_LIBS) -o $@

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o \
                              $(BUILD)/obj/tests/integration/harness.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(CMOCKA_LIBS) -o $@

# Benchmarks. kvbench is the client-side load generator (native protocol).
BENCH_BIN := $(BUILD)/bench/storage_bench
KVBENCH   := $(if $(wildcard bench/kvbench.c),$(BUILD)/kvbench)

$(BUILD)/kvbench: $(BUILD)/obj/bench/kvbench.o $(CLIENT_LIB)
	$(CC) $(LDFLAGS) $^ $(shell pkg-config --libs libprotobuf-c) -lpthread -lm -o $@

# Replication benchmarks' tools (bench/*-bench.sh drive them).
REPL_BENCH := $(BUILD)/dissem $(BUILD)/kvload

$(BUILD)/dissem: $(BUILD)/obj/bench/dissem.o $(CLIENT_LIB)
	$(CC) $(LDFLAGS) $^ $(shell pkg-config --libs libprotobuf-c) -lpthread -lm -o $@

$(BUILD)/kvload: $(BUILD)/obj/bench/kvload.o $(CLIENT_LIB)
	$(CC) $(LDFLAGS) $^ $(shell pkg-config --libs libprotobuf-c lmdb) -lpthread -lm -o $@

$(BUILD)/obj/bench/%.o: bench/%.c $(STAMP) | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(CORE_LIB) $(PKG_LIBS) -lm -o $@

_all: $(CORE_LIB) $(CLIENT_LIB) $(CLIENT_SO) $(BUILD)/kvclient.pc $(KVD) \
      $(KVCTL) $(UNIT_BIN) \
      $(CRASH_BIN) $(INTEG_BIN) $(BENCH_BIN) $(KVBENCH) $(REPL_BENCH)

_test: _all
	@KVD=$(abspath $(KVD)) KVCTL=$(abspath $(KVCTL)) \
	  tests/run.sh $(UNIT_BIN) $(CRASH_BIN) $(INTEG_BIN)

_bench: _all
	$(BENCH_BIN)

.SECONDARY:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
