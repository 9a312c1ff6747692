# SPDX-License-Identifier: LGPL-2.1-or-later
#
# umlmem: plain Makefile. Everything built goes to build/.
#
#   make            library (build/libumlmem.a, .so) and the command build/umlmem
#   make test       the Criterion suite, then the same suite under Valgrind memcheck,
#                   the install check, small demo runs (copy and native mode)
#                   and the fuzzer's corpus and regressions
#   make test-abi   what the shared library exports, under which version (part of make test)
#   make asan, ubsan, tsan   the suite under the sanitizers (.ci/run runs asan and tsan)
#   make debug-test  the model and threaded tests on a UMLMEM_DEBUG=1 build (invariants
#                   checked after every call; .ci/run runs it)
#   make fuzz       the model fuzzer for FUZZ_SECONDS (default 60)
#   make unicorn-demo, kvm-demo   native-mode clients
#   make demo       the overcommit demo
#   make install    PREFIX=/usr/local DESTDIR=
#   make man        the man pages (man/*.scd, scdoc) into build/man
#   make deb        the Debian packages into build/deb (dpkg-buildpackage, lintian)
#   make deps       installs missing Debian packages (apt-get); make and make test call it
#   V=1             show the commands
#
# CFLAGS is yours: `make CFLAGS="-O0 -g"`; the flags the build needs are added.

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=

CC      ?= cc
CFLAGS  ?= -O2 -g
B       ?= build
# The version has one source, include/umlmem.h; the soname follows the
# major number (libumlmem.so.0 through the 0.x releases).
umlmem_version_part = $(shell sed -n 's/^\#define UMLMEM_VERSION_$(1) *\([0-9][0-9]*\).*/\1/p' include/umlmem.h)
VERSION := $(call umlmem_version_part,MAJOR).$(call umlmem_version_part,MINOR).$(call umlmem_version_part,PATCH)
SOVER   := $(call umlmem_version_part,MAJOR)

override CFLAGS += -std=gnu11 -Wall -Wextra -pthread -fPIC -fvisibility=hidden -Iinclude -Iumlmem -Iswapfiles -Idedup
LIBS    := -luring -laio -lxxhash -llz4 -lzstd -lnbd -pthread
# swap encryption (swapfiles/seal.c): libsodium for the key, randomness and
# ChaCha20-Poly1305; OpenSSL's libcrypto for AES-256-GCM, twice as fast
LIBS    += -lsodium -lcrypto

ifeq ($(V),1)
Q :=
else
Q := @
endif

# Debian packages the build and the tests need, and the command that shows
# each one is there.
DEB_PKGS := gcc make pkg-config lld liburing-dev libaio-dev libcriterion-dev libxxhash-dev liblz4-dev libzstd-dev valgrind
# the man pages and the Debian packages (make man, deb, test-man, test-deb)
DEB_PKGS += scdoc man-db dpkg-dev debhelper fakeroot lintian
# swap encryption (swapfiles/seal.c)
DEB_PKGS += libsodium-dev libssl-dev
# swap on an NBD export (libnbd), and the server its tests start (nbdkit)
DEB_PKGS += libnbd-dev nbdkit

LIB_SRC := $(wildcard umlmem/*.c) $(wildcard swapfiles/*.c) $(wildcard dedup/*.c)
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
# The command: demos/umlmem.c, the shared harness in demos/common/ and one
# folder per subcommand (demos/native has its own rules, native.mk).
CLI_SRC := $(filter-out demos/native/% demos/traces/%,$(wildcard demos/*.c demos/*/*.c))
CLI_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(CLI_SRC))
CLI_HDR := $(filter-out demos/native/% demos/traces/%,$(wildcard demos/*.h demos/*/*.h)) umlmem/testing.h
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(TEST_SRC))

.PHONY: test-native-demos
.PHONY: debug-test
.PHONY: all deps lib test test-plain test-valgrind test-abi test-install test-cli traces replay-table demo install uninstall clean bench asan ubsan tsan asan-full

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

# deps is order-only everywhere something is compiled: it runs once, before
# the compiler, also under -j (a prerequisite of all alone would race it).
$(B)/obj/%.o: %.c $(wildcard include/*.h umlmem/*.h swapfiles/*.h dedup/*.h tests/*.h) | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(CLI_OBJ): override CFLAGS += -Idemos -Idemos/common
$(CLI_OBJ): $(CLI_HDR)

# The AVX2 copy of the page hash, chosen at run time where the CPU has it.
$(B)/obj/swapfiles/hash_avx2.o: override CFLAGS += -mavx2

$(B)/libumlmem.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# Exports: what umlmem.map lists (the UMLMEM_API calls), with its versions.
# Linked by lld: GNU ld and gold also export each version node as an
# absolute symbol (UMLMEM_0.1 ...), which is not a call; lld writes the
# nodes only where they belong, in the version definitions.
$(B)/libumlmem.so: $(LIB_OBJ) umlmem.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -fuse-ld=lld -shared -Wl,-soname,libumlmem.so.$(SOVER) \
	  -Wl,--version-script=umlmem.map \
	  -o $@ $(LIB_OBJ) $(LDFLAGS) $(LIBS)
	$(Q)ln -sf libumlmem.so $(B)/libumlmem.so.$(SOVER)

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
test: all test-plain test-valgrind test-abi test-install test-cli test-native-demos fuzz-replay
test: test-man test-deb

test-plain: $(B)/test_umlmem
	$(B)/test_umlmem -j2 $(TEST_ARGS)

test-valgrind: $(B)/test_umlmem
	@rm -rf $(VG_LOGS) && mkdir -p $(VG_LOGS)
	UMLMEM_TEST_SCALE=valgrind valgrind -q --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
	  --trace-children=yes --trace-children-skip='*/nbdkit' --suppressions=tests/valgrind.supp \
	  --log-file=$(VG_LOGS)/%p.log $(B)/test_umlmem -j2 $(TEST_ARGS)
	@bad=$$(find $(VG_LOGS) -name '*.log' -size +0 | sort); \
	if [ -n "$$bad" ]; then \
	  for f in $$bad; do echo "== $$f"; cat $$f; done; \
	  echo "valgrind: errors in $$(echo $$bad | wc -w) process(es); logs in $(VG_LOGS)" >&2; exit 1; \
	else echo "valgrind: memcheck clean"; fi

# The shared library's interface: exports and their version nodes against
# umlmem.map and the header (tests/abi/check-exports.sh), the version a
# program sees at run time against the one the build derived, a program
# built against the 0.1 header (which must bind only UMLMEM_0.1 symbols),
# and structs of other sizes than this header's.
ABI_TESTS := $(B)/abi/version $(B)/abi/old-client $(B)/abi/sized
test-abi: $(B)/libumlmem.so $(ABI_TESTS)
	$(Q)CC="$(CC)" sh tests/abi/check-exports.sh $(B)/libumlmem.so include/umlmem.h umlmem.map
	$(Q)LD_LIBRARY_PATH=$(B) $(B)/abi/version $(VERSION)
	$(Q)newer=$$(objdump -T $(B)/abi/old-client | awk '/umlmem_/ && !/[(]UMLMEM_0[.]1[)]/'); \
	if [ -n "$$newer" ]; then echo "test-abi: the 0.1 program binds symbols newer than 0.1:" >&2; \
	  echo "$$newer" >&2; exit 1; fi
	$(Q)LD_LIBRARY_PATH=$(B) $(B)/abi/old-client
	$(Q)LD_LIBRARY_PATH=$(B) $(B)/abi/sized

$(B)/abi/%: tests/abi/%.c $(wildcard tests/abi/*.h) include/umlmem.h $(B)/libumlmem.so | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< -L$(B) -lumlmem

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
# The suite under ASan runs at the reduced scale of the Valgrind run
# (UMLMEM_TEST_SCALE=valgrind: loops that only add confidence shrunk), so
# that CI stays well under its time limit; `make asan-full` runs it at full scale.
asan-full:
	$(MAKE) asan ASAN_SCALE=
ASAN_SCALE ?= valgrind
asan: deps
	UMLMEM_TEST_SCALE=$(ASAN_SCALE) LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp $(LSAN_OPTIONS)" $(MAKE) B=$(B)/asan CFLAGS="$(SAN_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  TEST_ARGS="$(TEST_ARGS)" test-plain
ubsan: deps
	$(MAKE) B=$(B)/ubsan CFLAGS="$(SAN_FLAGS) -fsanitize=undefined -fno-sanitize-recover=all" \
	  TEST_ARGS="$(TEST_ARGS)" test-plain
# The debug build: UMLMEM_DEBUG=1 runs host_check at the end of every call
# that may change state and aborts on a violation; the model test, the clone
# tests and the threaded tests run on it (not threads/background_refills,
# which times how fast the reclaim thread refills, and the checks slow every
# call).
debug-test: deps
	$(MAKE) B=$(B)/debug CFLAGS="$(CFLAGS) -DUMLMEM_DEBUG=1" $(B)/debug/test_umlmem
	$(B)/debug/test_umlmem -j2 --filter='model/*' $(TEST_ARGS)
	$(B)/debug/test_umlmem -j2 --filter='threads/!(background_refills)' $(TEST_ARGS)
	$(B)/debug/test_umlmem -j2 --filter='clone/*' $(TEST_ARGS)
	$(B)/debug/test_umlmem -j2 --filter='image/*' $(TEST_ARGS)
# Criterion's sandbox cannot start under ThreadSanitizer, so the TSan build
# runs the threaded subjects through tests/crshim.h, in one process.
TSAN_TESTS := tests/test_threads.c tests/test_native.c tests/shim/main.c
TSAN_TESTS += tests/test_memory.c
TSAN_TESTS += tests/test_interference.c
TSAN_TESTS += tests/test_clone.c
# the threaded subjects: every threads test, and the native tests where
# threads share views (the others run single-threaded code, slowly, here)
TSAN_FILTER ?= --filter='threads/*' --filter='native/threads*' --filter='native/race*' \
	       --filter='native/coherence' --filter='native/cleanup' \
	       --filter='memory/background*' \
	       --filter='clone/while*'
# encrypted swap: sealing from several threads, write-outs under readers
TSAN_TESTS += tests/test_crypt.c
TSAN_FILTER += --filter='crypt/seal_threads' --filter='crypt/threads*'
# swap on NBD: faults of several threads sharing connections
TSAN_TESTS += tests/test_nbd.c
TSAN_FILTER += --filter='nbd/threads'
tsan: deps
	$(MAKE) B=$(B)/tsan CFLAGS="$(SAN_FLAGS) -fsanitize=thread" $(B)/tsan/libumlmem.a
	$(CC) -std=gnu11 -Wall -Wextra -Wno-format-zero-length $(SAN_FLAGS) -fsanitize=thread -pthread -DUMLMEM_CRSHIM \
	  -Iinclude -Iumlmem -Iswapfiles -Idedup -Itests -o $(B)/tsan/test_threads $(TSAN_TESTS) \
	  $(B)/tsan/libumlmem.a $(LIBS)
	TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$(CURDIR)/tests/tsan.supp $(TSAN_OPTIONS)" $(B)/tsan/test_threads $(TSAN_FILTER) $(TEST_ARGS)

# The command's own checks, small: a demo of 4 guests with merging and
# swapping (booted, and cloned from one), and a few seconds of the threaded stress test; each verifies
# every byte it wrote and exits non-zero otherwise. Then the bench harness
# on figures that touch nothing outside the process (hit reads check that
# umlmem_read and memcpy read the same bytes; pageout_seq writes through
# the raw disk of umlmem/testing.h): exit 1 if one is not measured, and a
# mistake on its command line must exit 2.
test-cli: $(B)/umlmem
	$(B)/umlmem demo --quiet --guests 4 --guest-size 64M --budget 32M --os-bytes 16M
	$(B)/umlmem demo --quiet --guests 4 --guest-size 64M --budget 8M --os-bytes 16M --no-dedup
	$(B)/umlmem demo --quiet --guests 4 --guest-size 64M --budget 8M --os-bytes 16M --no-dedup --compress lz4
	$(B)/umlmem demo --quiet --guests 4 --guest-size 64M --budget 8M --os-bytes 16M --clone
	$(B)/umlmem stress --quiet --seconds 3 --dedup --background
	$(B)/umlmem bench --quick --json --only hit_read_8b,hit_read_4k,pageout_seq \
	  >$(B)/bench-cli.json 2>/dev/null
	$(Q)grep -q '"pageout_seq": {"value"' $(B)/bench-cli.json
	$(Q)$(B)/umlmem bench --only no_such_figure 2>/dev/null; test $$? = 2

# The native-mode clients, small: unicorn and KVM guests on umlmem views,
# every result checked (each is skipped, with the reason, where native
# mode or /dev/kvm is missing).
test-native-demos:
	$(Q)$(MAKE) -s unicorn-demo UNICORN_DEMO_ARGS="--guests 4 --ram 64M --array 1M --timeout 300 --restore 2 --quiet"
	$(Q)$(MAKE) -s kvm-demo KVM_DEMO_ARGS="--guests 4 --ram 256M --array 4M --restore 2"

# Real programs' page-reference traces (valgrind lackey) into build/traces/,
# and the table of umlmem's faults on them next to exact LRU and MIN.
# the programs record.sh traces, installed like DEB_PKGS
TRACE_PKGS := valgrind gzip coreutils sqlite3 python3 gcc xz-utils lua5.4
traces: all
	$(Q)$(MAKE) -s deps DEB_PKGS="$(TRACE_PKGS)"
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

# ---- man pages ------------------------------------------------------------
# One scdoc source per page in man/; a page documents every name of its NAME
# line, and each name other than its own gets a link page (".so man3/...")
# that man/links.sh lists. $(B)/man is a man hierarchy (man1/, man3/):
# `man -M build/man umlmem_write` reads the pages before they are installed.
# .nh after .TH: the man macros' .TH turns hyphenation on again, and a
# call's name broken across lines cannot be searched for.
MAN_SRC  := $(wildcard man/*.scd)
man_path  = man$(subst .,,$(suffix $(1)))/$(1)
MAN_REL  := $(foreach f,$(MAN_SRC),$(call man_path,$(basename $(notdir $(f)))))
MAN_OUT  := $(addprefix $(B)/man/,$(MAN_REL))

.PHONY: man install-man uninstall-man test-man deb test-deb
man: $(MAN_OUT) $(B)/man/.links

define scdoc_page
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  SCDOC   $<")
	$(Q)sed 's/@VERSION@/$(VERSION)/g' $< | scdoc > $@.roff || { rm -f $@.roff; exit 1; }
	$(Q)sed '/^\.TH /a .nh' $@.roff > $@ && rm -f $@.roff
endef
$(B)/man/man1/%: man/%.scd Makefile
	$(scdoc_page)
$(B)/man/man3/%: man/%.scd Makefile
	$(scdoc_page)

$(B)/man/.links: $(MAN_SRC) man/links.sh
	@mkdir -p $(dir $@)
	$(Q)man/links.sh $(MAN_SRC) > $@.tmp
	$(Q)while read alias page; do \
	  sec=$${page##*.}; mkdir -p $(B)/man/man$$sec && \
	  echo ".so man$$sec/$$page" > $(B)/man/man$$sec/$$alias || exit 1; \
	done < $@.tmp
	$(Q)mv $@.tmp $@

install: install-man
uninstall: uninstall-man
install-man: man
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	for p in $(MAN_REL) $$(for a in $$(cut -d' ' -f1 $(B)/man/.links); do \
	    echo man$${a##*.}/$$a; done); do \
	  install -m 644 $(B)/man/$$p $(DESTDIR)$(MANDIR)/$$p || exit 1; \
	done
uninstall-man:
	for p in $(MAN_REL) $$(for a in $$(man/links.sh $(MAN_SRC) | cut -d' ' -f1); do \
	    echo man$${a##*.}/$$a; done); do \
	  rm -f $(DESTDIR)$(MANDIR)/$$p; \
	done

# Every public function of the header has a page, every page renders
# without a warning and has its sections, umlmem(1) covers every command
# and option of build/umlmem.
test-man: man $(B)/umlmem
	$(Q)B=$(B) CC="$(CC)" tests/pkg/check-man.sh

# ---- Debian packages --------------------------------------------------------
# dpkg-buildpackage writes its packages next to the source tree it builds,
# so it builds a copy of the tracked files in $(B)/deb/umlmem-VERSION, and
# the packages land in $(B)/deb. The packages are checked with lintian;
# an error fails the build. MAKEFLAGS is not passed on: the packages are
# built with Debian's flags, not with this make's command line.
DEB_DIR     := $(B)/deb
DEB_VERSION  = $(shell dpkg-parsechangelog -l debian/changelog -S Version)
deb: deps
	@rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/umlmem-$(DEB_VERSION)
	$(Q)if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git ls-files -z | tar --null -T - --ignore-failed-read -cf - ; \
	else \
	  tar --exclude=./$(B) --exclude=./.git -cf - . ; \
	fi | tar -xf - -C $(DEB_DIR)/umlmem-$(DEB_VERSION)
	cd $(DEB_DIR)/umlmem-$(DEB_VERSION) && \
	  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -us -uc -b -j2
	cd $(DEB_DIR) && lintian --fail-on error --display-level '>=warning' \
	  umlmem_$(DEB_VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).changes

# The packages unpacked (dpkg -x) into $(B)/deb/root: their contents, and
# examples/hello.c built against them with their umlmem.pc and run.
test-deb: deb man
	$(Q)B=$(B) CC="$(CC)" VERSION=$(VERSION) DEB_VERSION=$(DEB_VERSION) tests/pkg/test-deb.sh
