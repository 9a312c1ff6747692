/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest's entry, at the first byte of guest.bin (GUEST_LOAD_GPA; see
 * guest.ld). It runs on whatever the host set up (RSP at GUEST_STACK_TOP,
 * 64-bit code, flat or identity-mapped memory) and touches no control
 * register, descriptor table or I/O port, so that the same image runs under
 * unicorn's flat long mode and under KVM with identity paging: it calls
 * guest_work(params, array) and halts. The HLT sits in a loop because a
 * hypervisor may resume a halted vCPU (an interrupt, a spurious wakeup):
 * the guest must never run past its end.
 *
 * memset and memcpy are here in case gcc turns a loop or a struct copy of
 * work.c into a call (work.c avoids both, and the guest is built with
 * -fno-builtin -fno-tree-loop-distribute-patterns); with no libc to link,
 * a missing one would otherwise fail the link, not the guest.
 */

#define PARAMS_GPA      0x8000  /* GUEST_PARAMS_GPA in work.h */
#define PARAMS_ARRAY    16      /* offsetof(struct guest_params, array_gpa); work.c asserts it */

	.code64
	.section .text.start, "ax", @progbits
	.globl	_start
	.type	_start, @function
_start:
	movl	$PARAMS_GPA, %edi
	movq	PARAMS_ARRAY(%rdi), %rsi
	call	guest_work
	.globl	guest_halt
guest_halt:
	hlt
	jmp	guest_halt
	.size	_start, . - _start

	.text
	/* void *memset(void *s, int c, size_t n) */
	.globl	memset
	.type	memset, @function
memset:
	movq	%rdi, %r8
	movl	%esi, %eax
	movq	%rdx, %rcx
	cld
	rep stosb
	movq	%r8, %rax
	ret
	.size	memset, . - memset

	/* void *memcpy(void *dst, const void *src, size_t n) */
	.globl	memcpy
	.type	memcpy, @function
memcpy:
	movq	%rdi, %rax
	movq	%rdx, %rcx
	cld
	rep movsb
	ret
	.size	memcpy, . - memcpy

	.section .note.GNU-stack, "", @progbits
