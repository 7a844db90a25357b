#!/usr/bin/env bash
# Prints, in about 50 lines, the state a failed test run left behind: free disk and memory, the health
# of every service of the runtime (QP_HOME, QP_PORT_OFFSET as the tests used them), and the last
# warnings/errors of each service's log with the log's path. scripts/test.sh calls it when a phase
# with services failed; it is also useful by hand after `qp stack up` misbehaves.
set -uo pipefail
cd "$(dirname "$0")/.."
home=${QP_HOME:-$PWD/.qp}
echo "[diagnose] $(date -u +%FT%TZ) runtime $home (ports +${QP_PORT_OFFSET:-0})"
df -h "$home" /tmp 2>/dev/null | awk '{print "[diagnose] " $0}'
free -m | head -2 | awk '{print "[diagnose] " $0}'
timeout 60 .venv/bin/qp stack status 2>&1 | tail -12 | sed 's/^/[diagnose] /'
pattern=" (ERROR|FATAL) |java.lang.OutOfMemoryError|No space left"
for log in "$home"/logs/*.log; do
  [ -f "$log" ] || continue
  hits=$(grep -v "^====" "$log" | grep -c -E "$pattern")
  echo "[diagnose] $log: $(wc -l <"$log") lines, ${hits:-0} ERROR/FATAL lines; last ones:"
  grep -v "^====" "$log" | grep -E "$pattern" | tail -3 | cut -c1-240 | sed 's/^/[diagnose]   /'
done
