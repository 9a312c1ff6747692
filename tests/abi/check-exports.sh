#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# check-exports.sh LIB HEADER MAP: the shared library exports exactly the
# calls the header marks UMLMEM_API, each under the version node the map
# gives it, and nothing else; the map and the header list the same calls.
#
# The header's list comes from the preprocessor, with UMLMEM_API replaced by
# a marker and the library's own view of the header (UMLMEM_BUILDING_COMPAT:
# the entry points that the header otherwise defines inline), so comments
# and line breaks inside a declaration do not matter. The exports come from
# nm -D, whose names carry their version (name@@NODE, or name@NODE for an
# entry point kept only for old binaries); the version nodes from the
# version definitions (readelf -V), where they belong: every defined
# dynamic symbol, absolute ones included, must be an umlmem_ call.
set -eu
lib=$1 header=$2 map=$3
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "test-abi: $*" >&2; fail=1; }

# name node, one a line, from the map's "NODE { global: name; ... }" blocks
awk '
	{ sub(/\/\*.*\*\//, "") }
	/\/\*/ { incomment = 1 }
	incomment { if (/\*\//) incomment = 0; next }
	/^[ \t]*UMLMEM_[0-9]+\.[0-9]+[ \t]*\{/ { node = $1; next }
	{ for (i = 1; i <= NF; i++) if ($i ~ /^umlmem_[A-Za-z0-9_]*;$/) { sub(/;$/, "", $i); print $i, node } }
' "$map" | sort > "$tmp/map"
awk '{ print $2 }' "$tmp/map" | sort -u > "$tmp/map-nodes"
[ -s "$tmp/map" ] || bad "no umlmem_ calls found in $map"

$CC -E -P -DUMLMEM_BUILDING_COMPAT -DUMLMEM_API=__umlmem_exported__ "$header" |
	tr '\n' ' ' | grep -o '__umlmem_exported__[^;{]*' |
	grep -o 'umlmem_[A-Za-z0-9_]* *(' | sed 's/ *($//' | sort > "$tmp/header"
[ -s "$tmp/header" ] || bad "no UMLMEM_API declarations found in $header"

awk '{ print $1 }' "$tmp/map" | sort > "$tmp/map-names"
for n in $(comm -23 "$tmp/header" "$tmp/map-names"); do
	bad "$n is declared UMLMEM_API in $header but is missing from $map"
done
for n in $(comm -13 "$tmp/header" "$tmp/map-names"); do
	bad "$n is in $map but $header declares no UMLMEM_API $n"
done
dups=$(uniq -d "$tmp/map-names")
[ -z "$dups" ] || bad "listed twice in $map: $dups"

# readelf -V: the version definitions, "... Flags: none ... Name: NODE"
# (the BASE one names the file itself)
readelf -V "$lib" | awk '/^Version/ { def = /definition/; next }
	def && /Flags:/ && !/BASE/ { print $NF }' | sort > "$tmp/lib-nodes"
if ! cmp -s "$tmp/lib-nodes" "$tmp/map-nodes"; then
	bad "version nodes of $lib ($(echo $(cat "$tmp/lib-nodes"))) are not those of $map ($(echo $(cat "$tmp/map-nodes")))"
fi
# nm -D: "ADDR T name@@NODE" for each defined dynamic symbol
nm -D --defined-only "$lib" | awk '{ print $3 }' | sed 's/@@*/ /' | sort > "$tmp/lib"
while read -r name node; do
	case $name in
	umlmem_*) ;;
	*) bad "$lib exports $name, which is not an umlmem_ call"; continue ;;
	esac
	want=$(awk -v n="$name" '$1 == n { print $2 }' "$tmp/map")
	if [ -z "$want" ]; then
		bad "$lib exports $name, which $map does not list"
	elif [ "$node" != "$want" ]; then
		bad "$lib exports $name under version '${node:-none}', $map puts it in $want"
	fi
done < "$tmp/lib"
awk '{ print $1 }' "$tmp/lib" | sort > "$tmp/lib-names"
for n in $(comm -13 "$tmp/lib-names" "$tmp/map-names"); do
	bad "$n is in $map but $lib does not export it"
done

[ $fail = 0 ] || exit 1
echo "test-abi: $(wc -l < "$tmp/lib-names") calls exported, each under its version node; header and map agree"
