#!/usr/bin/env bash
# Virtual environment for the DeepCTR-Torch peer (benchmarks/peers/run_deepctr.py).
#
#     bash benchmarks/peers/setup_deepctr.sh [VENV]     # default: benchmarks/peers/.venv-deepctr
#
# torch is installed first and pinned to 2.13.0 (the CPU build this machine's pip finds locally;
# any other torch would download the CUDA wheels), then deepctr-torch 0.3.0 with the pin repeated
# so its requirement (torch>=2.4) can never swap torch. deepctr-torch imports `requests` (a version
# check at import) without declaring it, so it is installed too. Safe to run again: an existing
# environment is reused and pip leaves satisfied requirements alone. Prints the venv's python.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-deepctr}"
torch_spec="torch==2.13.0"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"

"$py" -m pip install --quiet "$torch_spec"
"$py" -m pip install --quiet "$torch_spec" "deepctr-torch==0.3.0" numpy scikit-learn tqdm requests packaging

"$py" - <<'EOF'
import torch, sklearn, numpy
from importlib.metadata import version
print(f"torch {torch.__version__}, deepctr-torch {version('deepctr-torch')}, "
      f"scikit-learn {sklearn.__version__}, numpy {numpy.__version__}")
EOF
echo "$py"
