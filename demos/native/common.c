/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * common.c: what the native-mode demos share beyond demos/common/cli.c (see
 * common.h).
 */
#include <string.h>

#include "cli.h"
#include "common.h"

/*
 * cli.c's parse_size() refuses "KB" and "MB" (ambiguous to some users) and
 * reads only decimal numbers; these demos have always taken both forms (a
 * "B" after K, M, G or T changes nothing; a 0x number is hex), so scripts
 * that pass them keep working. The number goes to parse_u64() and the
 * suffix to parse_size(), so every other form means what it means to the
 * umlmem command.
 */
bool native_parse_size(const char *s, uint64_t *out)
{
	static const char hex[] = "0123456789abcdefABCDEF";
	char num[32], unit[8] = "1";
	size_t n, len;
	uint64_t v, mul;

	if (parse_size(s, out))
		return true;
	if (!s)
		return false;
	n = s[0] == '0' && (s[1] == 'x' || s[1] == 'X') ? 2 + strspn(s + 2, hex)
						       : strspn(s, "0123456789");
	len = strlen(s + n);
	if (len == 2 && strchr("kKmMgGtT", s[n]) && (s[n + 1] == 'B' || s[n + 1] == 'b'))
		len = 1;	/* "KB": "K" */
	if (n >= sizeof(num) || len + 2 > sizeof(unit))
		return false;
	memcpy(num, s, n);
	num[n] = '\0';
	memcpy(unit + 1, s + n, len);
	unit[len + 1] = '\0';
	if (!parse_u64(num, &v) || !parse_size(unit, &mul) || (v && mul > UINT64_MAX / v))
		return false;
	*out = v * mul;
	return true;
}

bool native_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (!parse_u64(s, &v) || v > max)
		return false;
	*out = v;
	return true;
}
