#!/usr/bin/env bash
# slurm-cluster.sh - a real single-node SLURM cluster (with job accounting) from Debian 12 packages, for
# developers and CI: munged, MariaDB, slurmdbd, slurmctld and slurmd, started by hand (no systemd needed), with
# generic GPU resources (GRES) that SLURM schedules and accounts like real GPUs (there is no CUDA behind them).
#
#   bash scripts/slurm-cluster.sh start    # install what is missing, write the configs, start what is not running
#   bash scripts/slurm-cluster.sh status   # one line per daemon and the node state; exit 0 only if all are up
#   bash scripts/slurm-cluster.sh stop     # stop the daemons (packages, configs and the job database stay)
#   bash scripts/slurm-cluster.sh stop slurmd slurmctld   # stop only these (what a test session started)
#
# Idempotent: a second `start` installs nothing and starts only what is down; a changed config restarts the
# SLURM daemons. Needs root and apt (Debian 12: slurm-wlm 22.05, munge 0.5, MariaDB 10.11).
# Environment (all optional):
#   ACS_SLURM_CLUSTER    cluster name                         [acs]
#   ACS_SLURM_PARTITION  the one partition (the default one)  [debug]
#   ACS_SLURM_NODE_CPUS  CPUs of the node                     [nproc]
#   ACS_SLURM_NODE_MEM_MB memory of the node in MB            [85% of what `slurmd -C` detects]
#   ACS_SLURM_NODE_GPUS  GPUs the node declares (GRES gpu); 0: none  [2]
#   ACS_SLURM_CRED_EXPIRE seconds a requeued job waits before it starts again  [10; SLURM's default is 120]
#   ACS_SLURM_DB_PASS    MariaDB password of the slurm user   [acs-slurmdbd]
# Exit status: 0 done, 1 a daemon failed (its log is named), 2 usage, 3 apt-get could not install the packages.
# The GPUs are stand-ins: jobs asking for them (--gpus, --gres=gpu:N, the profile's ACS_SLURM_GPUS) get them
# (sacct -o AllocTRES shows gres/gpu=N, the job sees CUDA_VISIBLE_DEVICES) but find no CUDA: run them on the CPU
# (device=auto or device=cpu). A job asking for more GPUs than the node has is refused by sbatch at once.
set -euo pipefail

ACTION=${1:-}
CLUSTER=${ACS_SLURM_CLUSTER:-acs}
PARTITION=${ACS_SLURM_PARTITION:-debug}
DB_PASS=${ACS_SLURM_DB_PASS:-acs-slurmdbd}
NODE=localhost             # the node answers on loopback whatever the machine's hostname is
LOGDIR=/var/log/slurm
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
GPU_DIR=/var/lib/slurm/fake-gpus  # the stand-in device files of the GPUs
DBD_CONF=/etc/slurm/slurmdbd.conf
START=$SECONDS

say() { echo "[slurm-cluster +$((SECONDS - START))s] $*"; }
fail() { say "error: $*" >&2; exit 1; }

# every daemon in start order (stop runs it backwards) and its pidfile
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
declare -A PIDFILE=([munged]=/run/munge/munged.pid [mariadbd]=/run/mysqld/mysqld.pid [slurmdbd]=/run/slurmdbd.pid
                    [slurmctld]=/run/slurmctld.pid [slurmd]=/run/slurmd.pid)

# the pid of a running daemon (its pidfile names a live process of that name), else fail
running() {
  local pf=${PIDFILE[$1]} pid
  [[ -s $pf ]] || return 1
  pid=$(tr -cd 0-9 < "$pf")
  [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
  echo "$pid"
}

# retry a command every half second for up to $1 seconds
retry() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do (( SECONDS < deadline )) || return 1; sleep 0.5; done
}

stop_daemon() {
  local pid
  pid=$(running "$1") || return 0
  say "stopping $1 (pid $pid)"
  kill "$pid"
  retry 20 bash -c "! kill -0 $pid" || { say "$1 ignored TERM for 20 s: killing it"; kill -9 "$pid" 2>/dev/null || true; }
  rm -f "${PIDFILE[$1]}"   # a stale pidfile breaks Debian's package scripts later
}

install_packages() {
  local want=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client) missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  (( ${#missing[@]} )) || return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # the packages' scripts try to start their services; without systemd (or with policy-rc.d) that is refused: fine
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    { say "error: apt-get could not install ${missing[*]}" >&2; exit 3; }
}

# write file $1 from stdin with owner $2 and mode $3 if its content changed, and add it to CHANGED
CHANGED=""
put_file() {
  local tmp; tmp=$(mktemp)
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 0; fi
  install -o "$2" -g "$2" -m "$3" "$tmp" "$1"; rm -f "$tmp"
  CHANGED+=" $1"; say "wrote $1"
}

# SLURM 22.05 drops a GPU without File= from the node ("Removing file-less GPU") and wants a character or block
# device there: one /dev/null alias per GPU (mknod), or an empty file where mknod is not allowed (slurmd then logs
# "is not a valid character or block device" but still counts the GPU)
make_gpu_files() {
  local i
  install -d $GPU_DIR
  for (( i = 0; i < $1; i++ )); do
    [[ -e $GPU_DIR/gpu$i ]] || mknod -m 666 $GPU_DIR/gpu$i c 1 3 2>/dev/null || touch $GPU_DIR/gpu$i
  done
}

write_configs() {
  local cpus mem gpus gres="" gres_files="# no GPUs (ACS_SLURM_NODE_GPUS=0)"
  cpus=${ACS_SLURM_NODE_CPUS:-$(nproc)}
  gpus=${ACS_SLURM_NODE_GPUS:-2}
  [[ $gpus =~ ^[0-9]+$ ]] || { say "error: ACS_SLURM_NODE_GPUS=$gpus is not a whole number; e.g. ACS_SLURM_NODE_GPUS=2" >&2; exit 2; }
  # a node that claims more memory than slurmd detects is drained: default to 85% of the detected size
  mem=${ACS_SLURM_NODE_MEM_MB:-$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') * 85 / 100 ))}
  install -d -o slurm -g slurm /var/lib/slurm/slurmctld $LOGDIR
  install -d /var/lib/slurm/slurmd
  if (( gpus > 0 )); then
    make_gpu_files "$gpus"
    gres=" Gres=gpu:$gpus" gres_files="Name=gpu File=$GPU_DIR/gpu[0-$((gpus - 1))]"
  fi
  put_file $GRES_CONF root 644 <<EOF
# written by acs-bench scripts/slurm-cluster.sh: $gpus stand-in GPUs (no CUDA behind them), no autodetection (no NVML)
AutoDetect=off
$gres_files
EOF
  put_file $CONF root 644 <<EOF
# written by acs-bench scripts/slurm-cluster.sh: one node, daemons started by hand, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$NODE
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits for the credentials of its last run to expire before it starts again (default 120 s)
AuthInfo=cred_expire=${ACS_SLURM_CRED_EXPIRE:-10}
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
# process tracking without cgroups (works in containers); memory and CPU limits are therefore not enforced
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
# try pending jobs every 5 s (default 60 s): a requeued job restarts soon after its wait
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem gets 1 GB per CPU instead of the whole node
DefMemPerCPU=1000
ReturnToService=2
# finished jobs stay visible to squeue for 5 minutes
MinJobAge=300
# accounting in slurmdbd + MariaDB: sacct works (Snakemake's SLURM plugin and submitit read job states from it)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStoragePort=6819
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
# GPUs as generic resources (gres.conf names their files); accounted, so sacct -o AllocTRES shows gres/gpu=N
GresTypes=gpu
AccountingStorageTRES=gres/gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd refuses a config file that others can read
  put_file $DBD_CONF slurm 600 <<EOF
AuthType=auth/munge
DbdHost=$NODE
DbdPort=6819
SlurmUser=slurm
LogFile=$LOGDIR/slurmdbd.log
PidFile=${PIDFILE[slurmdbd]}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}

start_munge() {
  install -d -o munge -g munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating the munge key"
    (umask 277; head -c 1024 /dev/urandom > /etc/munge/munge.key); chown munge:munge /etc/munge/munge.key
  fi
  running munged >/dev/null && return 0
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  retry 10 bash -c 'munge -n | unmunge' || fail "munged did not start"
}

start_mariadb() {
  install -d -o mysql -g root /run/mysqld
  if ! running mariadbd >/dev/null; then
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
    say "starting mariadbd (socket only)"
    # slurmdbd warns below a 512 MB buffer pool and a 900 s lock wait
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file="${PIDFILE[mariadbd]}" \
      --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 >> $LOGDIR/mariadbd.log 2>&1 < /dev/null &
    retry 30 mysqladmin ping || fail "mariadbd did not start (see $LOGDIR/mariadbd.log)"
  fi
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
            ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurm_daemons() {
  # a changed config takes effect by restarting the daemons that read it
  if [[ $CHANGED == *"$CONF"* || $CHANGED == *"$GRES_CONF"* ]]; then stop_daemon slurmd; stop_daemon slurmctld; fi
  if [[ $CHANGED == *"$DBD_CONF"* ]]; then stop_daemon slurmdbd; fi
  if ! running slurmdbd >/dev/null; then say "starting slurmdbd"; /usr/sbin/slurmdbd; fi
  retry 30 sacctmgr -n list cluster || fail "slurmdbd did not answer (see $LOGDIR/slurmdbd.log)"
  # registering the cluster before slurmctld's first start avoids a race on a fresh database
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  if ! running slurmctld >/dev/null; then say "starting slurmctld"; /usr/sbin/slurmctld; fi
  retry 30 bash -c 'scontrol ping | grep -q UP' || fail "slurmctld did not start (see $LOGDIR/slurmctld.log)"
  if ! running slurmd >/dev/null; then say "starting slurmd"; /usr/sbin/slurmd -N $NODE; fi
  # a node left drained or down by an earlier unclean stop comes back with `resume`
  if ! retry 15 bash -c "sinfo -h -n $NODE -o %t | grep -Eq '^(idle|mix|alloc)$'"; then
    say "node $NODE is $(sinfo -h -n $NODE -o %t): resuming it"
    scontrol update nodename=$NODE state=resume
    retry 15 bash -c "sinfo -h -n $NODE -o %t | grep -Eq '^(idle|mix|alloc)$'" ||
      fail "node $NODE is $(sinfo -h -n $NODE -o %t) (see $LOGDIR/slurmd.log)"
  fi
}

status() {
  local name pid ok=0
  for name in "${DAEMONS[@]}"; do
    if pid=$(running "$name"); then echo "$name running (pid $pid)"; else echo "$name stopped"; ok=1; fi
  done
  (( ok == 0 )) && sinfo -h -o "partition %P node %N %t, %c CPUs, %m MB, GRES %G" && return 0
  return 1
}

case $ACTION in
  start)
    [[ $(id -u) -eq 0 ]] || fail "start needs root (it installs packages and starts system daemons)"
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurm_daemons
    say "cluster '$CLUSTER' up: partition $PARTITION on node $NODE ($(sinfo -h -n $NODE -o '%c CPUs, GRES %G'))"
    ;;
  stop)  # `stop`: every daemon; `stop NAME...`: only those (e.g. the ones a test session started), in stop order
    shift
    for (( i = ${#DAEMONS[@]} - 1; i >= 0; i-- )); do
      if (( $# == 0 )) || [[ " $* " == *" ${DAEMONS[i]} "* ]]; then stop_daemon "${DAEMONS[i]}"; fi
    done
    ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
