#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Prints "ALIAS PAGE" for every name a page documents besides its own, e.g.
# "umlmem_write.3 umlmem_read.3": the names are those of the page's NAME
# section ("umlmem_read, umlmem_write - ..."), so that the page is the one
# place that says which calls it covers. The Makefile turns each line into
# a link page holding ".so man3/umlmem_read.3".
#
# usage: man/links.sh man/*.scd
set -eu
for src in "$@"; do
	awk -v src="$src" '
	NR == 1 {
		if (!match($1, /^[A-Za-z0-9_.-]+\([0-9]\)$/)) {
			printf "%s:1: expected name(section) first\n", src > "/dev/stderr"
			exit 1
		}
		page = substr($1, 1, index($1, "(") - 1)
		sec = substr($1, index($1, "(") + 1, 1)
		next
	}
	/^# NAME/ { inname = 1; next }
	inname && NF {
		if (!index($0, " - ")) {
			printf "%s: NAME needs \"name, name - what\"\n", src > "/dev/stderr"
			exit 1
		}
		n = split(substr($0, 1, index($0, " - ") - 1), names, /, */)
		for (i = 1; i <= n; i++)
			if (names[i] != page)
				print names[i] "." sec, page "." sec
		exit 0
	}' "$src"
done
