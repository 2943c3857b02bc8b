#!/usr/bin/env bash
# Set up this workspace: check the machine, create .venv, install the pinned requirements (cpu).
#   bash setup.sh           check, then install
#   bash setup.sh --check   only check, and say what is missing
# TORCH_INDEX_URL chooses where PyTorch comes from (empty: pip's own configuration); when the default one is
# out of reach, pip's own index is used instead.
set -uo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
PROJECT='qwen-0.5b-lora-cpu'
MODEL='Qwen/Qwen2.5-0.5B-Instruct'
NEED_DISK_GB=8  # the model download, its merged copy's share, and the libraries
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
missing=0

ok() { printf '  ok       %s\n' "$1"; }
lack() { printf '  MISSING  %s\n' "$1"; missing=$((missing + 1)); }

echo "Checking this machine for $PROJECT ($MODEL, lora on cpu):"
if version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 10))' 2>/dev/null); then
  ok "Python $version ($PYTHON)"
else
  lack "Python 3.10 or newer: found ${version:-no $PYTHON}; install it, or set PYTHON=/path/to/python3.11"
fi
"$PYTHON" -m venv --help >/dev/null 2>&1 && ok "venv module" || lack "the venv module (Debian/Ubuntu: apt install python3-venv)"
command -v git >/dev/null 2>&1 && ok "git" || lack "git (tuneforge update merges your edits with it)"
# memory against the plan's estimate of peak training memory per device (7.26 GB)
device_gb=$(awk '/^MemTotal:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || true)
[ -n "$device_gb" ] || device_gb=$(sysctl -n hw.memsize 2>/dev/null | awk '{print int($1 / 1073741824)}')
if [ -z "$device_gb" ]; then
  echo "  ?        memory: could not read it; training needs about 7.26 GB per device"
elif awk "BEGIN {exit !($device_gb >= 7.26)}"; then
  ok "${device_gb} GB of memory per device (training needs about 7.26 GB)"
else
  lack "about 7.26 GB of memory per device for training as configured; ${device_gb} GB here (README.md, 'Will it fit?', lists what would)"
fi
cached="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}/models--$(printf '%s' "$MODEL" | sed 's|/|--|g')"
if [ -d "$cached" ]; then
  ok "$MODEL is in the local Hugging Face cache"
elif [ "${HF_HUB_OFFLINE:-}" = "1" ]; then
  lack "$MODEL in the local Hugging Face cache: HF_HUB_OFFLINE=1 and it is not there; copy the model into a folder and train with python train.py model.name_or_path=/path/to/folder"
elif "$PYTHON" - "$MODEL" <<'PY' >/dev/null 2>&1
import os, socket, sys, urllib.parse
host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
socket.create_connection((host, 443), timeout=5).close()
PY
then
  ok "the Hugging Face hub answers (to download $MODEL)"
else
  lack "the Hugging Face hub, to download $MODEL: it is out of reach (fine if the model is already in your Hugging Face cache); otherwise copy the model into a folder and train with python train.py model.name_or_path=/path/to/folder"
fi
free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
[ "$free_gb" -ge "$NEED_DISK_GB" ] && ok "${free_gb} GB free disk (about ${NEED_DISK_GB} GB needed)" \
  || lack "about ${NEED_DISK_GB} GB of free disk for the model and libraries; ${free_gb} GB free here"

if [ "$missing" -gt 0 ]; then
  echo "$missing thing(s) missing; fix them and run bash setup.sh again."
  [ "${1:-}" = "--check" ] && exit 1
  echo "Installing anyway, since you may mean to train elsewhere."
fi
[ "${1:-}" = "--check" ] && { echo "All checks passed."; exit 0; }

if [ -n "$TORCH_INDEX_URL" ] && ! "$PYTHON" - "$TORCH_INDEX_URL" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=10).close()
PY
then
  echo "note: $TORCH_INDEX_URL is out of reach; taking PyTorch from pip's own index instead (TORCH_INDEX_URL=URL chooses one)"
  TORCH_INDEX_URL=
fi

set -e
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# PyTorch first, from the index that has the right build for this hardware
.venv/bin/python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$(grep '^torch==' requirements.txt)"
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python - <<'PY'
import torch, transformers, peft
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
PY
echo "Ready: . .venv/bin/activate && python smoke.py"
