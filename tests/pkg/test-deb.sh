#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The Debian packages `make deb` built into $B/deb, checked as a user of
# each would find them (run by `make test-deb`):
#  - each package holds what it should and nothing of another's: the
#    library and its soname link in libumlmem0, with a symbols file that
#    covers every version node of umlmem.map; header, .so link, static
#    library, umlmem.pc and a section 3 page (or link) for every page
#    build/man has in libumlmem-dev; the command and umlmem(1) in
#    umlmem-tools;
#  - unpacked with dpkg -x into a scratch root, examples/hello.c builds
#    against the root with the packaged umlmem.pc, with the shared library
#    and with the static one, and runs with the packaged library;
#  - the packaged command runs, and the packaged man pages, links
#    included, render.
# B, CC, VERSION (the library's) and DEB_VERSION (the packages') come from
# the Makefile.
set -eu
B=${B:-build}
CC=${CC:-cc}
: "${VERSION:?}" "${DEB_VERSION:?}"
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
dir=$(cd "$B/deb" && pwd)
root=$dir/root
lib=usr/lib/$triplet
fails=0
fail() { echo "test-deb: $*" >&2; fails=$((fails + 1)); }

deb() { echo "$dir/${1}_${DEB_VERSION}_$arch.deb"; }
for p in libumlmem0 libumlmem-dev umlmem-tools; do
	[ -f "$(deb $p)" ] || { echo "test-deb: $(deb $p) is missing: run make deb" >&2; exit 1; }
	# "path" or "path -> target", without the leading "."
	dpkg -c "$(deb $p)" | awk '{ $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +\./, ""); print }' |
		grep -v '/$' | sort > "$dir/$p.contents"
done

# has PACKAGE LINE: the package holds exactly this file (or link)
has() { grep -qxF -- "$2" "$dir/$1.contents" || fail "$1 lacks $2"; }
# only PACKAGE REGEX...: every file of the package matches one of them
only() {
	p=$1; shift
	for re in "$@"; do printf '%s\n' "$re"; done > "$dir/$p.allowed"
	grep -vxEf "$dir/$p.allowed" "$dir/$p.contents" | while read -r extra; do
		echo "test-deb: $p holds $extra, which belongs elsewhere" >&2; echo x
	done | grep -q x && fails=$((fails + 1))
	return 0
}
docs="/usr/share/doc/[a-z0-9-]+/(copyright|changelog\.gz)"

V=$(echo "$VERSION" | sed 's/\./\\./g')
has libumlmem0 "/$lib/libumlmem.so.$VERSION"
has libumlmem0 "/$lib/libumlmem.so.0 -> libumlmem.so.$VERSION"
only libumlmem0 "/$lib/libumlmem\.so\.$V" "/$lib/libumlmem\.so\.0 -> libumlmem\.so\.$V" "$docs"

has libumlmem-dev /usr/include/umlmem.h
has libumlmem-dev "/$lib/libumlmem.so -> libumlmem.so.0"
has libumlmem-dev "/$lib/libumlmem.a"
has libumlmem-dev "/$lib/pkgconfig/umlmem.pc"
n3=0
for page in "$B"/man/man3/*; do
	name=$(basename "$page")
	grep -qE "^/usr/share/man/man3/$name\.gz( -> [a-z0-9_]+\.3\.gz)?\$" "$dir/libumlmem-dev.contents" ||
		fail "libumlmem-dev lacks the man page $name"
	n3=$((n3 + 1))
done
only libumlmem-dev /usr/include/umlmem.h "/$lib/libumlmem\.(a|so -> libumlmem\.so\.0)" \
	"/$lib/pkgconfig/umlmem\.pc" "/usr/share/man/man3/umlmem[a-z0-9_]*\.3\.gz( -> .*)?" "$docs"

# the symbols file: one (symver) line for every version node of umlmem.map
dpkg-deb -I "$(deb libumlmem0)" symbols > "$dir/symbols" 2>/dev/null ||
	fail "libumlmem0 has no symbols control file"
for node in $(sed -n 's/^\(UMLMEM_[0-9][0-9.]*\) *{.*/\1/p' umlmem.map); do
	# dpkg-gensymbols writes out what the (symver) patterns matched:
	# the node's calls (lld exports no symbol named after the node)
	grep -q "^ umlmem_[a-z0-9_]*@$node " "$dir/symbols" ||
		fail "debian/libumlmem0.symbols lacks \" (symver)$node ...\" for umlmem.map's node $node"
done

has umlmem-tools /usr/bin/umlmem
has umlmem-tools /usr/share/man/man1/umlmem.1.gz
only umlmem-tools /usr/bin/umlmem /usr/share/man/man1/umlmem\\.1\\.gz "$docs"

# ---- the scratch root -------------------------------------------------------
rm -rf "$root" && mkdir -p "$root"
for p in libumlmem0 libumlmem-dev umlmem-tools; do
	dpkg -x "$(deb $p)" "$root"
done

# pkg-config finds only the root's umlmem.pc and prefixes its paths with
# the root, as for a sysroot
pc() {
	PKG_CONFIG_LIBDIR="$root/$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root" \
		pkg-config "$@" umlmem
}
[ "$(pc --modversion)" = "$VERSION" ] || fail "umlmem.pc says version $(pc --modversion), not $VERSION"
case " $(pc --cflags) " in
*" -I$root/usr/include "*) ;;
*) fail "pkg-config --cflags does not point into the root: $(pc --cflags)" ;;
esac
case " $(pc --libs) " in
*" -L$root/$lib "*"-lumlmem "*) ;;
*) fail "pkg-config --libs does not point into the root: $(pc --libs)" ;;
esac

# shellcheck disable=SC2046
$CC -Wall -Wextra -Werror -o "$dir/hello" examples/hello.c $(pc --cflags --libs)
ldd_out=$(LD_LIBRARY_PATH="$root/$lib" ldd "$dir/hello")
echo "$ldd_out" | grep -q "libumlmem.so.0 => $root/$lib/libumlmem.so.0 " ||
	fail "hello does not load the packaged libumlmem.so.0: $ldd_out"
out=$(LD_LIBRARY_PATH="$root/$lib" "$dir/hello") || fail "hello (dynamic) failed"
[ "$out" = hello ] || fail "hello (dynamic) printed '$out'"

# libumlmem.a linked in, with the libraries umlmem.pc names for a static
# link (Libs.private). Those stay shared: a fully static program cannot be
# linked on Debian 12, where libnbd needs GnuTLS, whose libunistring and
# p11-kit have no static archives.
static_libs=$(pc --libs --static | sed 's/ -lumlmem / -Wl,-Bstatic -lumlmem -Wl,-Bdynamic /')
case $static_libs in *-Bstatic*) ;; *) fail "pkg-config --libs --static names no -lumlmem: $static_libs" ;; esac
# shellcheck disable=SC2086
$CC -Wall -Wextra -Werror -o "$dir/hello-static" examples/hello.c $(pc --cflags) $static_libs
if readelf -d "$dir/hello-static" | grep NEEDED | grep -q libumlmem; then
	fail "hello-static loads libumlmem.so instead of linking libumlmem.a"
fi
out=$("$dir/hello-static") || fail "hello (static) failed"
[ "$out" = hello ] || fail "hello (static) printed '$out'"

# ---- the command and the man pages --------------------------------------------
v=$("$root/usr/bin/umlmem" --version) || fail "umlmem --version failed"
[ "$v" = "umlmem $VERSION" ] || fail "umlmem --version says '$v', not 'umlmem $VERSION'"
"$root/usr/bin/umlmem" demo --quiet --guests 2 --guest-size 16M --budget 4M --os-bytes 4M \
	--swap-dir "$dir" > "$dir/demo.out" 2>&1 || fail "the packaged umlmem demo failed: $(cat "$dir/demo.out")"

for m in man1/umlmem.1 man3/umlmem.3 man3/umlmem_read.3 man3/umlmem_write.3 man3/umlmem_host_stats.3 \
	 man3/umlmem_host_info.3; do
	out=$(cd "$root/usr/share/man" && MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -P cat -l "$m.gz" \
	      2> "$dir/man.err") || fail "man -l $m.gz failed: $(cat "$dir/man.err")"
	[ -s "$dir/man.err" ] && fail "man --warnings -l $m.gz: $(cat "$dir/man.err")"
	name=$(basename "$m"); name=${name%.*}
	echo "$out" | grep -qE "^ +([a-z0-9_]+, )*$name(,| -)" ||
		fail "$m.gz does not render a page that names $name"
done
nm=$(MANPATH="$root/usr/share/man" man -w 3 umlmem_write 2>/dev/null) ||
	fail "man -w 3 umlmem_write finds no page in the root"

if [ "$fails" -gt 0 ]; then
	echo "test-deb: $fails problem(s)" >&2
	exit 1
fi
echo "deb: libumlmem0, libumlmem-dev ($n3 section 3 pages) and umlmem-tools hold what they should; hello built against them (shared and static) runs; ${nm##*/} found"
