#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian or Ubuntu, as root), to try profiles/slurm before a site's
# cluster and for tests/test_slurm_cluster.py. It installs SLURM's controller, node daemon and munge from the
# distribution, writes /etc/slurm/slurm.conf for this machine's CPUs and memory (never over a file it did not
# write), and starts the daemons. No accounting database: run snakemake with --slurm-status-command squeue
# (MinJobAge keeps finished jobs visible to squeue for an hour). Stop it with: local-cluster.sh stop
set -euo pipefail

STATE=${AMCORE_SLURM_STATE:-/var/tmp/amcore-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by amcore profiles/slurm/local-cluster.sh"

if [[ ${1:-start} == stop ]]; then
    for daemon in slurmd slurmctld; do
        [[ -f $STATE/$daemon.pid ]] && kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true
    done
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "local-cluster.sh: run as root (it installs packages and starts SLURM's daemons)" >&2
    exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi
if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    echo "local-cluster.sh: $CONF exists and is not ours: this machine has a SLURM set-up; use that" >&2
    exit 1
fi

mkdir -p "$STATE/state" "$STATE/spool" "$STATE/log" /run/munge /var/log/munge
# munged refuses files it does not own; a munged that the package's install started as root left some behind
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
pgrep -x munged >/dev/null || runuser -u munge -- munged

node=$(hostname -s)
cpus=$(nproc)
memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))  # leave a fifth to the system
cat >"$CONF" <<EOF
$MARK
ClusterName=amcore-local
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
KillWait=30
NodeName=$node CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "local-cluster.sh: the node did not come up; see $STATE/log" >&2
exit 1
