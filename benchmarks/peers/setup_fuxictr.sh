#!/usr/bin/env bash
# Virtual environment for the FuxiCTR peer (benchmarks/peers/run_fuxictr.py).
#
#   benchmarks/peers/setup_fuxictr.sh [VENV]    # default: benchmarks/peers/.venv-fuxictr
#
# Installs torch 2.13.0 first (the CPU build this machine's pip finds locally; fuxictr itself does
# not depend on torch, so nothing later pulls another one), then fuxictr 2.3.10 from PyPI with its
# declared dependencies (pandas, pyyaml, scikit-learn, numpy, h5py, tqdm, pyarrow, polars,
# ray[data], pydantic; ray is imported by `fuxictr.preprocess`, which the model layers import),
# and packaging (model_zoo's version check) — all checked against the installed torch so that a
# resolver can never swap it. Idempotent: an existing venv is reused and pip skips what is there.
# Prints the venv's python.
#
# The DIN / DIEN classes are not in the wheel: they live in the FuxiCTR repository's model_zoo/
# (see run_fuxictr.py's docstring for getting a checkout).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-fuxictr}"
torch_version="2.13.0"
fuxictr_version="2.3.10"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check -q)

# torch first, alone: any other spec would fetch a CUDA build (GBs)
"${pip[@]}" install "torch==$torch_version"

# pin torch for every later resolution so nothing replaces it
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" >"$constraints"

"${pip[@]}" install -c "$constraints" "fuxictr==$fuxictr_version" packaging

"$py" - <<EOF
import torch, fuxictr
assert torch.__version__.split("+")[0] == "$torch_version", torch.__version__
assert fuxictr.__version__ == "$fuxictr_version", fuxictr.__version__
from fuxictr.pytorch.models import BaseModel  # noqa: F401  (imports the layers, polars, ray, ...)
EOF

echo "$py"
