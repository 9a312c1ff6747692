# SPDX-License-Identifier: LGPL-2.1-or-later
#
# umlmem: plain Makefile. Everything built goes to build/.
#
#   make            library (build/libumlmem.a, .so) and the command build/umlmem
#   make test       the Criterion suite, then the same suite under Valgrind memcheck,
#                   the install check, small demo runs (copy and native mode)
#                   and the fuzzer's corpus and regressions
#   make asan, ubsan, tsan   the suite under the sanitizers (.ci/run runs asan and tsan)
#   make fuzz       the model fuzzer for FUZZ_SECONDS (default 60)
#   make unicorn-demo, kvm-demo   native-mode clients
#   make demo       the overcommit demo
#   make install    PREFIX=/usr/local DESTDIR=
#   make deps       installs missing Debian packages (apt-get); make and make test call it
#   V=1             show the commands
#
# CFLAGS is yours: `make CFLAGS="-O0 -g"`; the flags the build needs are added.

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
DESTDIR ?=

CC      ?= cc
CFLAGS  ?= -O2 -g
B       ?= build
VERSION := 0.1.0
SOVER   := 0

override CFLAGS += -std=gnu11 -Wall -Wextra -pthread -fPIC -Iinclude -Iumlmem -Iswapfiles -Idedup
LIBS    := -luring -laio -lxxhash -pthread

ifeq ($(V),1)
Q :=
else
Q := @
endif

# Debian packages the build and the tests need, and the command that shows
# each one is there.
DEB_PKGS := gcc make pkg-config liburing-dev libaio-dev libcriterion-dev libxxhash-dev valgrind

LIB_SRC := $(wildcard umlmem/*.c) $(wildcard swapfiles/*.c) $(wildcard dedup/*.c)
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
CLI_SRC := $(wildcard demos/*.c)
CLI_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(CLI_SRC))
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(TEST_SRC))

.PHONY: test-native-demos
.PHONY: all deps lib test test-plain test-valgrind test-install test-cli traces replay-table demo install uninstall clean bench asan ubsan tsan

all: deps lib $(B)/umlmem

lib: $(B)/libumlmem.a $(B)/libumlmem.so

# Does nothing (one dpkg-query) when every package is there.
deps:
	$(Q)missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to install:$$missing (or install them yourself)" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

$(B)/obj/%.o: %.c $(wildcard include/*.h umlmem/*.h swapfiles/*.h dedup/*.h tests/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# The AVX2 copy of the page hash, chosen at run time where the CPU has it.
$(B)/obj/swapfiles/hash_avx2.o: override CFLAGS += -mavx2

$(B)/libumlmem.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/libumlmem.so: $(LIB_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -shared -Wl,-soname,libumlmem.so.$(SOVER) -o $@ $^ $(LDFLAGS) $(LIBS)

$(B)/umlmem: $(CLI_OBJ) $(B)/libumlmem.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/libumlmem.a $(LDFLAGS) $(LIBS) -lm

$(B)/test_umlmem: $(TEST_OBJ) $(B)/libumlmem.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(B)/libumlmem.a $(LDFLAGS) $(LIBS) -lcriterion

# The suite twice: natively, then under memcheck. Criterion runs each test
# in a child process and ignores how the child exits once it has reported,
# so valgrind's exit code cannot be trusted for the tests themselves: every
# process logs to its own file and any non-empty log fails the run.
# TEST_ARGS passes options to Criterion (e.g. TEST_ARGS="--filter 'model/*'").
VG_LOGS := $(B)/valgrind
test: all test-plain test-valgrind test-install test-cli test-native-demos fuzz-replay

test-plain: $(B)/test_umlmem
	$(B)/test_umlmem -j2 $(TEST_ARGS)

test-valgrind: $(B)/test_umlmem
	@rm -rf $(VG_LOGS) && mkdir -p $(VG_LOGS)
	UMLMEM_TEST_SCALE=valgrind valgrind -q --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
	  --trace-children=yes --suppressions=tests/valgrind.supp \
	  --log-file=$(VG_LOGS)/%p.log $(B)/test_umlmem -j2 $(TEST_ARGS)
	@bad=$$(find $(VG_LOGS) -name '*.log' -size +0 | sort); \
	if [ -n "$$bad" ]; then \
	  for f in $$bad; do echo "== $$f"; cat $$f; done; \
	  echo "valgrind: errors in $$(echo $$bad | wc -w) process(es); logs in $(VG_LOGS)" >&2; exit 1; \
	else echo "valgrind: memcheck clean"; fi

# Installs into build/inst and builds examples/hello.c the way the README
# tells a user to: cc prog.c $(pkg-config --cflags --libs --static umlmem).
INST := $(abspath $(B))/inst
test-install: lib $(B)/umlmem
	@rm -rf $(INST)
	$(Q)$(MAKE) -s install PREFIX=$(INST) >/dev/null
	$(Q)PKG_CONFIG_PATH=$(INST)/lib/pkgconfig $(CC) -Wall -Wextra -Werror -o $(B)/hello \
	  examples/hello.c $$(PKG_CONFIG_PATH=$(INST)/lib/pkgconfig pkg-config --cflags --libs --static umlmem)
	$(Q)LD_LIBRARY_PATH=$(INST)/lib $(B)/hello | grep -qx hello
	@echo "install: examples/hello.c builds against the installed umlmem.pc and runs"

# Native-mode clients (unicorn, KVM) and the fuzzer: each keeps its rules
# beside its sources.
-include $(wildcard demos/native/*.mk fuzz/*.mk)

# Sanitizer builds, each in its own build directory, running the suite.
# TSan runs the threaded subjects with background reclaim on.
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer
asan: deps
	LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp $(LSAN_OPTIONS)" $(MAKE) B=$(B)/asan CFLAGS="$(SAN_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  TEST_ARGS="$(TEST_ARGS)" test-plain
ubsan: deps
	$(MAKE) B=$(B)/ubsan CFLAGS="$(SAN_FLAGS) -fsanitize=undefined -fno-sanitize-recover=all" \
	  TEST_ARGS="$(TEST_ARGS)" test-plain
# Criterion's sandbox cannot start under ThreadSanitizer, so the TSan build
# runs the threaded subjects through tests/crshim.h, in one process.
TSAN_TESTS := tests/test_threads.c tests/test_native.c tests/shim/main.c
TSAN_TESTS += tests/test_memory.c
# the threaded subjects: every threads test, and the native tests where
# threads share views (the others run single-threaded code, slowly, here)
TSAN_FILTER ?= --filter='threads/*' --filter='native/threads*' --filter='native/race*' \
	       --filter='native/coherence' --filter='native/cleanup' \
	       --filter='memory/background*'
tsan: deps
	$(MAKE) B=$(B)/tsan CFLAGS="$(SAN_FLAGS) -fsanitize=thread" $(B)/tsan/libumlmem.a
	$(CC) -std=gnu11 -Wall -Wextra -Wno-format-zero-length $(SAN_FLAGS) -fsanitize=thread -pthread -DUMLMEM_CRSHIM \
	  -Iinclude -Iumlmem -Iswapfiles -Idedup -Itests -o $(B)/tsan/test_threads $(TSAN_TESTS) \
	  $(B)/tsan/libumlmem.a $(LIBS)
	TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$(CURDIR)/tests/tsan.supp $(TSAN_OPTIONS)" $(B)/tsan/test_threads $(TSAN_FILTER) $(TEST_ARGS)

# The command's own checks, small: a demo of 4 guests with merging and
# swapping, and a few seconds of the threaded stress test; each verifies
# every byte it wrote and exits non-zero otherwise.
test-cli: $(B)/umlmem
	$(B)/umlmem demo --quiet --guests 4 --guest-size 64M --budget 32M --os-bytes 16M
	$(B)/umlmem demo --quiet --guests 4 --guest-size 64M --budget 8M --os-bytes 16M --no-dedup
	$(B)/umlmem stress --quiet --seconds 3 --dedup --background

# The native-mode clients, small: unicorn and KVM guests on umlmem views,
# every result checked (each is skipped, with the reason, where native
# mode or /dev/kvm is missing).
test-native-demos:
	$(Q)$(MAKE) -s unicorn-demo UNICORN_DEMO_ARGS="--guests 4 --ram 64M --array 1M --timeout 300 --quiet"
	$(Q)$(MAKE) -s kvm-demo KVM_DEMO_ARGS="--guests 4 --ram 256M --array 4M"

# Real programs' page-reference traces (valgrind lackey) into build/traces/,
# and the table of umlmem's faults on them next to exact LRU and MIN.
traces: all
	demos/traces/record.sh
replay-table: all
	demos/replay-table.sh

demo: all
	$(B)/umlmem demo

bench: all
	$(B)/umlmem bench --json $(BENCH_ARGS)

install: lib $(B)/umlmem
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/umlmem.h $(DESTDIR)$(INCDIR)/umlmem.h
	install -m 644 $(B)/libumlmem.a $(DESTDIR)$(LIBDIR)/libumlmem.a
	install -m 755 $(B)/libumlmem.so $(DESTDIR)$(LIBDIR)/libumlmem.so.$(VERSION)
	ln -sf libumlmem.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libumlmem.so.$(SOVER)
	ln -sf libumlmem.so.$(SOVER) $(DESTDIR)$(LIBDIR)/libumlmem.so
	install -m 755 $(B)/umlmem $(DESTDIR)$(BINDIR)/umlmem
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' umlmem.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/umlmem.pc

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/umlmem.h $(DESTDIR)$(LIBDIR)/libumlmem.* \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/umlmem.pc $(DESTDIR)$(BINDIR)/umlmem

clean:
	rm -rf $(B)
