#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are where the `fashion_mnist` source looks
# (prepare.root, /usr/share/datasets/fashion-mnist, ~/.cache/embedlab/FashionMNIST/raw).
# Run by `make repro` and `make test` (CI) before anything needs them; it says what it does:
#   1. files found: nothing to do;
#   2. apt-get usable (root, or sudo without a password): apt-get update, then
#      apt-get install dataset-fashion-mnist (Debian/Ubuntu package, MIT licence);
#   3. otherwise: torchvision downloads them into ~/.cache/embedlab/FashionMNIST/raw.
# PYTHON: the interpreter with embedlab installed (default: .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

find_files() {  # prints the folder holding the files, or the source's one-line error
  "$PYTHON" - <<'PY'
import sys
from pathlib import Path

import yaml

from embedlab.data.sources.fashion_mnist import find_files
from embedlab.errors import EmbedlabError

params = Path("params.yaml")
raw = yaml.safe_load(params.read_text()) if params.is_file() else {}
root = ((raw or {}).get("prepare") or {}).get("root")
try:
    print(find_files(root)["train"][0].parent)
except EmbedlabError as exc:
    print(exc)
    sys.exit(1)
PY
}

if where=$(find_files); then
  echo "Fashion-MNIST: found in $where"
  exit 0
fi
echo "Fashion-MNIST: not found yet ($where)"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  echo "Fashion-MNIST: installing the Debian package: ${SUDO:+$SUDO }apt-get update && apt-get install -y dataset-fashion-mnist"
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist; then
    where=$(find_files) && { echo "Fashion-MNIST: installed in $where"; exit 0; }
  fi
  echo "Fashion-MNIST: the Debian package did not provide the files; trying torchvision"
fi

echo "Fashion-MNIST: downloading with torchvision into ~/.cache/embedlab/FashionMNIST/raw"
"$PYTHON" - <<'PY'
from torchvision.datasets import FashionMNIST

from embedlab.data.sources.fashion_mnist import download_root

for train in (True, False):
    FashionMNIST(root=str(download_root()), train=train, download=True)
PY
where=$(find_files) || { echo "Fashion-MNIST: still missing: $where" >&2; exit 1; }
echo "Fashion-MNIST: downloaded to $where"
