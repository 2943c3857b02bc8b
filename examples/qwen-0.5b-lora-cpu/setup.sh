#!/usr/bin/env bash
# Set up this workspace: check the machine, create .venv, install the pinned requirements (cpu).
#   bash setup.sh           check, then install
#   bash setup.sh --check   only check, and say what is missing
# TORCH_INDEX_URL chooses where PyTorch comes from (empty: pip's own configuration).
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
free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
[ "$free_gb" -ge "$NEED_DISK_GB" ] && ok "${free_gb} GB free disk (about ${NEED_DISK_GB} GB needed)" \
  || lack "about ${NEED_DISK_GB} GB of free disk for the model and libraries; ${free_gb} GB free here"

if [ "$missing" -gt 0 ]; then
  echo "$missing thing(s) missing; fix them and run bash setup.sh again."
  [ "${1:-}" = "--check" ] && exit 1
  echo "Installing anyway, since you may mean to train elsewhere."
fi
[ "${1:-}" = "--check" ] && { echo "All checks passed."; exit 0; }

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
