#!/usr/bin/env bash
# Hardware-in-the-loop checks of a station (hil/README.md): a thin wrapper around `edge-inspector hil`.
#
#   hil/run.sh                                             # simulator: viky.cti + soft-PLC
#   hil/run.sh --station hil/line-example.toml --seconds 10
#   hil/run.sh --station /etc/edge-inspector/line-1.toml --truth hil/test-hide.example.json
#
# Every option goes to `edge-inspector hil`. Without --report the JSON report is written to
# hil-report-<station file>-<time>.json in the current folder. Exit code: 0 passed (checks passed or
# skipped with a reason), 1 a check failed, 2 bad input.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ei="${EDGE_INSPECTOR:-$here/../.venv/bin/edge-inspector}"
[ -x "$ei" ] || ei="edge-inspector"

station="viky-sim"
report=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --report) report=(--report "${args[$((i + 1))]:-}") ;;
        --station) station="$(basename "${args[$((i + 1))]:-station}" .toml)" ;;
    esac
done
if [ ${#report[@]} -eq 0 ]; then
    report=(--report "hil-report-$station-$(date +%Y%m%dT%H%M%S).json")
    args+=("${report[@]}")
fi
"$ei" hil "${args[@]}" && rc=0 || rc=$?
echo "report: ${report[1]}" >&2
exit "$rc"
