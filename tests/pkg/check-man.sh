#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The man pages against what they document (run by `make test-man`, after
# `make man`):
#  - every function the public header declares (or defines inline, or as a
#    function-like macro) is a name of a section 3 page, and that page's
#    SYNOPSIS has the header's prototype of it; every member of a public
#    struct is named by a page;
#  - every page and link page renders with `man --warnings` and no warning,
#    and has the sections a page of its kind must have;
#  - umlmem(1) has a section for every command `umlmem --help` lists, and
#    each command's section names every option and every bench figure its
#    --help shows.
# Each failure says what is missing where. B (build directory) and CC come
# from the Makefile.
set -eu
B=${B:-build}
CC=${CC:-cc}
MANDIR=$B/man
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "check-man: $*" >&2; fails=$((fails + 1)); }

# ---- the header's functions, and their prototypes --------------------------
# Preprocessed, so that comments are gone and attribute macros expanded; -dD
# keeps the function-like macros. A function is a umlmem_ name followed by
# "(".
$CC -E -P -dD -Iinclude include/umlmem.h > "$tmp/header.i"
grep -o 'umlmem_[a-z0-9_]*[[:space:]]*(' "$tmp/header.i" | tr -d ' \t(' | sort -u > "$tmp/funcs"
[ -s "$tmp/funcs" ] || { echo "check-man: no umlmem_ function found in include/umlmem.h" >&2; exit 1; }

# Normalizes a prototype: no attributes, storage class or inline, one space
# between words, none around punctuation.
norm() {
	perl -0777 -pe '
		s/__attribute__\s*\(\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\)//g;
		s/\b(?:extern|static|inline|__inline__|__inline)\b//g;
		s/\s+/ /g; s/ ?([*(),;]) ?/$1/g; s/^ //; s/ $//;'
}

# the declaration or inline definition of each function: its return type,
# name and parameter list (macros have no prototype to compare)
perl -0777 -ne '
	s/^#.*$//mg;                       # directives (the -dD defines)
	while (/((?:[A-Za-z_][A-Za-z0-9_]*[\s*]+|__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)\s*)+)(umlmem_[a-z0-9_]+)\s*(\([^()]*\))\s*[;{]/g) {
		my ($ret, $name, $args) = ($1, $2, $3);
		$ret =~ s/.*[;}]//s;
		next if $ret =~ /\breturn\b/;
		print "$name\t$ret$name$args\n";
	}' "$tmp/header.i" > "$tmp/protos.raw"
while IFS='	' read -r name proto; do
	printf '%s\t%s\n' "$name" "$(printf '%s' "$proto" | norm)"
done < "$tmp/protos.raw" > "$tmp/protos"

# ---- the pages' names -------------------------------------------------------
man/links.sh man/*.scd > "$tmp/links"
for src in man/*.scd; do
	p=$(basename "$src" .scd)
	echo "$p $p"
done > "$tmp/pages"
cat "$tmp/links" "$tmp/pages" | sort -u > "$tmp/names"     # "name.sec page.sec"

while read -r f; do
	page=$(awk -v n="$f.3" '$1 == n { print $2 }' "$tmp/names")
	if [ -z "$page" ]; then
		fail "$f is declared in include/umlmem.h but has no man page: add it to the NAME line of its family's page in man/ (and to its SYNOPSIS), or write man/$f.3.scd"
		continue
	fi
	want=$(awk -F '\t' -v n="$f" '$1 == n { print $2; exit }' "$tmp/protos")
	[ -n "$want" ] || continue       # a macro
	# the SYNOPSIS block of the page, prototypes joined and normalized
	awk '/^# SYNOPSIS/ { s = 1; next } /^# / { s = 0 } s' "man/$page.scd" |
		norm > "$tmp/synopsis"
	if ! grep -qF -- "$want" "$tmp/synopsis"; then
		fail "man/$page.scd: SYNOPSIS lacks the header's prototype of $f: $want"
	fi
done < "$tmp/funcs"

# a page that names a function the header does not have documents nothing
awk '$1 ~ /\.3$/ { sub(/\.3$/, "", $1); print $1 }' "$tmp/names" | sort -u |
while read -r n; do
	[ "$n" = umlmem ] && continue
	grep -qx "$n" "$tmp/funcs" ||
		echo "$n has a man page but include/umlmem.h does not declare it"
done > "$tmp/stale"
while read -r line; do fail "$line"; done < "$tmp/stale"

# every member of a public struct is named (as *member*) by some page
perl -0777 -ne '
	s/^#.*$//mg;
	while (/struct\s+(umlmem_[a-z0-9_]+)\s*\{(.*?)\}\s*;/gs) {
		my ($st, $body) = ($1, $2);
		for my $decl (split /;/, $body) {
			next unless $decl =~ /\S/;
			$decl =~ s/\[[^\]]*\]//g;
			# "type a, b" or "type *a": the names are the last word of each
			# comma-separated declarator
			my @parts = split /,/, $decl;
			for my $p (@parts) { print "$st $1\n" if $p =~ /([A-Za-z_][A-Za-z0-9_]*)\s*$/; }
		}
	}' "$tmp/header.i" > "$tmp/members"
[ -s "$tmp/members" ] || fail "no struct members found in include/umlmem.h"
while read -r st m; do
	grep -qF -- "*$m*" man/*.3.scd ||
		fail "struct $st's member $m is named by no page in man/ (write it as *$m*)"
done < "$tmp/members"

# ---- rendering ---------------------------------------------------------------
# From inside the hierarchy, so that the ".so man3/..." of link pages
# resolves as it does once installed.
sections_of() {
	case $1 in
	*.1) echo "NAME SYNOPSIS DESCRIPTION OPTIONS COMMANDS ENVIRONMENT EXIT_STATUS EXAMPLES SEE_ALSO" ;;
	umlmem.3) echo "NAME SYNOPSIS DESCRIPTION CAVEATS ENVIRONMENT SEE_ALSO" ;;
	*.3) echo "NAME SYNOPSIS DESCRIPTION RETURN_VALUE ERRORS SEE_ALSO" ;;
	esac
}
npages=0
for path in "$MANDIR"/man1/* "$MANDIR"/man3/*; do
	rel=${path#"$MANDIR"/}
	name=$(basename "$rel")
	if ! (cd "$MANDIR" && MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -P cat -l "$rel") \
		> "$tmp/out" 2> "$tmp/err"; then
		fail "$path: man failed: $(cat "$tmp/err")"
		continue
	fi
	if [ -s "$tmp/err" ]; then
		fail "$path: man --warnings: $(cat "$tmp/err")"
	fi
	npages=$((npages + 1))
	# a link page shows its target: its name must be in the NAME section
	base=${name%.*}
	awk '/^NAME/ { s = 1; next } /^[A-Z]/ { s = 0 } s' "$tmp/out" | tr '\n' ' ' |
		grep -Eq "(^|[ ,])$base(,| -)" || fail "$path: its NAME section does not name $base"
	for sec in $(sections_of "$name"); do
		grep -qx "$(echo "$sec" | tr _ ' ')" "$tmp/out" ||
			fail "$path: no $(echo "$sec" | tr _ ' ') section"
	done
	# every page it refers to is one of ours, or not umlmem's
	grep -o 'umlmem[a-z0-9_]*([0-9])' "$tmp/out" | sort -u > "$tmp/refs" || true
	while read -r ref; do
		n=${ref%(*}; s=${ref#*(}; s=${s%)}
		[ -e "$MANDIR/man$s/$n.$s" ] || fail "$path: refers to $ref, which has no page"
	done < "$tmp/refs"
done
[ "$npages" -ge "$(ls man/*.scd | wc -l)" ] || fail "rendered $npages pages, fewer than man/ has"

# ---- umlmem(1) against the command --------------------------------------------
scd=man/umlmem.1.scd
"$B/umlmem" --help > "$tmp/help"
awk '/^commands:/ { s = 1; next } s && /^$/ { exit } s { print $1 }' "$tmp/help" > "$tmp/cmds"
[ -s "$tmp/cmds" ] || fail "no command list (a \"commands:\" block) in \`$B/umlmem --help\`"
while read -r c; do
	if ! grep -qx "## $c" "$scd"; then
		fail "$scd: no \"## $c\" section for the command $c"
		continue
	fi
	awk -v h="## $c" '$0 == h { s = 1; next } /^#/ { s = 0 } s' "$scd" > "$tmp/section"
	"$B/umlmem" "$c" --help > "$tmp/chelp" 2>/dev/null || true
	# the options: what an options table line starts with ("  --opt",
	# "  -h, --help"); -h and --help are documented for all commands at once
	sed -nE 's/^[[:space:]]+(-[A-Za-z0-9], )?(--[a-z][a-z0-9-]*).*/\2/p' "$tmp/chelp" |
		sort -u | grep -vx -- --help > "$tmp/opts" || true
	while read -r opt; do
		grep -qF -- "*$opt*" "$tmp/section" ||
			fail "$scd: the $c section does not document $opt (\`umlmem $c --help\` shows it)"
	done < "$tmp/opts"
	# bench's figures, listed under "figures (KEY):"
	awk '/^figures/ { s = 1; next } s && /^$/ { exit } s && /^  [a-z]/ { print $1 }' \
		"$tmp/chelp" > "$tmp/keys"
	while read -r key; do
		grep -qF -- "*$key*" "$tmp/section" ||
			fail "$scd: the $c section does not document the figure $key"
	done < "$tmp/keys"
done < "$tmp/cmds"

if [ "$fails" -gt 0 ]; then
	echo "check-man: $fails problem(s)" >&2
	exit 1
fi
echo "man: $(wc -l < "$tmp/funcs") functions of include/umlmem.h documented, $npages pages render cleanly, umlmem(1) covers $(wc -l < "$tmp/cmds") commands"
