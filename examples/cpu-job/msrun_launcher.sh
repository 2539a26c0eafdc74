#!/usr/bin/env bash
# A stand-in for MindFormers' scripts/msrun_launcher.sh, written for ascend-run's tests and demo (the
# MindFormers source is not in the CPU images). Same 9-argument contract:
#   "<EXECUTE_ORDER>" WORKER_NUM LOCAL_WORKER MASTER_ADDR MASTER_PORT NODE_RANK LOG_DIR JOIN CLUSTER_TIME_OUT
# with the same defaults, and --master_addr/--node_rank passed only when WORKER_NUM != LOCAL_WORKER.
set -euo pipefail
EXECUTE_ORDER=$1
WORKER_NUM=${2:-8}
LOCAL_WORKER=${3:-8}
MASTER_ADDR=${4:-127.0.0.1}
MASTER_PORT=${5:-8118}
NODE_RANK=${6:-0}
LOG_DIR=${7:-output/msrun_log}
JOIN=${8:-False}
CLUSTER_TIME_OUT=${9:-7200}
args=(--worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER" --master_port="$MASTER_PORT"
      --log_dir="$LOG_DIR" --join="$JOIN" --cluster_time_out="$CLUSTER_TIME_OUT")
if [ "$WORKER_NUM" != "$LOCAL_WORKER" ]; then
  args+=(--master_addr="$MASTER_ADDR" --node_rank="$NODE_RANK")
fi
echo "msrun_launcher (stand-in): msrun ${args[*]} $EXECUTE_ORDER"
# shellcheck disable=SC2086  # EXECUTE_ORDER is a command line, word-split as MindFormers' script does
exec msrun "${args[@]}" $EXECUTE_ORDER
