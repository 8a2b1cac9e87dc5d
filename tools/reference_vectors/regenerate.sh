#!/usr/bin/env bash
# Regenerate tests/conformance/vectors/*.npz from the official SMITE code (see README.md beside this file).
# Creates the generator's own environment and checkout on first use; neither is part of the smite package.
# Usage: [SMITE_OFFICIAL_URL=<git url or local mirror>] bash regenerate.sh [VECTOR ...]   (default: all vectors)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
official="$here/official"
commit=7ecfff7e66629e3b5855c835048710062c9518dc
# where to clone the official code from: a local mirror or clone works too (no network needed then)
url="${SMITE_OFFICIAL_URL:-https://github.com/alimohammadiamirhossein/smite}"
if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv"
  # torch first and pinned: a CPU build lies on disk here; any other torch pulls a multi-GB CUDA build
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q diffusers==0.19.0 transformers==4.35.2 tokenizers==0.15.2 huggingface-hub==0.21.0 \
    torch-dct==0.1.6 einops==0.8.0 accelerate==0.32.0 "numpy<2" scipy safetensors pillow "matplotlib<3.10" tqdm \
    "opencv-python-headless<4.11" scikit-image decord==0.6.0
fi
if [ ! -d "$official/.git" ]; then
  git clone -q "$url" "$official"
fi
git -C "$official" checkout -q "$commit"
OMP_NUM_THREADS=1 "$venv/bin/python" "$here/generate.py" "$@"
