#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# trace.sh: records the page references of any command, as a bin trace for
# `umlmem replay`.
#
#   demos/trace.sh [-o FILE] [-n MAX_REFS] [-s SKIP_REFS] [--] CMD [ARG...]
#
#   -o FILE       the trace to write (default: ./CMD.bin, CMD's base name)
#   -n MAX_REFS   keep at most this many references, counted after
#                 collapsing repeats of one page (default 4000000; 0: all)
#   -s SKIP_REFS  drop the first SKIP_REFS references, e.g. a start-up that
#                 is not the part of the run to be measured (default 0)
#   UMLMEM=PATH   the umlmem program (default: build/umlmem next to this
#                 script's directory, else umlmem on PATH)
#
# valgrind's lackey tool (--tool=lackey --trace-mem=yes) prints a line of
# about 14 bytes for every instruction fetch, load and store, and programs
# make them by the hundred million: `python3 -c pass` alone makes 44
# million (600 MB of text), gzip of 4 MiB a few hundred million. So no text
# is ever stored and nothing needs compressing: valgrind writes its log into
# a FIFO, and `umlmem replay --convert` reads it as it comes, collapses
# repeated references to one page (which replay does anyway, and which
# roughly halves lackey's stream), and writes 8 bytes per reference: the
# default cap of 4 million makes a trace of 32 MB. When the converter has
# what it wants it closes the FIFO, and valgrind, whose further run would
# be thrown away, is stopped (by its PID: TERM, and KILL if that is
# ignored), so a cap also bounds the time: lackey runs at about half a
# million references a second.
#
# The command runs under valgrind with this script's stdin, stdout and
# stderr; valgrind's own messages go to the FIFO, where replay skips them.
# The command is traced alone: a program that runs others (gcc's driver)
# would need valgrind's --trace-children, and then several processes would
# write one log; trace the program that does the work instead (cc1).
#
# Exit status: 0 with a trace written; 1 when the converter failed, or the
# command could not be run (nothing traced); 2 bad usage. A traced command
# that fails is reported but still gives its trace.
set -u

prog=trace.sh
out=
max=4000000
skip=0

usage() {
	sed -n '7,16p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
	case $1 in
	-o) [ $# -ge 2 ] || { echo "$prog: -o needs a file" >&2; exit 2; }; out=$2; shift 2 ;;
	-n) [ $# -ge 2 ] || { echo "$prog: -n needs a number" >&2; exit 2; }; max=$2; shift 2 ;;
	-s) [ $# -ge 2 ] || { echo "$prog: -s needs a number" >&2; exit 2; }; skip=$2; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	--) shift; break ;;
	-*) echo "$prog: unknown option '$1'" >&2; usage >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { echo "$prog: no command to trace" >&2; usage >&2; exit 2; }
case $max$skip in
*[!0-9]*) echo "$prog: -n and -s take whole numbers" >&2; exit 2 ;;
esac
[ -n "$out" ] || out=./$(basename -- "$1").bin

umlmem=${UMLMEM:-}
if [ -z "$umlmem" ]; then
	umlmem=$(cd "$(dirname -- "$0")/.." && pwd)/build/umlmem
	[ -x "$umlmem" ] || umlmem=$(command -v umlmem) || {
		echo "$prog: no umlmem program: build it (make) or set UMLMEM" >&2; exit 1; }
fi
command -v valgrind >/dev/null || {
	echo "$prog: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

conv_args=(--format lackey --skip-refs "$skip")
[ "$max" -gt 0 ] && conv_args+=(--max-refs "$max")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/umlmem-trace.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fifo=$tmp/lackey.log
mkfifo "$fifo" || exit 1

# The command's stdin: a background job's would be /dev/null otherwise.
exec 3<&0
start=$(date +%s)
"$umlmem" replay --convert "${conv_args[@]}" "$fifo" "$out" 2>"$tmp/convert.err" &
conv=$!
# --vgdb=no: no gdbserver, so no FIFOs in /tmp that a KILL would leave behind
valgrind --tool=lackey --trace-mem=yes --vgdb=no --log-file="$fifo" -- "$@" <&3 3<&- &
vg=$!
exec 3<&-

wait -n -p first "$conv" "$vg"
rc=$?
stopped=0
if [ "$first" = "$vg" ]; then
	vrc=$rc
	# valgrind is done. If it never opened its log (the command could not
	# be started), the converter waits in open() for a writer, and may not
	# even have got there yet: be a writer for a moment, again and again,
	# until it has seen the end and gone (a FIFO with no writer left reads
	# as the end).
	for _ in $(seq 100); do
		kill -0 "$conv" 2>/dev/null || break
		exec 4<>"$fifo"
		sleep 0.2
		exec 4>&-
	done
	wait "$conv"
	crc=$?
else
	crc=$rc
	# The converter has read all it wants (or failed): the rest of
	# valgrind's run would go nowhere. With its log closed valgrind can
	# take seconds to act on TERM; KILL only if it has not after 30.
	if kill -TERM "$vg" 2>/dev/null; then
		stopped=1
		for _ in $(seq 300); do
			kill -0 "$vg" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$vg" 2>/dev/null
	fi
	# (braces: bash's notice of a job killed by a signal is not news here)
	{ wait "$vg"; } 2>/dev/null
	vrc=$?
fi
secs=$(( $(date +%s) - start ))

cat "$tmp/convert.err" >&2
if [ "$crc" -ne 0 ]; then
	echo "$prog: converting the trace of '$*' failed" >&2
	rm -f "$out"
	exit 1
fi
if grep -q 'cut at --max-refs' "$tmp/convert.err"; then
	echo "$prog: '$*' stopped after $max references (-n), ${secs} s; trace in $out" >&2
elif [ "$vrc" -eq 127 ] || { [ "$vrc" -ne 0 ] && [ "$(stat -c %s "$out")" -le 16 ]; }; then
	echo "$prog: '$*' could not be traced (valgrind exit status $vrc); no trace" >&2
	rm -f "$out"
	exit 1
elif [ "$stopped" -eq 1 ] && [ "$vrc" -ge 128 ]; then
	echo "$prog: '$*' was stopped at the end of its trace, ${secs} s; trace in $out" >&2
else
	[ "$vrc" -eq 0 ] || echo "$prog: note: '$*' exited with status $vrc" >&2
	echo "$prog: '$*' traced to its end, ${secs} s; trace in $out" >&2
fi
exit 0
