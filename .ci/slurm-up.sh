#!/usr/bin/env bash
# Bring up a one-node SLURM cluster with accounting on this machine, for tests of profiles/slurm
# (facts: ../shared/specs/slurm-one-node.md). Needs root and Debian/Ubuntu packages; no systemd needed.
#   sudo .ci/slurm-up.sh     then   sbatch/sinfo/sacct work;   sudo .ci/slurm-down.sh   stops what this started.
# Daemons bind to 127.0.0.1 only (NoInAddrAny). Exit codes: 0 up, 3 packages missing and not installable,
# 1 a daemon did not come up (its log is printed). The cluster has no GPUs: run the workflow with gpu=0
# for the GPU rules (README, Clusters).
set -euo pipefail
STATE=${LMCAL_SLURM_STATE:-/var/lib/lmcal-slurm}    # our pid files, logs and DB password
CLUSTER=lmcal
MARK="# written by lmcal .ci/slurm-up.sh"
PKGS="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

[ "$(id -u)" = 0 ] || { echo "slurm-up: must run as root" >&2; exit 3; }
missing=0
for b in slurmctld slurmd sbatch sacct slurmdbd munged mariadbd; do command -v "$b" >/dev/null || missing=1; done
if [ $missing = 1 ]; then
  echo "slurm-up: installing $PKGS" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS; } >"/tmp/slurm-up-apt.log" 2>&1
  then
    echo "slurm-up: could not install $PKGS (see /tmp/slurm-up-apt.log)" >&2; tail -5 /tmp/slurm-up-apt.log >&2; exit 3
  fi
fi
for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
  if [ -e "$f" ] && ! head -1 "$f" | grep -qF "$MARK"; then
    echo "slurm-up: $f exists and was not written by this script; refusing to replace it" >&2; exit 3
  fi
done
mkdir -p "$STATE" && chmod 700 "$STATE"
if [ -s "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null && scontrol ping 2>/dev/null | grep -q UP
then
  echo "slurm-up: already up ($(sinfo -h -o '%P %D %t'))"; exit 0
fi
HOST=$(hostname -s)
getent ahostsv4 "$HOST" | grep -q '^127\.' || { echo "slurm-up: $HOST must resolve to 127.x (/etc/hosts)" >&2; exit 1; }

wait_for() {  # wait_for <what> <seconds> <log> <command...>: poll until the command succeeds
  local what=$1 secs=$2 log=$3; shift 3
  for _ in $(seq "$((secs * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "slurm-up: $what did not come up within ${secs}s" >&2; [ -f "$log" ] && tail -20 "$log" >&2; exit 1
}
start_bg() {  # start_bg <name> <command...>: run a foreground daemon in its own session, pid in $STATE
  setsid "${@:2}" >"$STATE/$1.out" 2>&1 < /dev/null &
  echo $! >"$STATE/$1.pid"
}

# munge (daemonises itself); reuse one that already answers
install -d -o munge -g munge -m 755 /run/munge
[ -s /etc/munge/munge.key ] || mungekey --create
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  runuser -u munge -- munged && cp /run/munge/munged.pid "$STATE/munged.pid"
  wait_for munge 15 /var/log/munge/munged.log sh -c 'munge -n | unmunge'
fi

# MariaDB (Debian's config binds 127.0.0.1:3306) and the accounting database
install -d -o mysql -g mysql -m 755 /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  start_bg mariadbd mariadbd --user=mysql
  wait_for MariaDB 60 "$STATE/mariadbd.out" mariadb-admin ping
fi
[ -s "$STATE/db.pass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/db.pass")
PASS=$(cat "$STATE/db.pass")
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$PASS';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$PASS'; CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

install -d -o slurm -g slurm /run/slurm /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
cat >/etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
CommunicationParameters=NoInAddrAny
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$PASS
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
EOF
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf
NODE=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=... as slurmd itself measures them
cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
SlurmUser=slurm
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

start_bg slurmdbd slurmdbd -D
wait_for slurmdbd 60 /var/log/slurm/slurmdbd.log sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true  # creates account root and user root; exists: fine
start_bg slurmctld slurmctld -D
wait_for slurmctld 60 /var/log/slurm/slurmctld.log sh -c 'scontrol ping | grep -q UP'
start_bg slurmd slurmd -D
wait_for slurmd 60 /var/log/slurm/slurmd.log sh -c 'sinfo -h -o %t | grep -qx idle'
echo "slurm-up: cluster $CLUSTER up ($(sinfo -h -o '%P %D %t %c CPUs %m MB'))"
