#!/usr/bin/env bash
# A real single-node Slurm cluster for the sharding test (Debian's Slurm 22.05 and munge; see
# shared/reference/slurm-on-one-machine.md). `scripts/slurm.sh start DIR` installs the packages if missing, starts
# munged, slurmctld and slurmd with a slurm.conf generated in DIR and waits for the node to be idle;
# `scripts/slurm.sh stop DIR` stops those daemons by the pids they wrote. Point Slurm's commands at the cluster with
# `export SLURM_CONF=DIR/slurm.conf`. Idempotent: `start` on a running cluster only checks that it answers.
set -euo pipefail
action="${1:?usage: scripts/slurm.sh start|stop DIR}"
dir="$(mkdir -p "${2:?usage: scripts/slurm.sh start|stop DIR}" && cd "$2" && pwd)"
export SLURM_CONF="$dir/slurm.conf"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

stop() {
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    if [ -f "$pidfile" ]; then
      $sudo kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null && return
  echo "vene setup: installing Slurm and munge (for the sharding test)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
  [ -f "$dir/munged.pid" ] && kill -0 "$(cat "$dir/munged.pid")" 2>/dev/null && return
  $sudo mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    $sudo dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  $sudo chown -R munge: /etc/munge /run/munge /var/lib/munge /var/log/munge
  $sudo chmod 400 /etc/munge/munge.key
  $sudo su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=/run/munge/vene-munged.pid"
  $sudo cp /run/munge/vene-munged.pid "$dir/munged.pid"
}

write_conf() {
  local host memory
  host="$(hostname)"
  memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat >"$SLURM_CONF" <<CONF
ClusterName=vene-test
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AuthType=auth/munge
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  install
  start_munge
  if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null && sinfo >/dev/null 2>&1; then
    return
  fi
  write_conf
  $sudo slurmctld -f "$SLURM_CONF"
  $sudo slurmd -f "$SLURM_CONF"
  for _ in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
      echo "vene setup: Slurm cluster up (SLURM_CONF=$SLURM_CONF)" >&2
      return
    fi
    sleep 1
  done
  echo "vene setup: the Slurm node did not become idle in 60 s; see $dir/log" >&2
  stop
  exit 1
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: scripts/slurm.sh start|stop DIR" >&2; exit 2 ;;
esac
