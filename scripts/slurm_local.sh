#!/usr/bin/env bash
# A one-node SLURM cluster on localhost (Debian slurm-wlm + munge) for tests and CI:
# install it, start it, run a command against it, and stop every daemon it started.
#
#   scripts/slurm_local.sh install          apt-get install slurm-wlm munge (root, network)
#   scripts/slurm_local.sh start            write the config, start munged, slurmctld, slurmd
#   scripts/slurm_local.sh env              print "export SLURM_CONF=..." for this cluster
#   scripts/slurm_local.sh status           sinfo of this cluster
#   scripts/slurm_local.sh stop             stop the daemons that start started
#   scripts/slurm_local.sh run CMD [ARG..]  install if needed, start, run CMD, stop (also on error or ^C)
#
# Everything lives in $EVALSEL_SLURM_DIR (default /tmp/evalsel-slurm-$USER): its own munge key
# and socket, its own ports, its slurm.conf. The one thing outside it is a symlink
# /etc/slurm/slurm.conf -> that file, removed by stop: the SLURM jobstep plugin strips SLURM_CONF
# from the environment of the `srun` it runs inside each job, so srun must find the config at
# the default path. A host whose /etc/slurm/slurm.conf is a real file is refused.
# No slurmdbd: accounting is off, so `sacct` does not work here; Snakemake must poll with
# `--slurm-status-command squeue` (MinJobAge keeps finished jobs visible for 10 minutes), and
# every job that went through sbatch is logged, with its name and exit state, in
# $EVALSEL_SLURM_DIR/jobcomp.txt (jobcomp/filetxt).
#
# Knobs (environment):
#   EVALSEL_SLURM_CPUS    CPUs the node advertises (default: nproc)
#   EVALSEL_SLURM_MEM_MB  memory the node advertises (default: MemTotal minus 512 MB)
#   EVALSEL_SLURM_GPUS    fake GPUs (gres/gpu on dummy device nodes) to test GPU placement (default 0)
#   EVALSEL_SLURM_PORT    slurmctld port; slurmd uses the next one (default 16817)
# Advertising more CPUs or memory than the host has is allowed (config_overrides, no cgroups):
# the test does so to let the rules' real requests (e.g. train mem_mb=64000) be accepted.
set -euo pipefail

DIR=${EVALSEL_SLURM_DIR:-/tmp/evalsel-slurm-$(id -un)}
CONF=$DIR/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
PORT=${EVALSEL_SLURM_PORT:-16817}
HOST=$(hostname -s)

die() { echo "slurm_local: $*" >&2; exit 1; }

install() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "installing needs root (apt-get install slurm-wlm munge)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge
}

write_config() {
    local cpus=${EVALSEL_SLURM_CPUS:-$(nproc)}
    local mem=${EVALSEL_SLURM_MEM_MB:-$(( $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 512 ))}
    local gpus=${EVALSEL_SLURM_GPUS:-0}
    local gres_node="" gres_types=""
    mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log
    chmod 700 "$DIR"
    rm -f "$DIR/gres.conf"  # slurmd reads gres.conf beside slurm.conf
    if [ "$gpus" -gt 0 ]; then
        # gres/gpu wants one character device per GPU: nodes with /dev/null's numbers (no cgroup
        # confinement here), enough for SLURM to allocate them and set CUDA_VISIBLE_DEVICES.
        for i in $(seq 0 $((gpus - 1))); do
            rm -f "$DIR/fakegpu$i"
            mknod "$DIR/fakegpu$i" c 1 3
        done
        echo "NodeName=$HOST Name=gpu File=$DIR/fakegpu[0-$((gpus - 1))]" > "$DIR/gres.conf"
        gres_node="Gres=gpu:$gpus"
        gres_types="GresTypes=gpu"
    fi
    cat > "$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node test cluster on localhost.
ClusterName=evalsel
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers: plain process tracking, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerParameters=sched_interval=2
ReturnToService=2
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue (Snakemake's status command here) for 10 minutes
MinJobAge=600
KillWait=5
InactiveLimit=0
$gres_types
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    # munge: a private key and socket for this cluster
    if [ ! -s "$DIR/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
    fi
    chmod 600 "$DIR/munge.key"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    [ "$(id -u)" = 0 ] || die "starting the daemons needs root"
    command -v slurmctld >/dev/null || die "SLURM is not installed: run '$0 install'"
    if [ -e "$ETC_CONF" ] && [ ! -L "$ETC_CONF" ]; then
        die "$ETC_CONF exists: this host has its own SLURM, refusing to start a test cluster"
    fi
    stop quiet
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/jobcomp.txt"
    write_config
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$CONF" "$ETC_CONF"
    export SLURM_CONF=$CONF
    munged --force --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed"
    slurmctld -c -f "$CONF"
    slurmd -f "$CONF"
    local i state=""
    for i in $(seq 1 60); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        case $state in idle*|mixed*|allocated*) break ;; esac
        sleep 1
    done
    case $state in
        idle*|mixed*|allocated*) echo "slurm_local: node $HOST $state (SLURM_CONF=$CONF)" >&2 ;;
        *)
            tail -n 20 "$DIR"/log/*.log >&2 || true
            stop quiet
            die "the node did not come up (state '${state:-none}')"
            ;;
    esac
}

stop() {
    local name pidfile pid
    for name in slurmd slurmctld munged; do
        pidfile=$DIR/$name.pid
        if pid_alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        rm -f "$ETC_CONF"
    fi
    [ "${1:-}" = quiet ] || echo "slurm_local: stopped" >&2
}

case ${1:-} in
    install) install ;;
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    status) SLURM_CONF=$CONF sinfo ;;
    run)
        shift
        [ $# -gt 0 ] || die "usage: $0 run CMD [ARG...]"
        install
        trap 'stop' EXIT
        trap 'exit 130' INT TERM
        start
        export SLURM_CONF=$CONF
        "$@"
        ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
