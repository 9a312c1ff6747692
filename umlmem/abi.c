/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * abi.c: what keeps programs built against an older umlmem.h working with
 * this library: the version call.
 *
 * The shared object exports only the calls marked UMLMEM_API in umlmem.h,
 * each under the version node of the release that added it (umlmem.map),
 * so that a program linked against a newer library than the one it meets
 * at run time fails to start with a message naming the missing node rather
 * than at its first call.
 */
#include "internal.h"

#define STR_(x) #x
#define STR(x)  STR_(x)

const char *umlmem_version(int *major, int *minor, int *patch)
{
	if (major)
		*major = UMLMEM_VERSION_MAJOR;
	if (minor)
		*minor = UMLMEM_VERSION_MINOR;
	if (patch)
		*patch = UMLMEM_VERSION_PATCH;
	return STR(UMLMEM_VERSION_MAJOR) "." STR(UMLMEM_VERSION_MINOR) "."
	       STR(UMLMEM_VERSION_PATCH);
}
