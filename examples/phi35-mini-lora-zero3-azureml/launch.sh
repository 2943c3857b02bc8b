#!/usr/bin/env bash
# Launch training on 4 device(s) per node, 2 nodes with deepspeed-zero3.
#   bash launch.sh [section.key=value ...]      # extra arguments go to train.py (--resume too)
# Run it on every node with the same MASTER_ADDR (the first node's address) and each node's NODE_RANK (0..1):
#   MASTER_ADDR=10.0.0.4 NODE_RANK=0 bash launch.sh
set -euo pipefail
cd "$(dirname "$0")"
: "${MASTER_ADDR:?set MASTER_ADDR to the first node's address}"
: "${NODE_RANK:?set NODE_RANK to this node's rank, 0 to 1}"
MASTER_PORT=${MASTER_PORT:-29500}
# deepspeed's own multi-node runner needs passwordless ssh and a hostfile; torchrun needs neither,
# and DeepSpeed reads configs/deepspeed.json through the Trainer either way
exec torchrun --nproc_per_node 4 --nnodes 2 --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" train.py "$@"
