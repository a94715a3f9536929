#!/usr/bin/env bash
# A single-node SLURM cluster on localhost (Debian's slurm 22.05) for the SLURM tests in CI:
# start (install if needed, configure under $BRAINSEG_SLURM_DIR, start the daemons), stop, env (the
# exports for clients). Every wait is bounded; outside $BRAINSEG_SLURM_DIR only /run/munge and, if
# the node name does not resolve, one line of /etc/hosts are written.
set -euo pipefail
STATE=${BRAINSEG_SLURM_DIR:-/tmp/brainseg-slurm}
CONF=$STATE/slurm.conf
HOST=$(hostname -s)

wait_for() {  # wait_for SECONDS COMMAND...: poll until the command succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.5; done
}

write_config() {
  mkdir -p "$STATE"/{state,spool,bin}
  getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
  local hw cpus realmem topology
  hw=$(slurmd -C | head -n 1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  realmem=$(( $(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw") * 9 / 10 ))
  topology=$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$hw")
  cat >"$CONF" <<CONF
ClusterName=brainseg
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
DefMemPerCPU=$(( realmem / cpus / 2 ))
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus $topology RealMemory=$realmem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$STATE/bin/sacct" <<'SACCT'
#!/bin/sh
# sacct for submitit without accounting: JobID|State|NodeList from squeue (for MinJobAge seconds).
ids=""
while [ $# -gt 0 ]; do
  case "$1" in -j) ids="$ids,$2"; shift 2 ;; *) shift ;; esac
done
echo "JobID|State|NodeList"
squeue --states=all --noheader --format='%i|%T|%N' ${ids:+--jobs=${ids#,}} 2>/dev/null
exit 0
SACCT
  chmod +x "$STATE/bin/sacct"
}

start() {
  type -P slurmctld slurmd munged sinfo >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null; }
  write_config
  export SLURM_CONF=$CONF
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
  [ -S /run/munge/munge.socket.2 ] && munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
  wait_for 10 munge -n
  [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || slurmctld -f "$CONF"
  wait_for 20 scontrol ping
  [ -f "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null || slurmd -f "$CONF"
  local up="sinfo -h -o %T | grep -Eq '^(idle|mixed|allocated)'"
  wait_for 30 sh -c "$up" || {
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    wait_for 15 sh -c "$up"
  }
  sinfo
}

stop() {
  export SLURM_CONF=$CONF
  if [ -f "$CONF" ] && scontrol ping >/dev/null 2>&1; then
    scancel --user=root >/dev/null 2>&1 || true
    wait_for 30 sh -c '[ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING)" ]' || true
  fi
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
    [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
}

case "${1:-}" in
  start | stop) "$1" ;;
  env) echo "export SLURM_CONF=$CONF PATH=$STATE/bin:\$PATH" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
