#!/usr/bin/env bash
# Launch training on 4 device(s) per node with deepspeed-zero3.
#   bash launch.sh [section.key=value ...]      # extra arguments go to train.py (--resume too)
set -euo pipefail
cd "$(dirname "$0")"
MASTER_PORT=${MASTER_PORT:-29500}
exec deepspeed --num_gpus 4 --master_port "$MASTER_PORT" train.py "$@"
