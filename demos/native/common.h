/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * common.h: what the native-mode demos (kvm.c, unicorn.c) share beyond
 * demos/common/cli.h. common.c uses cli.c's parsers, so a program that
 * links common.c links demos/common/cli.c too.
 */
#ifndef UMLMEM_NATIVE_COMMON_H
#define UMLMEM_NATIVE_COMMON_H

#include <stdbool.h>
#include <stdint.h>

/* A size as these demos have always taken it: whatever parse_size() takes,
   and also a 0x-hex number and "KB", "MB", "GB", "TB" (any case), which
   mean powers of 1024 here as K, M, G and T do. */
bool native_parse_size(const char *s, uint64_t *out);
/* parse_u64() (decimal or 0x-hex, the whole word), at most @max; *out is
   left alone when the word is refused. */
bool native_parse_uint(const char *s, uint64_t max, uint64_t *out);

#endif
