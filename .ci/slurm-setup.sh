#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, with accounting (sacct) through slurmdbd and MariaDB.
#
#   sudo .ci/slurm-setup.sh          # as root; idempotent: a second run finds everything up
#
# For tests and CI of profiles/slurm (tests/test_slurm.py). No systemd is assumed: the daemons
# (munged, mariadbd, slurmdbd, slurmctld, slurmd) are started directly. Only loopback is used.
# Debian/Ubuntu packages: slurmctld slurmd slurm-client slurmdbd munge mariadb-server.
#
# Settings (environment):
#   SLURM_SETUP_CLUSTER    cluster name                     (default: gluerl)
#   SLURM_SETUP_PARTITION  the one partition, the default   (default: debug)
#   SLURM_SETUP_ACCOUNT    account the invoking user is put in (default: gluerl)
#   SLURM_SETUP_USER       that user                         (default: the invoking user)
#   SLURM_SETUP_FAKE_GPUS  "gpu" GRES the node advertises (default: 1), backed by empty placeholder
#                          files, so jobs asking `--gpus=1` schedule on a GPU-less machine (SLURM then
#                          sets CUDA_VISIBLE_DEVICES, but there is no CUDA device: they run on the CPU)
#   SLURM_SETUP_TIMEOUT    seconds to wait for each daemon and for the node to be idle (default: 90)
#
# Exit status: 0 ready (the last line reads "slurm-setup: ready ..."), 3 the packages could not be
# installed (no package repository: callers may skip), anything else a real failure.
set -euo pipefail

CLUSTER=${SLURM_SETUP_CLUSTER:-gluerl}
PARTITION=${SLURM_SETUP_PARTITION:-debug}
ACCOUNT=${SLURM_SETUP_ACCOUNT:-gluerl}
ACCT_USER=${SLURM_SETUP_USER:-$(id -un)}
FAKE_GPUS=${SLURM_SETUP_FAKE_GPUS:-1}
TIMEOUT=${SLURM_SETUP_TIMEOUT:-90}
NODE=localhost
SLURM_USER=slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
ETC=/etc/slurm
STATE=/var/lib/slurm
LOGS=/var/log/slurm
RUN=/run/slurm

log() { echo "slurm-setup: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"

# ---- packages -------------------------------------------------------------------------------------
need_install=()
for bin in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client slurmdbd:slurmdbd munged:munge \
           mariadbd:mariadb-server; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${bin%%:*}" ] || need_install+=("${bin#*:}")
done
if [ ${#need_install[@]} -gt 0 ]; then
    log "installing ${need_install[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_install[@]}"; } >&2; then
        log "package installation failed"
        exit 3
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---- helpers --------------------------------------------------------------------------------------
# alive PIDFILE: the process named in the pid file runs
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 1
    done
}

# install_file MODE OWNER PATH: write stdin to PATH when its content differs; returns 0 if it changed
install_file() {
    local mode=$1 owner=$2 path=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"; chmod "$mode" "$path"; chown "$owner" "$path"; return 1
    fi
    install -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$tmp" "$path"
    rm -f "$tmp"
    return 0
}

# stop_pidfile PIDFILE: stop the daemon this script started (by its pid), for a config change
stop_pidfile() {
    local pidfile=$1 pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
}

id "$SLURM_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$SLURM_USER"
mkdir -p "$ETC" "$STATE/slurmctld" "$STATE/slurmd" "$LOGS" "$RUN"
chown "$SLURM_USER:$SLURM_USER" "$STATE" "$STATE/slurmctld" "$LOGS" "$RUN"

# ---- munge ----------------------------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge; chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
if ! alive /run/munge/munged.pid; then
    log "starting munged"
    runuser -u munge -- munged --force
fi
wait_for "$TIMEOUT" munge sh -c 'munge -n | unmunge' || die "munged does not answer"

# ---- MariaDB (accounting storage; unix socket only) -----------------------------------------------
mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
    log "initialising the MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! mariadb-admin ping >/dev/null 2>&1; then
    log "starting mariadbd"
    setsid mysqld_safe --user=mysql --skip-networking >>"$LOGS/mysqld_safe.log" 2>&1 < /dev/null &
    wait_for "$TIMEOUT" mariadb mariadb-admin ping || die "MariaDB did not start (see $LOGS/mysqld_safe.log)"
fi
DB_PASS_FILE=$ETC/.slurmdbd-db-password
if [ ! -s "$DB_PASS_FILE" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE")
fi
DB_PASS=$(cat "$DB_PASS_FILE")
mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL

# ---- configuration --------------------------------------------------------------------------------
# The node as slurmd sees it (CPUs, sockets, cores, threads, memory), named "localhost".
HW=$(slurmd -C | sed -n -e '1{s/^NodeName=[^ ]* //' -e 's/ *UpTime=.*//' -e p -e '}')
# Slurm drops GPUs without a File= from the node, so each fake GPU gets an empty placeholder file.
GRES_LINE="" NODE_GRES="" GRES_CONF=""
if [ "${FAKE_GPUS:-0}" -gt 0 ]; then
    GRES_LINE="GresTypes=gpu"
    NODE_GRES="Gres=gpu:$FAKE_GPUS"
    mkdir -p "$STATE/fake-gpus"
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
        touch "$STATE/fake-gpus/gpu$i"
        GRES_CONF+="NodeName=$NODE Name=gpu File=$STATE/fake-gpus/gpu$i"$'\n'
    done
fi

changed_slurm=0 changed_dbd=0
install_file 0644 root:root "$ETC/slurm.conf" <<CONF && changed_slurm=1 || true
# Written by .ci/slurm-setup.sh: a one-node test cluster on this machine (no cgroups).
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=$SLURM_USER
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=300
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
$GRES_LINE
NodeName=$NODE NodeAddr=127.0.0.1 $HW $NODE_GRES State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

install_file 0644 root:root "$ETC/gres.conf" <<CONF && changed_slurm=1 || true
# Written by .ci/slurm-setup.sh: placeholder GPUs (no devices behind them), for scheduling tests.
AutoDetect=off
$GRES_CONF
CONF

install_file 0600 "$SLURM_USER:$SLURM_USER" "$ETC/slurmdbd.conf" <<CONF && changed_dbd=1 || true
# Written by .ci/slurm-setup.sh: accounting in the local MariaDB, through its unix socket.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=$SLURM_USER
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
CONF

# ---- slurmdbd, accounting entities ----------------------------------------------------------------
if [ $changed_dbd = 1 ]; then stop_pidfile "$RUN/slurmdbd.pid"; fi
if ! alive "$RUN/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd
fi
wait_for "$TIMEOUT" slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer (see $LOGS/slurmdbd.log)"

has() { [ -n "$(sacctmgr -n -P "$@" 2>/dev/null)" ]; }
has list cluster "$CLUSTER" format=cluster || sacctmgr -i add cluster "$CLUSTER" >&2
has list account "$ACCOUNT" format=account ||
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="gluerl tests" Organization=gluerl >&2
has list association cluster="$CLUSTER" account="$ACCOUNT" user="$ACCT_USER" format=user ||
    sacctmgr -i add user "$ACCT_USER" Account="$ACCOUNT" Cluster="$CLUSTER" >&2

# ---- slurmctld, slurmd ----------------------------------------------------------------------------
if [ $changed_slurm = 1 ]; then
    stop_pidfile "$RUN/slurmd.pid"
    stop_pidfile "$RUN/slurmctld.pid"
fi
if ! alive "$RUN/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld
fi
wait_for "$TIMEOUT" slurmctld scontrol ping || die "slurmctld does not answer (see $LOGS/slurmctld.log)"
if ! alive "$RUN/slurmd.pid"; then
    log "starting slurmd"
    slurmd -N "$NODE"
fi

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }
end=$((SECONDS + TIMEOUT))
while :; do
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    [ $SECONDS -lt $end ] || die "node $NODE is '${state:-unknown}' after ${TIMEOUT}s (see $LOGS/slurmd.log, $LOGS/slurmctld.log)"
    sleep 1
done
log "ready cluster=$CLUSTER partition=$PARTITION account=$ACCOUNT user=$ACCT_USER node=$NODE($state)"
