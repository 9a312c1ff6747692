#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# record.sh: records the traces demos/replay-table.sh measures, into
# build/traces/ (not into the repository: each is 32 MB).
#
#   demos/traces/record.sh [NAME...]   NAME: gzip sort sqlite python cc1
#                                      xz lua (default: all seven)
#
# Each trace is 4 million page references (counted after collapsing
# repeats of one page) of a real program run on this machine under
# valgrind's lackey, through demos/trace.sh. Whole runs are far longer
# (sort of this input, or this python script: over 140 million each), so
# each trace is a window, placed where the footprint per million
# references (looked at over the whole run) shows the program's own work:
#
#   gzip    gzip -6 of 4 MiB of generated text; skips 1M (start-up), then
#           the compression loop: window, hash chains, input and output
#           buffers.
#   sort    LC_ALL=C sort --parallel=1 of 150,000 generated lines (3.6
#           MiB); from the start: the first 3M references read the input
#           (a sweep over about 2,300 new pages), the rest sort on a hot set
#           of a few hundred: a scan followed by a working set.
#   sqlite  sqlite3 :memory: running workload.sql; from the start: the
#           start-up (about 600 pages), then the bulk insert (about 90 hot
#           pages) that the old start-up pages must make room for.
#   python  python3 running script.py; skips 24M (the interpreter's
#           start-up is about 25M), so the window holds the end of the
#           start-up and the script's dictionary loop.
#   cc1     gcc's cc1 -O2 on cc1-input.c, run directly (gcc's driver would
#           need --trace-children); skips 8M (initialisation), then parsing
#           and optimisation.
#
# Inputs are written to build/traces/input/ by a seeded generator (the same
# bytes every time); workload.sql, script.py, cc1-input.c and gc.lua are
# next to this script. Under valgrind the address space is laid out the same every
# run and python's hash seed is fixed, so recording again on this machine
# gives the same traces, byte for byte, except lua's: lua seeds its string
# hash from the clock, so its heap layout (not its pattern) varies a little
# from one recording to the next. Recording all seven takes several
# minutes, most of it python's 24M skipped references (lackey runs at
# about half a million references a second, skipped ones included).
#
# Needs valgrind, gzip, sort, sqlite3, python3, gcc, xz and lua5.4 (Debian
# packages valgrind, gzip, coreutils, sqlite3, python3, gcc, xz-utils,
# lua5.4; `make traces` installs them); says which are missing.
set -u

prog=record.sh
here=$(cd "$(dirname -- "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/build/traces
in=$out/input
trace=$root/demos/trace.sh
refs=4000000

all=(gzip sort sqlite python cc1 xz lua)
[ $# -gt 0 ] || set -- "${all[@]}"
for n in "$@"; do
	case " ${all[*]} " in
	*" $n "*) ;;
	*) echo "$prog: unknown trace '$n' (one of: ${all[*]})" >&2; exit 2 ;;
	esac
done

missing=
for c in valgrind gzip sort sqlite3 python3 gcc xz lua5.4; do
	command -v "$c" >/dev/null || missing="$missing $c"
done
if [ -n "$missing" ]; then
	echo "$prog: missing:$missing (apt-get install$missing)" >&2
	exit 1
fi
[ -x "${UMLMEM:-$root/build/umlmem}" ] || {
	echo "$prog: no ${UMLMEM:-$root/build/umlmem}: build it first (make)" >&2; exit 1; }

# The interpreter itself: valgrind must run the ELF program, not a wrapper
# script such as pyenv's shim (it would trace the shell).
py=/usr/bin/python3
[ -x "$py" ] || py=$(python3 -c 'import sys; print(sys.executable)')
cc1=$(gcc -print-prog-name=cc1)
multiarch=$(gcc -print-multiarch)

mkdir -p "$in" || exit 1

# Text with the skew of real text (word frequencies falling as 1/rank), so
# that gzip finds matches at all distances and sort sees shared prefixes.
python3 - "$in" <<'EOF' || exit 1
import os, random, sys
d = sys.argv[1]
r = random.Random(1)
syll = ['ka', 'to', 'ri', 'ne', 'su', 'mo', 'la', 'pi', 'de', 'fu', 'ro', 'ga', 'xi', 've', 'bo', 'lu']
vocab = [''.join(r.choice(syll) for _ in range(r.randint(1, 4))) for _ in range(5000)]
weight = [1.0 / (i + 1) for i in range(len(vocab))]
with open(os.path.join(d, 'text.txt'), 'w') as f:
    n = line = 0
    while n < 4 << 20:
        line += 1
        s = '%d ' % line + ' '.join(r.choices(vocab, weight, k=r.randint(4, 14))) + '\n'
        f.write(s)
        n += len(s)
with open(os.path.join(d, 'lines.txt'), 'w') as f:
    for i in range(150000):
        f.write(' '.join(r.choices(vocab, k=3)) + ' %d\n' % r.randint(0, 10 ** 6))
EOF

rec() {	# NAME SKIP CMD...
	local name=$1 skip=$2 t0
	shift 2
	echo "$prog: $name: $*" >&2
	t0=$(date +%s)
	"$trace" -o "$out/$name.bin" -n "$refs" -s "$skip" "$@" >/dev/null || return 1
	echo "$prog: $name: $(( $(date +%s) - t0 )) s, $(stat -c %s "$out/$name.bin") bytes" >&2
}

rc=0
for n in "$@"; do
	case $n in
	gzip)	rec gzip 1000000 gzip -6 -c "$in/text.txt" || rc=1 ;;
	sort)	LC_ALL=C rec sort 0 sort --parallel=1 -S 64M "$in/lines.txt" -o /dev/null || rc=1 ;;
	sqlite)	rec sqlite 0 sqlite3 :memory: ".read $here/workload.sql" || rc=1 ;;
	# a fixed hash seed: otherwise every run lays out dictionaries anew
	python)	PYTHONHASHSEED=0 rec python 24000000 "$py" "$here/script.py" || rc=1 ;;
	cc1)	rec cc1 8000000 "$cc1" -quiet -imultiarch "$multiarch" -O2 "$here/cc1-input.c" \
			-o /dev/null || rc=1 ;;
	xz)	rec xz 1000000 xz -6 -c "$in/text.txt" || rc=1 ;;
	lua)	rec lua 2000000 lua5.4 "$here/gc.lua" || rc=1 ;;
	esac
done
exit $rc
