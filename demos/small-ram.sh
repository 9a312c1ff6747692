#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# small-ram.sh: runs `umlmem demo` and `umlmem stress` inside a memory cgroup
# whose limit is the host budget plus a fixed allowance, to show that a
# process serving guests far larger than its RAM really stays within the
# budget: the kernel, not the library's own counters, does the accounting.
#
#   demos/small-ram.sh [--limit-slack MiB] [--] [demo|stress|fits] [ARGS...]
#
#   --limit-slack MiB  the allowance on top of the budget (default 64)
#   demo, stress, fits run only this one (default: all three, in this order)
#   ARGS               passed to demo and stress; --budget SIZE among them
#                      sets the budget the limit is computed from. fits
#                      takes only --swap-dir from them
#   UMLMEM=PATH        the umlmem program (default: build/umlmem next to this
#                      script's directory)
#
# Each run gets a cgroup of its own, made just before it and removed just
# after, so that the peak, the fail count and the OOM kills read afterwards
# are that run's alone. The run is started by a subshell that first moves
# itself into the cgroup and then execs the program, so everything the
# program allocates is charged there from its first page; this shell stays
# outside. The frame store is a memfd, i.e. shmem, which the memory
# controller charges to the cgroup of the process that first touches each
# page: the budget's worth of frames is charged to the run. Both runs get
# the budget explicitly (--budget, 64M unless ARGS give one), and the limit
# is computed from that same number.
#
# The limit is budget + slack. The slack is for what the process needs
# besides the frames: the guests' page tables (allocated in chunks on first
# write), the frame table and its reverse map, the merge scanner's indexes
# and page hashes, the swap slot maps, the I/O buffers and the io_uring
# rings (kernel memory, charged to the cgroup too), thread stacks, the
# binary's and libc's pages and heap, and each command's own data: the
# stress model (56 bytes per page touched: 7 MiB for the default 512 MiB)
# and the demo's copy of its OS image. 64 MiB covers these for the sizes
# run here with room to spare; peak/limit in the table shows how much.
#
# The kernel must not quietly make room by swapping the process itself, or
# a run could exceed the limit without failing: cgroup v2 gets
# memory.swap.max 0; cgroup v1 gets memory.swappiness 0 and, where swap
# accounting exists, memory.memsw.limit_in_bytes equal to the limit. The
# library's own swap files are ordinary files written with O_DIRECT and are
# not affected; on a tmpfs, though, they would be shmem and count against
# the limit, which is said below when it is the case.
#
# cgroup v2 is used where /sys/fs/cgroup/cgroup.controllers lists memory
# (the cgroup is made at the root of the hierarchy); else v1 under
# /sys/fs/cgroup/memory, below this shell's own memory cgroup so that the
# run stays within any limit this shell is under (at the v1 root if that
# is not possible).
#
# The third run, fits, turns this round: the budget is far above the limit
# (4 GiB, or half the machine's RAM where that is less) and the guests only
# touch what fits under it (stress with 4 guests of 32 MiB: the limit is
# their 128 MiB plus the slack). The budget is a limit on the frames the
# host may hold, not memory it takes: the run passes only if creating the
# host and serving the guests costs what they touch, not what the budget
# allows.
#
# Exit status: 0 every run verified, 0 mismatches, no OOM kill; 1 anything
# else; 2 bad usage; 77 no memory cgroup can be made here (not root, no
# memory controller): nothing was run.

set -u

PROG=small-ram.sh
SLACK_MIB=64
DEFAULT_BUDGET=64M
# The demo's defaults (52 guests of 1 GiB, a 1 GiB budget, a 128 MiB OS
# image) take minutes on a small machine; the same story at 1/16 of the
# budget and of the image takes about twenty seconds.
DEMO_ARGS=(--os-bytes 8M)
STRESS_ARGS=(--seconds 20)
FITS_GUESTS=4
FITS_GUEST_MIB=32
FITS_ARGS=(--guests "$FITS_GUESTS" --guest-size "${FITS_GUEST_MIB}M" --seconds 10)

usage() {
	sed -n '9,16p' "$0" | sed 's/^# \{0,1\}//'
}

die_usage() {
	echo "$PROG: $*" >&2
	echo "(try \`$0 --help\`)" >&2
	exit 2
}

skip() {
	echo "$PROG: SKIP: $*" >&2
	exit 77
}

# ---- arguments ---------------------------------------------------------------

runs=()
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	-h|--help)
		usage
		exit 0
		;;
	--limit-slack|--limit-slack=*)
		if [ "$1" = --limit-slack ]; then
			[ $# -ge 2 ] || die_usage "option --limit-slack needs a value"
			val=$2
			shift 2
		else
			val=${1#--limit-slack=}
			shift
		fi
		case "$val" in
		''|*[!0-9]*) die_usage "--limit-slack '$val': expected a whole number of MiB" ;;
		esac
		[ ${#val} -le 6 ] || die_usage "--limit-slack '$val': at most 999999 MiB"
		SLACK_MIB=$((10#$val))
		;;
	--)
		shift
		break
		;;
	-*)
		die_usage "unknown option '$1' (options for the runs go after demo or stress)"
		;;
	*)
		break
		;;
	esac
done
if [ $# -gt 0 ]; then
	case "$1" in
	demo|stress|fits)
		runs=("$1")
		shift
		;;
	-*)
		;;
	*)
		die_usage "unknown run '$1' (demo, stress or fits)"
		;;
	esac
fi
args=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(demo stress fits)

# SIZE as the umlmem commands read it: bytes, or K, M, G, T (KiB ...), B.
size_bytes() {
	local s=$1 num sfx shift
	num=${s%%[!0-9]*}
	sfx=${s#"$num"}
	[ -n "$num" ] && [ ${#num} -le 15 ] || return 1
	case "${sfx,,}" in
	''|b) shift=0 ;;
	k|kib) shift=10 ;;
	m|mib) shift=20 ;;
	g|gib) shift=30 ;;
	t|tib) shift=40 ;;
	*) return 1 ;;
	esac
	echo $(( (10#$num) << shift ))
}

# Whether ARGS give one of the options named.
has_opt() {
	local a o
	for a in "${args[@]}"; do
		for o in "$@"; do
			case "$a" in "$o"|"$o"=*) return 0 ;; esac
		done
	done
	return 1
}
# Our run lengths only where ARGS do not set their own (--seconds and
# --ops exclude each other in stress).
has_opt --os-bytes && DEMO_ARGS=()
has_opt --seconds --ops && STRESS_ARGS=()

# The budget: the last --budget in ARGS (the commands take the last one
# too), else ours, which is then passed explicitly.
budget_arg=""
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	--budget) [ $((i + 1)) -lt ${#args[@]} ] && budget_arg=${args[i + 1]} ;;
	--budget=*) budget_arg=${args[i]#--budget=} ;;
	esac
done
if [ -n "$budget_arg" ]; then
	budget=$(size_bytes "$budget_arg") || die_usage "--budget '$budget_arg': expected a size (bytes, or with K, M, G, T)"
	budget_opt=()
else
	budget=$(size_bytes "$DEFAULT_BUDGET")
	budget_opt=(--budget "$DEFAULT_BUDGET")
fi
# the library rounds the budget down to whole pages
budget=$((budget / 4096 * 4096))
[ "$budget" -gt 0 ] || die_usage "--budget '$budget_arg': below one page"
limit=$((budget + SLACK_MIB * 1024 * 1024))
base_limit=$limit

# fits: 4 GiB, or half of this machine's RAM where that is less; the limit
# is what its guests can touch, plus the same slack
fits_budget=$((4 << 30))
phys=$(awk '$1 == "MemTotal:" { print $2 * 1024 }' /proc/meminfo 2>/dev/null)
[ -n "$phys" ] && [ $((phys / 2)) -lt "$fits_budget" ] && fits_budget=$((phys / 2 / 4096 * 4096))
fits_limit=$((FITS_GUESTS * FITS_GUEST_MIB * 1024 * 1024 + SLACK_MIB * 1024 * 1024))

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UMLMEM=${UMLMEM:-$here/build/umlmem}
if [ ! -x "$UMLMEM" ]; then
	echo "$PROG: $UMLMEM is not there or not executable; build it with \`make\`" >&2
	exit 1
fi

# ---- the cgroup --------------------------------------------------------------

[ "$(id -u)" = 0 ] || skip "making a memory cgroup needs root"

CGV=""
if [ -r /sys/fs/cgroup/cgroup.controllers ] &&
   grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
	CGV=2
	CG_PARENT=/sys/fs/cgroup
elif [ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
	CGV=1
	# this shell's own v1 memory cgroup, from the line "N:...memory...:/path"
	own=$(awk -F: '{ n = split($2, c, ","); for (i = 1; i <= n; i++) if (c[i] == "memory") print $3 }' \
		/proc/self/cgroup | head -n 1)
	CG_PARENT=/sys/fs/cgroup/memory${own%/}
	[ -d "$CG_PARENT" ] || CG_PARENT=/sys/fs/cgroup/memory
else
	skip "no memory cgroup controller (neither v2 with memory in /sys/fs/cgroup/cgroup.controllers nor v1 at /sys/fs/cgroup/memory)"
fi

cg=""		# the current run's cgroup, while it exists
child=""	# the current run's PID, while it runs
tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/small-ram.XXXXXX") || exit 1

# Moves whatever is still in the cgroup back to its parent and removes it.
# The memory controller may take a moment to let go of a cgroup whose last
# task just exited, hence the retries.
cg_remove() {
	local d=$1 pid
	[ -n "$d" ] && [ -d "$d" ] || return 0
	for _ in 1 2 3; do
		while read -r pid; do
			echo "$pid" > "$(dirname "$d")/cgroup.procs" 2>/dev/null
		done < "$d/cgroup.procs"
		[ -s "$d/cgroup.procs" ] || break
		sleep 0.1
	done
	for _ in $(seq 50); do
		rmdir "$d" 2>/dev/null && return 0
		[ -d "$d" ] || return 0
		sleep 0.1
	done
	echo "$PROG: warning: could not remove cgroup $d" >&2
	return 1
}

# shellcheck disable=SC2317  # run by the trap
cleanup() {
	if [ -n "$child" ]; then
		kill "$child" 2>/dev/null
		wait "$child" 2>/dev/null
		child=""
	fi
	cg_remove "$cg"
	cg=""
	rm -rf "$tmpdir"
}
trap cleanup EXIT
trap 'echo "$PROG: interrupted" >&2; exit 130' INT TERM HUP

# Makes a fresh cgroup for one run with the limit; returns 1 (after saying
# why) where that cannot be done.
cg_make() {
	local name=$1
	cg=$CG_PARENT/umlmem-small-ram-$$-$name
	if [ "$CGV" = 2 ]; then
		# the root's children may only use the controllers it delegates
		grep -qw memory "$CG_PARENT/cgroup.subtree_control" 2>/dev/null ||
			echo +memory > "$CG_PARENT/cgroup.subtree_control" 2>/dev/null
	fi
	if ! mkdir "$cg" 2>"$tmpdir/err"; then
		echo "$PROG: cannot create cgroup $cg: $(sed 's/^mkdir: //' "$tmpdir/err")" >&2
		cg=""
		return 1
	fi
	if [ "$CGV" = 2 ]; then
		echo "$limit" > "$cg/memory.max" || return 1
		[ -e "$cg/memory.swap.max" ] && { echo 0 > "$cg/memory.swap.max" || return 1; }
	else
		echo "$limit" > "$cg/memory.limit_in_bytes" || return 1
		[ -e "$cg/memory.memsw.limit_in_bytes" ] &&
			{ echo "$limit" > "$cg/memory.memsw.limit_in_bytes" || return 1; }
		echo 0 > "$cg/memory.swappiness" || return 1
	fi
	return 0
}

# The run's counters: peak usage, times the limit was hit, OOM kills.
cg_read() {
	local f
	peak=0 failcnt=0 oom_kills=0
	if [ "$CGV" = 2 ]; then
		f=$cg/memory.peak
		[ -r "$f" ] && peak=$(cat "$f")
		# "max": how often usage was about to exceed memory.max
		failcnt=$(awk '$1 == "max" { print $2 }' "$cg/memory.events")
		oom_kills=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
	else
		peak=$(cat "$cg/memory.max_usage_in_bytes")
		# A charge is checked against memsw (memory + swap) first, where
		# that exists, then against memory: it fails at one or the other,
		# so the two counts add up. Some kernels leave both at 0 even at
		# an OOM kill; peak and the OOM kills do not depend on them.
		failcnt=$(cat "$cg/memory.failcnt")
		[ -r "$cg/memory.memsw.failcnt" ] &&
			failcnt=$((failcnt + $(cat "$cg/memory.memsw.failcnt")))
		oom_kills=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.oom_control")
	fi
	: "${peak:=0}" "${failcnt:=0}" "${oom_kills:=0}"
}

mib() {
	awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'
}

# ---- the runs ----------------------------------------------------------------

echo "$PROG: memory cgroup v$CGV under $CG_PARENT"
echo "$PROG: limit $(mib "$limit") = budget $(mib "$budget") + slack $(mib $((SLACK_MIB * 1024 * 1024))) for metadata (page tables, frame table, indexes, the binary, libc, io_uring rings)"
swapdir=${TMPDIR:-/var/tmp}
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	--swap-dir) [ $((i + 1)) -lt ${#args[@]} ] && swapdir=${args[i + 1]} ;;
	--swap-dir=*) swapdir=${args[i]#--swap-dir=} ;;
	esac
done
if [ "$(stat -f -c %T "$swapdir" 2>/dev/null)" = tmpfs ]; then
	echo "$PROG: note: the swap directory $swapdir is on tmpfs: swap files there are memory charged to the cgroup, so the runs will hit the limit; use --swap-dir on a disk"
fi

rows=()
status=0
for run in "${runs[@]}"; do
	limit=$base_limit
	if [ "$run" = demo ]; then
		cmd=("$UMLMEM" demo "${DEMO_ARGS[@]}" "${budget_opt[@]}" "${args[@]}" --json)
	elif [ "$run" = stress ]; then
		cmd=("$UMLMEM" stress "${STRESS_ARGS[@]}" "${budget_opt[@]}" "${args[@]}" --json)
	else
		limit=$fits_limit
		cmd=("$UMLMEM" stress "${FITS_ARGS[@]}" --budget "$fits_budget" --swap-dir "$swapdir" --json)
		echo
		echo "$PROG: fits: budget $(mib "$fits_budget"), limit $(mib "$limit") = what $FITS_GUESTS guests of $FITS_GUEST_MIB MiB touch + slack: the budget is a limit, not a reservation"
	fi
	if ! cg_make "$run"; then
		cg_remove "$cg"
		cg=""
		skip "cannot set up a memory cgroup here"
	fi
	echo
	echo "$PROG: $run: ${cmd[*]}"
	echo "$PROG: $run: in $cg, limit $limit bytes"
	out=$tmpdir/$run.json
	# The subshell joins the cgroup before exec, so the program is charged
	# from its first page; its progress goes to the terminal, its JSON
	# into $out.
	(
		echo "$BASHPID" > "$cg/cgroup.procs" || exit 125
		exec "${cmd[@]}"
	) > "$out" &
	child=$!
	wait "$child"
	rc=$?
	child=""
	cg_read
	cg_remove "$cg"
	cg=""

	json=$(tail -n 1 "$out")
	verified=$(printf '%s' "$json" | sed -n 's/.*"verified": *\(true\|false\).*/\1/p')
	mismatches=$(printf '%s' "$json" | sed -n 's/.*"mismatches": *\([0-9]*\).*/\1/p')
	: "${verified:=none}" "${mismatches:=?}"
	if [ "$rc" = 125 ]; then
		echo "$PROG: $run: could not join the cgroup" >&2
	elif [ "$rc" -gt 128 ]; then
		echo "$PROG: $run: killed by signal $((rc - 128))$([ "$oom_kills" != 0 ] && echo ' (the OOM killer)')" >&2
	fi
	echo "$PROG: $run: exit $rc, verified $verified, mismatches $mismatches, peak $(mib "$peak") of $(mib "$limit"), OOM kills $oom_kills"
	ok=yes
	[ "$rc" = 0 ] && [ "$verified" = true ] && [ "$mismatches" = 0 ] && [ "$oom_kills" = 0 ] || ok=no
	[ "$ok" = yes ] || status=1
	rows+=("$run|$(mib "$limit")|$(mib "$peak")|$(awk -v p="$peak" -v l="$limit" 'BEGIN { printf "%.1f%%", 100 * p / l }')|$failcnt|$oom_kills|$verified/$mismatches|$rc|$ok")
done

echo
row() {
	printf '%-7s %12s %12s %10s %8s %9s %14s %5s %4s\n' "$@"
}
row run limit peak peak/limit failcnt "oom kills" verified/mism exit ok
for r in "${rows[@]}"; do
	IFS='|' read -r a b c d e f g h k <<< "$r"
	row "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$k"
done
echo
for run in "${runs[@]}"; do
	if [ "$run" = fits ]; then
		echo "fits: budget $(mib "$fits_budget") far above its limit $(mib "$fits_limit") = $FITS_GUESTS guests of $FITS_GUEST_MIB MiB + slack"
	else
		echo "$run: limit = budget $(mib "$budget") + slack $(mib $((SLACK_MIB * 1024 * 1024)))"
	fi
done
echo "failcnt ($([ "$CGV" = 2 ] && echo 'memory.events max' || echo 'memory.failcnt + memory.memsw.failcnt')): times a charge met the limit and the kernel had to reclaim first"
if [ "$status" = 0 ]; then
	echo "$PROG: PASS: every run verified with no mismatch and no OOM kill inside the limit"
else
	echo "$PROG: FAIL: see the rows marked 'no'"
fi
exit "$status"
