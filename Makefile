# epikv build. Everything builds and tests from here (DESIGN.md §1).
#
# Public targets first check that every build dependency is present and
# install the missing ones with apt-get (once, non-interactively), then run
# the real work in a sub-make, so that pkg-config is asked only after the
# packages exist.
#
#   make            build everything into $(BUILD)
#   make test       build everything, then run the tests in four passes:
#                   plain, AddressSanitizer, UndefinedBehaviorSanitizer,
#                   and each fuzzer for FUZZ_TEST_SECONDS (a summary at the end)
#   make asan       build and run the tests under AddressSanitizer
#   make ubsan      build and run the tests under UndefinedBehaviorSanitizer
#   make fuzz       build the libFuzzer harnesses (tests/fuzz) with clang and
#                   run each for FUZZ_SECONDS on its corpus
#   make fuzz-corpus  regenerate the committed seed corpora (tests/fuzz/corpus)
#   make bench      build and run the benchmarks (figures go to bench/RESULTS.md by hand)
#   make sim SEEDS=N  N seeded runs of the simulator, tests/sim (default 1000)
#   make chaos      the long chaos test (tests/chaos): CHAOS_SECONDS of nemesis
#                   (default 900) and CHAOS_KILLS crash rounds (default 100)
#   make clean
#
# Variables: BUILD (output folder), SANITIZE (address|undefined), OPT,
# FUZZ_SECONDS, FUZZ_JOBS (fuzzers run at a time), TEST_PASSES.

BUILD    ?= build
VERSION  := 0.1.0
OPT      ?= -O2
SANITIZE ?=

PC_PKGS  := lmdb libxxhash libsodium libprotobuf-c libuv cmocka libmicrohttpd
APT_PKGS := liblmdb-dev libxxhash-dev libsodium-dev libprotobuf-c-dev \
            protobuf-c-compiler libcmocka-dev libuv1-dev libmicrohttpd-dev \
            pkg-config redis-tools clang libclang-rt-14-dev nftables iproute2

.PHONY: FORCE all test asan ubsan fuzz fuzz-corpus bench deps clean format \
        run stop _all _test _check _bench _fuzz _fuzz_corpus \
        _pass_plain _pass_asan _pass_ubsan _pass_fuzz \
        install uninstall _install sim _sim chaos _chaos

# The fuzzers: clang with libFuzzer, ASan and UBSan; every object of the
# fuzz build gets the coverage instrumentation (fuzzer-no-link).
FUZZ_CC      ?= clang
FUZZ_SAN     := fuzzer-no-link,address,undefined
FUZZ_SECONDS ?= 30
FUZZ_JOBS    ?= 1
FUZZ_MAKE     = _fuzz BUILD=$(BUILD)/fuzz CC=$(FUZZ_CC) SANITIZE=$(FUZZ_SAN) OPT=-O1

all: deps
	@$(MAKE) --no-print-directory _all

test: deps
	@$(MAKE) --no-print-directory _test

asan: deps
	@$(MAKE) --no-print-directory _check BUILD=$(BUILD)/asan SANITIZE=address OPT=-O1

ubsan: deps
	@$(MAKE) --no-print-directory _check BUILD=$(BUILD)/ubsan SANITIZE=undefined OPT=-O1

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_MAKE)

fuzz-corpus: deps
	@$(MAKE) --no-print-directory _fuzz_corpus

bench: deps
	@$(MAKE) --no-print-directory _bench

# make sim SEEDS=N: N seeded simulator runs (tests/sim), mixed scenarios.
sim: deps
	@$(MAKE) --no-print-directory _sim

# make chaos: the long form of tests/chaos (make test runs a short one).
chaos: deps
	@$(MAKE) --no-print-directory _chaos

run: deps
	@$(MAKE) --no-print-directory _all
	@KVD=$(BUILD)/kvd KVCTL=$(BUILD)/kvctl tools/run.sh start

stop:
	@tools/run.sh stop

# make install puts the binaries, header, libraries, pkg-config file and man
# pages under $(DESTDIR)$(PREFIX) (PREFIX defaults to /usr/local), building
# into $(BUILD) first whatever of them is missing or out of date. make
# uninstall removes those files (directories stay).
INSTALLED := bin/kvd bin/kvctl bin/kvbench include/kvclient.h \
             lib/libkvclient.a lib/libkvclient.so.1 lib/libkvclient.so \
             lib/pkgconfig/kvclient.pc share/man/man8/kvd.8 \
             share/man/man1/kvctl.1 share/man/man3/kvclient.3

install: deps
	@$(MAKE) --no-print-directory _install

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALLED))

# Installs only when something is missing; apt-get update runs first because a
# fresh Debian machine has empty package lists.
deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || \
	    ! pkg-config --exists $(PC_PKGS) || \
	    ! command -v protoc-c >/dev/null 2>&1 || \
	    ! command -v redis-benchmark >/dev/null 2>&1 || \
	    ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 || \
	    ! command -v $(FUZZ_CC) >/dev/null 2>&1 || \
	    ! [ -f "$$($(FUZZ_CC) --print-runtime-dir 2>/dev/null)/libclang_rt.fuzzer-$$(uname -m).a" ]; then \
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
PUBLIC := all test asan ubsan fuzz fuzz-corpus bench sim chaos deps clean format \
          run stop install uninstall
ifneq ($(filter-out $(PUBLIC),$(MAKECMDGOALS)),)
PKG_CFLAGS := $(shell pkg-config --cflags lmdb libxxhash libsodium libprotobuf-c)
PKG_LIBS   := $(shell pkg-config --libs lmdb libxxhash libsodium libprotobuf-c) -lpthread
UV_CFLAGS  := $(shell pkg-config --cflags libuv)
UV_LIBS    := $(shell pkg-config --libs libuv)
MHD_CFLAGS := $(shell pkg-config --cflags libmicrohttpd)
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd)
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

# The installed kvclient.pc is written for the PREFIX installed to (the
# build tree's copy keeps the PREFIX it was built with).
MAN_PAGES := man/kvd.8 man/kvctl.1 man/kvclient.3
INSTALL   ?= install
_install: $(KVD) $(KVCTL) $(KVBENCH) $(CLIENT_LIB) $(CLIENT_SO) \
          client/kvclient.h client/kvclient.pc.in $(MAN_PAGES)
	$(INSTALL) -d $(addprefix $(DESTDIR)$(PREFIX)/,bin include lib/pkgconfig \
	  share/man/man1 share/man/man3 share/man/man8)
	$(INSTALL) -m 755 $(KVD) $(KVCTL) $(KVBENCH) $(DESTDIR)$(PREFIX)/bin
	$(INSTALL) -m 644 client/kvclient.h $(DESTDIR)$(PREFIX)/include
	$(INSTALL) -m 644 $(CLIENT_LIB) $(DESTDIR)$(PREFIX)/lib
	$(INSTALL) -m 755 $(CLIENT_SO) $(DESTDIR)$(PREFIX)/lib
	ln -sf libkvclient.so.1 $(DESTDIR)$(PREFIX)/lib/libkvclient.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
	  client/kvclient.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvclient.pc
	$(INSTALL) -m 644 man/kvctl.1 $(DESTDIR)$(PREFIX)/share/man/man1
	$(INSTALL) -m 644 man/kvclient.3 $(DESTDIR)$(PREFIX)/share/man/man3
	$(INSTALL) -m 644 man/kvd.8 $(DESTDIR)$(PREFIX)/share/man/man8

# kvd: the replica daemon.
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(SERVER_SRC))
KVD        := $(BUILD)/kvd

$(BUILD)/obj/server/%.o: server/%.c $(STAMP) | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(UV_CFLAGS) $(MHD_CFLAGS) -DKV_VERSION='"$(VERSION)"' -c $< -o $@

# The metrics endpoint (server/metrics.c) serves HTTP with libmicrohttpd.
$(KVD): $(SERVER_OBJ) $(CORE_LIB)
	$(CC) $(LDFLAGS) $(SERVER_OBJ) $(CORE_LIB) $(PKG_LIBS) $(UV_LIBS) $(MHD_LIBS) -o $@

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
# The deterministic simulator (tests/sim), one binary; run without arguments
# it is the suite make test runs (fewer seeds under a sanitizer).
SIM_SRC   := $(wildcard tests/sim/*.c)
SIM_BIN   := $(if $(SIM_SRC),$(BUILD)/tests/sim)
SEEDS     ?= 1000
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

$(BUILD)/tests/sim: $(patsubst %.c,$(BUILD)/obj/%.o,$(SIM_SRC)) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(CORE_LIB) $(PKG_LIBS) -o $@

$(BUILD)/obj/tests/sim/main.o: CFLAGS += $(if $(SANITIZE),-DSIM_SANITIZED)

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o \
                              $(BUILD)/obj/tests/integration/harness.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(CMOCKA_LIBS) -o $@

# peer_attack_test seals its own envelopes (sync/seal, peer.proto), so it
# links the core library too, after libkvclient.a.
$(BUILD)/tests/integration/peer_attack_test: $(CORE_LIB)

# The chaos test's replicas driver, clients, nemesis and checker
# (tests/chaos/chaos.sh sets up the network namespaces and runs it).
CHAOS_BIN := $(if $(wildcard tests/chaos/chaos.c),$(BUILD)/tests/chaos)

ifneq ($(CHAOS_BIN),)
$(CHAOS_BIN): $(BUILD)/obj/tests/chaos/chaos.o $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(shell pkg-config --libs libprotobuf-c) -lpthread -o $@
endif

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
      $(KVCTL) $(UNIT_BIN) $(SIM_BIN) $(CHAOS_BIN) \
      $(CRASH_BIN) $(INTEG_BIN) $(BENCH_BIN) $(KVBENCH) $(REPL_BENCH)

# make test runs the passes in TEST_PASSES one after the other, each in its
# own sub-make so that one failing does not hide the others, then says which
# failed; any failure makes it exit non-zero.
TEST_PASSES       ?= plain asan ubsan fuzz
FUZZ_TEST_SECONDS ?= 30

# SOAK_TESTS are long and mostly idle (a 5-minute loss run in network
# namespaces, the short chaos run): once the plain pass has built kvd they
# start in the background, run while the other passes do, and are waited for
# at the end (their output is printed then) as the "soak" pass.
SOAK_TESTS ?= tests/netns/swim_loss_test.sh $(wildcard tests/chaos/chaos.sh)

_test:
	@t0=$$(date +%s); summary=; passed=0; failed=0; soak=; \
	rm -f $(BUILD)/soak.log $(BUILD)/soak.rc; \
	for p in $(TEST_PASSES); do \
	  echo; echo "######## make test: $$p pass"; s=$$(date +%s); \
	  if $(MAKE) --no-print-directory _pass_$$p; then \
	    r=ok; passed=$$((passed + 1)); \
	  else r=FAILED; failed=$$((failed + 1)); fi; \
	  summary="$$summary  $$p: $$r ($$(( $$(date +%s) - s ))s)\n"; \
	  echo "######## make test: $$p pass $$r"; \
	  if [ $$p = plain ] && [ -n "$(SOAK_TESTS)" ]; then \
	    echo "######## make test: soak tests started in the background: $(SOAK_TESTS)"; \
	    soak=$$(date +%s); \
	    ( KVD=$(abspath $(KVD)) KVCTL=$(abspath $(KVCTL)) \
	      tests/run.sh $(SOAK_TESTS) > $(BUILD)/soak.log 2>&1; \
	      echo $$? > $(BUILD)/soak.rc ) & \
	  fi; \
	done; \
	if [ -n "$$soak" ]; then \
	  echo; echo "######## make test: soak pass (waiting for it)"; wait; \
	  cat $(BUILD)/soak.log; \
	  if [ "$$(cat $(BUILD)/soak.rc 2>/dev/null)" = 0 ]; then \
	    r=ok; passed=$$((passed + 1)); \
	  else r=FAILED; failed=$$((failed + 1)); fi; \
	  summary="$$summary  soak: $$r ($$(( $$(date +%s) - soak ))s, beside the others)\n"; \
	  echo "######## make test: soak pass $$r"; \
	fi; \
	echo; echo "######## make test: summary ($$(( $$(date +%s) - t0 ))s)"; \
	printf "%b" "$$summary"; \
	echo "passes: $$passed passed, $$failed failed"; \
	[ $$failed -eq 0 ]

# The plain pass builds everything (benchmarks too, so they keep compiling);
# the sanitizer passes build only what the tests run.
_pass_plain: _all
	@$(MAKE) --no-print-directory _check

_pass_asan:
	@$(MAKE) --no-print-directory _check BUILD=$(BUILD)/asan SANITIZE=address OPT=-O1

_pass_ubsan:
	@$(MAKE) --no-print-directory _check BUILD=$(BUILD)/ubsan SANITIZE=undefined OPT=-O1

# The fuzz pass also builds the corpus generator (so that it keeps compiling)
# and says if the committed corpus is not what it writes now.
_pass_fuzz: $(FUZZ_CORPUS_GEN)
	@rm -rf $(BUILD)/fuzz-tools/corpus && \
	  $(FUZZ_CORPUS_GEN) $(BUILD)/fuzz-tools/corpus && \
	  diff -r -q tests/fuzz/corpus $(BUILD)/fuzz-tools/corpus >/dev/null || \
	  echo "note: tests/fuzz/corpus is not what tests/fuzz/mkcorpus.c writes" \
	    "now; run make fuzz-corpus and commit the result"
	@$(MAKE) --no-print-directory $(FUZZ_MAKE) FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) FUZZ_JOBS=2

# The tests of one build. SLOW_BIN run only in a build without a sanitizer:
# long-running tests, and tests whose checks do not hold under one (RSS
# bounds: ASan keeps freed memory in quarantine; tight timings). A test
# listed there is dropped from the sanitizer passes even if it is also in
# TEST_BIN. Under a sanitizer every process
# (tests, kvd, kvctl) writes its reports to SAN_LOG, and tests/run.sh fails
# a test binary during whose run a report appeared.
TEST_BIN  := $(UNIT_BIN) $(SIM_BIN) $(CRASH_BIN) $(INTEG_BIN)
SLOW_BIN  :=
CHECK_BIN  = $(if $(SANITIZE),$(filter-out $(SLOW_BIN),$(TEST_BIN)),\
               $(TEST_BIN) $(filter-out $(TEST_BIN),$(SLOW_BIN)) $(INSTALL_TEST))
# make install into a temporary prefix; builds without a sanitizer only. It
# calls make with this build's BUILD, so that it installs what is built.
INSTALL_TEST := tests/integration/install_test.sh
SAN_LOG   := $(abspath $(BUILD))/sanitizer-reports

_check: $(KVD) $(KVCTL) $(CHECK_BIN)
	@rm -rf $(SAN_LOG) && mkdir -p $(SAN_LOG)
	@KVD=$(abspath $(KVD)) KVCTL=$(abspath $(KVCTL)) KV_BUILD=$(BUILD) \
	  $(if $(SANITIZE),SAN_LOG=$(SAN_LOG) \
	    ASAN_OPTIONS=log_path=$(SAN_LOG)/asan:detect_leaks=1 \
	    UBSAN_OPTIONS=log_path=$(SAN_LOG)/ubsan:print_stacktrace=1) \
	  tests/run.sh $(CHECK_BIN)

# Fuzz harnesses, tests/fuzz/<name>_fuzz.c, built in the fuzz sub-make
# (FUZZ_MAKE) only. tests/fuzz/run.sh replays the seed corpora and the
# regression inputs, then fuzzes each harness for FUZZ_SECONDS.
FUZZ_SRC := $(wildcard tests/fuzz/*_fuzz.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/%,$(FUZZ_SRC))

$(BUILD)/%_fuzz: $(BUILD)/obj/tests/fuzz/%_fuzz.o $(CORE_LIB)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $< $(CORE_LIB) $(PKG_LIBS) -o $@

_fuzz: $(FUZZ_BIN)
	@tests/fuzz/run.sh $(BUILD) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_BIN)

# The seed corpora are generated, so they can be reproduced and updated
# when an encoding changes: `make fuzz-corpus`, then commit tests/fuzz/corpus.
FUZZ_CORPUS_GEN := $(BUILD)/fuzz-tools/mkcorpus

$(FUZZ_CORPUS_GEN): $(BUILD)/obj/tests/fuzz/mkcorpus.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(CORE_LIB) $(PKG_LIBS) -o $@

_fuzz_corpus: $(FUZZ_CORPUS_GEN)
	rm -rf tests/fuzz/corpus
	$(FUZZ_CORPUS_GEN) tests/fuzz/corpus

_sim: $(SIM_BIN)
	$(SIM_BIN) --seeds $(SEEDS)

CHAOS_SECONDS ?= 900
CHAOS_KILLS   ?= 100
_chaos: $(KVD) $(KVCTL) $(CHAOS_BIN)
	KVD=$(abspath $(KVD)) KVCTL=$(abspath $(KVCTL)) CHAOS=$(abspath $(CHAOS_BIN)) \
	  tests/chaos/chaos.sh --seconds $(CHAOS_SECONDS) --kills $(CHAOS_KILLS) \
	  $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

_bench: _all
	$(BENCH_BIN)

.SECONDARY:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
