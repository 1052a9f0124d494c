#!/usr/bin/env bash
# llm-compressor in its own virtual environment (it pins transformers below quantmatch's), for
# benchmarks/llmcompressor_anchor.py. Usage: benchmarks/llmcompressor_venv.sh [VENV] (default /tmp/llmc).
# CONSTRAINTS (default /tmp/constraints.txt when present) pins torch to the CPU wheel used here.
set -euo pipefail
venv="${1:-/tmp/llmc}"
constraints="${CONSTRAINTS:-/tmp/constraints.txt}"
python3 -m venv "$venv"
if [[ -f "$constraints" ]]; then
    "$venv/bin/pip" install -c "$constraints" "torch==2.13.0" llmcompressor
else
    "$venv/bin/pip" install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
    "$venv/bin/pip" install llmcompressor
fi
"$venv/bin/python" -c "import llmcompressor, transformers, compressed_tensors as ct; print('llmcompressor', llmcompressor.__version__, 'transformers', transformers.__version__, 'compressed-tensors', ct.__version__)"
