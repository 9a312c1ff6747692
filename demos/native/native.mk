# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Native-mode demos' guest image and the unicorn client. Included by the
# top Makefile, so paths are from the repository root and B, CC, CFLAGS,
# LIBS and Q are the main build's.
#
#   make unicorn-demo       builds build/umlmem-unicorn and runs a small case
#   build/umlmem-unicorn    the program (umlmem-unicorn --help)
#   build/native/guest.bin  the guest image (also run by the KVM demo);
#                           `make native-guest` builds just that
#
# The guest is built with its own flags, none of CFLAGS: it has no libc,
# no red zone (nothing guarantees an interrupt or exception never lands on
# its stack under KVM), no SSE (no one sets up the FPU state) and no
# position independence (it is linked at one address and loaded there).

DEB_PKGS += libunicorn-dev binutils

NATIVE_GUEST_CFLAGS := -m64 -ffreestanding -fno-pic -fno-pie -mno-red-zone -mgeneral-regs-only \
	-nostdlib -static -O2 -fno-builtin -fno-tree-loop-distribute-patterns \
	-fno-stack-protector -fno-asynchronous-unwind-tables -fcf-protection=none \
	-std=gnu11 -Wall -Wextra -Idemos/native/guest
NATIVE_GUEST_SRC := demos/native/guest/start.S demos/native/guest/work.c
NATIVE_GUEST_DEPS := $(NATIVE_GUEST_SRC) demos/native/guest/work.h demos/native/guest/guest.ld

.PHONY: unicorn-demo native-guest

native-guest: $(B)/native/guest.bin

$(B)/native/guest.elf: $(NATIVE_GUEST_DEPS) | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(NATIVE_GUEST_CFLAGS) -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments \
	  -Wl,-T,demos/native/guest/guest.ld -o $@ $(NATIVE_GUEST_SRC)

$(B)/native/guest.bin: $(B)/native/guest.elf
	@$(if $(Q),echo "  OBJCOPY $@")
	$(Q)objcopy -O binary $< $@

# The host program's view of the image: where the guest halts.
$(B)/native/guest-syms.h: $(B)/native/guest.elf
	@$(if $(Q),echo "  GEN     $@")
	$(Q)nm $< | awk '$$3 == "guest_halt" { h = $$1 } \
	  END { if (!h) exit 1; print "/* generated from guest.elf by native.mk */"; \
	        print "#define GUEST_HALT_GPA 0x" h "ull" }' > $@.tmp && mv $@.tmp $@

# The image goes into the program (.incbin of GUEST_BIN), so it runs from
# anywhere. work.c is compiled a second time, for the host: the expected
# results. demos/common/cli.c and common.c: helpers shared with the umlmem command
# and with the KVM demo (kvm.mk).
UNICORN_CFLAGS = $(CFLAGS) -Iinclude -Idemos -Idemos/common -Idemos/native/guest -I$(B)/native \
	-DGUEST_BIN='"$(B)/native/guest.bin"' $(UNICORN_EXTRA_CFLAGS)

$(B)/umlmem-unicorn: demos/native/unicorn.c demos/native/common.c demos/native/common.h \
		     demos/common/cli.c demos/common/cli.h demos/native/guest/work.c demos/native/guest/work.h \
		     $(B)/native/guest.bin $(B)/native/guest-syms.h $(B)/libumlmem.a include/umlmem.h | deps
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(UNICORN_CFLAGS) -o $@ demos/native/unicorn.c demos/native/common.c demos/common/cli.c \
	  demos/native/guest/work.c $(B)/libumlmem.a $(LDFLAGS) $(LIBS) -lunicorn

# A small run: 4 guests of 64 MiB, 4 MiB of array each, on a budget of
# 3/4 of what they touch. Exit 77 (native mode unavailable) is a skip.
UNICORN_DEMO_ARGS ?= --guests 4 --ram 64M --array 4M --timeout 300
unicorn-demo: deps $(B)/umlmem-unicorn
	$(Q)$(B)/umlmem-unicorn $(UNICORN_DEMO_ARGS); rc=$$?; \
	if [ $$rc = 77 ]; then echo "unicorn-demo: skipped: native mode is not available here"; \
	else exit $$rc; fi
