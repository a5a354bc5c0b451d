#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started, in reverse order, by the pid files it kept (daemons that were already
# running before it, such as a munged it reused, are left alone). Idempotent.
set -uo pipefail
STATE=${LMCAL_SLURM_STATE:-/var/lib/lmcal-slurm}
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f="$STATE/$name.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { echo "slurm-down: $name ($pid) ignored SIGTERM for 30 s; SIGKILL" >&2; kill -KILL "$pid"; }
  fi
  rm -f "$f"
done
echo "slurm-down: stopped"
