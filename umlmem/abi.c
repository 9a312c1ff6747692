/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * abi.c: what keeps programs built against another umlmem.h working with
 * this library: structs passed with their size, the entry points of the
 * 0.1 release, and the version call.
 *
 * The shared object exports only the calls marked UMLMEM_API in umlmem.h,
 * each under the version node of the release that added it (umlmem.map),
 * so that a program linked against a newer library than the one it meets
 * at run time fails to start with a message naming the missing node rather
 * than at its first call.
 *
 * Structs grow at the end, release after release. A call that takes one
 * also takes its size, which the header's inline functions fill in with
 * sizeof: so the library knows which fields the caller's struct has. The
 * rules are those of the kernel's extensible system call structs
 * (copy_struct_from_user): a shorter struct is an older program's, and
 * lacks fields that keep their defaults; a longer one is a newer
 * program's, acceptable when it leaves every field this library does not
 * have at zero, which a field added later must take as "as before". Output
 * structs are copied out as far as both sides know them and the caller's
 * tail is zeroed. The library copies a caller's struct up to its own
 * sizeof, tail padding included: the *_config_init_sized calls zero all of
 * it, so that padding a later release turns into a field reads as zeros.
 * Sizes rather than a size field inside each struct: a
 * field can be forgotten or left stale, a sizeof at the call cannot, and
 * the calls stay what they were.
 *
 * The 0.1 header had plain calls with no size; their symbols stay exported
 * (under UMLMEM_0.1) and take the structs to be of their 0.1 sizes. The
 * header defines inline functions of the same names for programs built
 * now; UMLMEM_BUILDING_COMPAT, defined here only, hides those and shows
 * the plain declarations instead, so that this file can define the
 * symbols. (Symbol versioning could bind the old names to differently
 * named functions, but a default version also serves dlsym() callers, such
 * as FFI bindings, that declare the 0.1 layout themselves.)
 */
#define UMLMEM_BUILDING_COMPAT
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define offsetofend(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

/* The 0.1 structs ended with these fields; later ones are added after them. */
_Static_assert(offsetofend(struct umlmem_host_config, dedup_sleep_us) == ABI_HOST_CONFIG_SIZE_0_1,
	       "struct umlmem_host_config: the 0.1 layout changed");
_Static_assert(offsetofend(struct umlmem_guest_config, name) == ABI_GUEST_CONFIG_SIZE_0_1,
	       "struct umlmem_guest_config: the 0.1 layout changed");
_Static_assert(offsetofend(struct umlmem_stats, checksum_errors) == ABI_STATS_SIZE_0_1,
	       "struct umlmem_stats: the 0.1 layout changed");

int abi_copy_in(void *k, size_t ksize, const void *u, size_t usize, size_t min,
		const char *what)
{
	const unsigned char *p = u;
	size_t first = 0, last = 0;

	if (usize < min)
		return seterr(-EINVAL, "struct %s: size %zu is below %zu, the size of its first "
			      "release: pass sizeof(struct %s)", what, usize, min, what);
	for (size_t i = ksize; i < usize; i++) {
		if (p[i]) {
			if (!first)
				first = i;
			last = i;
		}
	}
	if (first)
		return seterr(-EINVAL, "struct %s: bytes %zu to %zu of the caller's %zu are not zero, "
			      "but this library (umlmem %s) knows only the first %zu: the program "
			      "sets a field added after this release; upgrade the library, or "
			      "leave the field at its default", what, first, last, usize,
			      umlmem_version(NULL, NULL, NULL), ksize);
	memcpy(k, u, usize < ksize ? usize : ksize);
	return 0;
}

void abi_copy_out(void *u, size_t usize, const void *k, size_t ksize)
{
	memcpy(u, k, usize < ksize ? usize : ksize);
	if (usize > ksize)
		memset((char *)u + ksize, 0, usize - ksize);
}

/* ---- the 0.1 entry points ------------------------------------------------ */

void umlmem_host_config_init(struct umlmem_host_config *cfg)
{
	(void)umlmem_host_config_init_sized(cfg, ABI_HOST_CONFIG_SIZE_0_1);
}

int umlmem_host_create(const struct umlmem_host_config *cfg, umlmem_host **host)
{
	return umlmem_host_create_sized(cfg, ABI_HOST_CONFIG_SIZE_0_1, host);
}

void umlmem_guest_config_init(struct umlmem_guest_config *cfg)
{
	(void)umlmem_guest_config_init_sized(cfg, ABI_GUEST_CONFIG_SIZE_0_1);
}

int umlmem_guest_create(umlmem_host *host, const struct umlmem_guest_config *cfg,
			umlmem_guest **guest)
{
	return umlmem_guest_create_sized(host, cfg, ABI_GUEST_CONFIG_SIZE_0_1, guest);
}

int umlmem_host_stats(umlmem_host *h, struct umlmem_stats *s)
{
	return umlmem_host_stats_sized(h, s, ABI_STATS_SIZE_0_1);
}

int umlmem_guest_stats(umlmem_guest *g, struct umlmem_stats *s)
{
	return umlmem_guest_stats_sized(g, s, ABI_STATS_SIZE_0_1);
}

/* ---- version --------------------------------------------------------------- */

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
