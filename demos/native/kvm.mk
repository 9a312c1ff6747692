# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The KVM demo: guests run by KVM (its ioctls, no QEMU) whose memory slots
# are umlmem native mappings. Included by the top Makefile, so paths are
# from the repository root and B, CC, CFLAGS, LIBS and Q are the main build's.
#
#   make kvm-demo       builds build/umlmem-kvm and runs a small default
#   build/umlmem-kvm    the program (umlmem-kvm --help)
#
# The guest image is not built in: umlmem-kvm reads it at run time, by
# default from native/guest.bin beside itself ($(B)/native/guest.bin, made by
# native.mk), or from --guest-bin PATH. It is a prerequisite all the same,
# so that the program is never built without an image to run. work.c is
# compiled a second time, for the host: the expected results. demos/common/cli.c
# gives the small helpers the umlmem command uses too (sizes, times, JSON
# strings), common.c what the two native demos share beyond that.

$(B)/umlmem-kvm: demos/native/kvm.c demos/native/common.c demos/native/common.h \
		 demos/common/cli.c demos/common/cli.h demos/native/guest/work.c demos/native/guest/work.h \
		 include/umlmem.h $(B)/libumlmem.a $(B)/native/guest.bin | deps
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -Idemos -Idemos/common -o $@ demos/native/kvm.c demos/native/common.c demos/common/cli.c \
	  demos/native/guest/work.c $(B)/libumlmem.a $(LDFLAGS) $(LIBS)

# A small run: 4 guests of 256 MiB, 8 MiB of array each, on a budget of
# 7/8 of what they write (the program's default). Exit 77 (no usable
# /dev/kvm, or native mode unavailable) is a skip.
KVM_DEMO_ARGS ?= --guests 4 --ram 256M --array 8M

.PHONY: kvm-demo
kvm-demo: deps $(B)/umlmem-kvm
	$(Q)$(B)/umlmem-kvm $(KVM_DEMO_ARGS); rc=$$?; \
	if [ $$rc = 77 ]; then echo "kvm-demo: skipped: KVM or native mode is not available here"; \
	else exit $$rc; fi
