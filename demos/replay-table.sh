#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# replay-table.sh: umlmem's faults on recorded traces against exact LRU,
# Belady's MIN, ARC and S3-FIFO, at budgets of 10%, 25% and 50% of each trace's
# footprint, as a Markdown table, with the geometric mean of each ratio.
#
#   demos/replay-table.sh [TRACE...]     (default: build/traces/*.bin)
#
#   FRACTIONS="0.10 0.25 0.50"   the budgets, as fractions of the footprint
#   UMLMEM=PATH                  the umlmem program (default: build/umlmem)
#   REPLAY_ARGS="..."            more options for `umlmem replay`, e.g.
#                                --no-readahead or --reclaim-batch 8
#
# One `umlmem replay --json` per trace and budget, each on a host of its
# own. Ratios above 1 in the umlmem/LRU column (umlmem faulted more than
# exact LRU on the same number of frames) are in bold and listed under the
# table. The counts are deterministic (one thread, no reclaim thread), so
# a run gives the same table every time; `demos/traces/record.sh` makes
# the traces.
set -u

prog=replay-table.sh
root=$(cd "$(dirname -- "$0")/.." && pwd)
umlmem=${UMLMEM:-$root/build/umlmem}
fractions=${FRACTIONS:-0.10 0.25 0.50}
read -r -a extra <<<"${REPLAY_ARGS:-}"

[ -x "$umlmem" ] || { echo "$prog: no $umlmem: build it (make) or set UMLMEM" >&2; exit 1; }
if [ $# -eq 0 ]; then
	set -- "$root"/build/traces/*.bin
	[ -e "$1" ] || { echo "$prog: no traces in build/traces: run demos/traces/record.sh" >&2; exit 1; }
fi

echo "| trace | footprint (pages) | refs | budget (pages) | umlmem faults | LRU faults | MIN faults | ARC faults | S3-FIFO faults | umlmem/LRU | umlmem/MIN | umlmem/ARC | umlmem/S3-FIFO | ARC/LRU | S3-FIFO/LRU |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
above=()
logs=()
for t in "$@"; do
	for f in $fractions; do
		line=$("$umlmem" replay --json --budget-fraction "$f" "${extra[@]}" "$t") || {
			echo "$prog: umlmem replay failed on $t at $f" >&2; exit 1; }
		row=$(awk -v name="$(basename -- "$t" .bin)" -v frac="$f" '
			function get(k,   v) {
				if (!match($0, "\"" k "\": [^,}]*"))
					return ""
				v = substr($0, RSTART + length(k) + 4, RLENGTH - length(k) - 4)
				gsub(/"/, "", v)
				return v
			}
			{
				r = sprintf("%.3f", get("faults_per_lru"))
				if (get("faults_per_lru") + 0 > 1)
					r = "**" r "**"
				printf "| %s | %s | %s | %d%% = %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.3f | %.3f |\n",
					name, get("footprint_pages"), get("refs"), frac * 100 + 0.5,
					get("budget_pages"), get("faults"), get("lru_faults"),
					get("opt_faults"), get("arc_faults"), get("s3fifo_faults"), r,
					sprintf("%.3f", get("faults_per_opt")),
					sprintf("%.3f", get("faults_per_arc")),
					sprintf("%.3f", get("faults_per_s3fifo")),
					get("arc_faults") / get("lru_faults"),
					get("s3fifo_faults") / get("lru_faults")
			}' <<<"$line")
		echo "$row"
		# natural logs of the six ratios, the row's last six cells
		logs+=("$(awk '{ gsub(/\*/, ""); n = split($0, c, "|");
			for (i = n - 6; i < n; i++) printf "%s ", log(c[i]) }' <<<"$row")")
		case $row in
		*'**'*) above+=("$(basename -- "$t" .bin) at $(awk -v f="$f" 'BEGIN { printf "%d%%", f * 100 + 0.5 }')") ;;
		esac
	done
done
printf '%s\n' "${logs[@]}" | awk '{ for (i = 1; i <= 6; i++) s[i] += $i; n++ }
	END { if (n) printf "| geometric mean | | | | | | | | | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n",
		exp(s[1] / n), exp(s[2] / n), exp(s[3] / n), exp(s[4] / n), exp(s[5] / n), exp(s[6] / n) }'
echo
if [ ${#above[@]} -gt 0 ]; then
	list=$(printf '%s, ' "${above[@]}")
	echo "Above exact LRU: ${list%, }."
else
	echo "Nowhere above exact LRU."
fi
