# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The model fuzzer (fuzz/fuzz_model.c), included by the top Makefile.
#
#   make fuzz [FUZZ_SECONDS=60]  libFuzzer + ASan + UBSan build of the library and
#                                the harness (clang, in $(B)/fuzz/), run for
#                                FUZZ_SECONDS on a scratch copy of fuzz/corpus;
#                                crashes go to $(B)/fuzz/artifacts/ and fail the target
#   make fuzz-merge              adds the inputs of the scratch corpus that bring new
#                                coverage to fuzz/corpus (libFuzzer -set_cover_merge=1)
#   make fuzz-replay             the harness built with $(CC) $(CFLAGS) against
#                                $(B)/libumlmem.a, run once over fuzz/corpus and
#                                fuzz/regress: every seed and every input that once
#                                failed is a regression test
#
# FUZZ_ARGS passes more options to libFuzzer (e.g. FUZZ_ARGS="-jobs=2 -workers=2").
# The swap files go to FUZZ_TMPDIR: $TMPDIR, else /var/tmp, a real disk as
# in the tests (O_DIRECT and hole punching behave there as in use); on this
# machine /dev/shm was no faster.

DEB_PKGS += clang libclang-rt-14-dev

FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_ARGS    ?=
FUZZ_TMPDIR  ?= $(or $(TMPDIR),/var/tmp)
FUZZ_DIR     := $(B)/fuzz
FUZZ_BIN     := $(FUZZ_DIR)/fuzz_model
FUZZ_CFLAGS  := -std=gnu11 -O1 -g -fno-omit-frame-pointer -pthread \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-Iinclude -Iumlmem -Iswapfiles -Idedup
FUZZ_LIB_SRC := $(wildcard umlmem/*.c) $(wildcard swapfiles/*.c) $(wildcard dedup/*.c)
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(FUZZ_LIB_SRC))
FUZZ_HDRS    := $(wildcard include/*.h umlmem/*.h swapfiles/*.h dedup/*.h)
FUZZ_REPLAY  := $(B)/fuzz_replay

.PHONY: fuzz fuzz-build fuzz-merge fuzz-replay

$(FUZZ_DIR)/obj/%.o: %.c $(FUZZ_HDRS) | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_DIR)/obj/swapfiles/hash_avx2.o: FUZZ_CFLAGS += -mavx2

$(FUZZ_BIN): $(FUZZ_DIR)/obj/fuzz/fuzz_model.o $(FUZZ_LIB_OBJ)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(LIBS)

fuzz-build: deps $(FUZZ_BIN)

# The committed corpus is copied into corpus-work, which keeps what earlier
# runs found; nothing is written to fuzz/. fuzz/regress is not a seed here:
# an input of a bug still open would stop every run at its first step, and
# fuzz-replay runs those inputs anyway.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/corpus-work $(FUZZ_DIR)/artifacts
	$(Q)cp -n fuzz/corpus/* $(FUZZ_DIR)/corpus-work/ 2>/dev/null || true
	TMPDIR=$(FUZZ_TMPDIR) $(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=20 \
	  -max_len=4096 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/ \
	  $(FUZZ_ARGS) $(FUZZ_DIR)/corpus-work

# Greedy set cover: the fewest inputs of corpus-work that add to what
# fuzz/corpus covers (edges and hit-count buckets); look at how many came
# before committing them.
fuzz-merge: fuzz-build
	@mkdir -p $(FUZZ_DIR)/corpus-work
	TMPDIR=$(FUZZ_TMPDIR) $(FUZZ_BIN) -set_cover_merge=1 -timeout=20 -max_len=4096 \
	  fuzz/corpus $(FUZZ_DIR)/corpus-work
	@echo "fuzz-merge: fuzz/corpus now holds $$(ls fuzz/corpus | wc -l) inputs"

$(FUZZ_REPLAY): fuzz/fuzz_model.c fuzz/replay.c $(B)/libumlmem.a $(FUZZ_HDRS) | deps
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ fuzz/fuzz_model.c fuzz/replay.c $(B)/libumlmem.a $(LDFLAGS) $(LIBS)

fuzz-replay: $(FUZZ_REPLAY)
	TMPDIR=$(FUZZ_TMPDIR) $(FUZZ_REPLAY) fuzz/corpus fuzz/regress

# The image parser (fuzz/fuzz_image.c): any bytes as an image file.
#   make fuzz-image [FUZZ_SECONDS=60]  libFuzzer run on a scratch copy of fuzz/image-corpus
#   make fuzz-image-replay             the seeds, built with $(CC) (part of fuzz-replay)
FUZZ_IMG_BIN    := $(FUZZ_DIR)/fuzz_image
FUZZ_IMG_REPLAY := $(B)/fuzz_image_replay

.PHONY: fuzz-image fuzz-image-replay

$(FUZZ_IMG_BIN): $(FUZZ_DIR)/obj/fuzz/fuzz_image.o $(FUZZ_LIB_OBJ)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(LIBS)

fuzz-image: deps $(FUZZ_IMG_BIN)
	@mkdir -p $(FUZZ_DIR)/image-corpus-work $(FUZZ_DIR)/artifacts
	$(Q)cp -n fuzz/image-corpus/* $(FUZZ_DIR)/image-corpus-work/ 2>/dev/null || true
	$(FUZZ_IMG_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=20 -max_len=16384 \
	  -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/ \
	  $(FUZZ_ARGS) $(FUZZ_DIR)/image-corpus-work

$(FUZZ_IMG_REPLAY): fuzz/fuzz_image.c fuzz/replay.c $(B)/libumlmem.a $(FUZZ_HDRS) | deps
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ fuzz/fuzz_image.c fuzz/replay.c $(B)/libumlmem.a $(LDFLAGS) $(LIBS)

fuzz-image-replay: $(FUZZ_IMG_REPLAY)
	$(FUZZ_IMG_REPLAY) fuzz/image-corpus

fuzz-replay: fuzz-image-replay
