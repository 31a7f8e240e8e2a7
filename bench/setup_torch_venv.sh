#!/usr/bin/env bash
# Create bench/.venv-torch with PyTorch and EleutherAI's sparsify (PyPI: eai-sparsify) for
# bench/sae_speed.py. Idempotent: does nothing when the venv already imports both.
# Only for the bench scripts; never run in CI.
#
# torch comes from PyPI, whose Linux x86_64 wheel is the CUDA build: pip also fetches the
# nvidia-* runtime wheels and triton (several GB on disk), which torch requires though the CPU
# never uses them. The CPU-only wheel lives on download.pytorch.org,
# which this machine cannot reach; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu where
# it can, to skip the CUDA libraries.
#
# A failure to install eai-sparsify is not fatal: sae_speed.py then uses its own minimal TopK SAE.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-torch"
TORCH_SPEC="${TORCH_SPEC:-torch}"
SPARSIFY_SPEC="${SPARSIFY_SPEC:-eai-sparsify}"
PIP_OPTS=(--progress-bar off)

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, sparsify' 2>/dev/null; then
  "$VENV/bin/python" -c 'import torch, importlib.metadata as m; print("bench/.venv-torch ready: torch", torch.__version__, "eai-sparsify", m.version("eai-sparsify"))'
  exit 0
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install "${PIP_OPTS[@]}" --upgrade pip >/dev/null

if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$VENV/bin/pip" install "${PIP_OPTS[@]}" --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
else
  "$VENV/bin/pip" install "${PIP_OPTS[@]}" "$TORCH_SPEC"
fi
"$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'

# numpy only to silence torch's "numpy not available" warning; the bench does not need it.
"$VENV/bin/pip" install "${PIP_OPTS[@]}" numpy

if "$VENV/bin/pip" install "${PIP_OPTS[@]}" "$SPARSIFY_SPEC" > "$VENV/sparsify_install.log" 2>&1; then
  # sparsify picks its Triton decoder when triton imports (it does: the CUDA torch wheel brings
  # triton); sae_speed.py sets SPARSIFY_DISABLE_TRITON=1 so the eager CPU path is used.
  if SPARSIFY_DISABLE_TRITON=1 "$VENV/bin/python" -c 'from sparsify import SparseCoder, SparseCoderConfig' \
      >> "$VENV/sparsify_install.log" 2>&1; then
    echo "eai-sparsify installed and imports"
  else
    echo "eai-sparsify installed but does not import; see bench/.venv-torch/sparsify_install.log" >&2
    tail -n 20 "$VENV/sparsify_install.log" >&2
  fi
else
  echo "eai-sparsify did not install (sae_speed.py will use its minimal TopK SAE); last lines of" \
       "bench/.venv-torch/sparsify_install.log:" >&2
  tail -n 20 "$VENV/sparsify_install.log" >&2
fi
"$VENV/bin/python" -c 'import torch, importlib.metadata as m
try:
    s = m.version("eai-sparsify")
except m.PackageNotFoundError:
    s = "not installed"
print("bench/.venv-torch ready: torch", torch.__version__, "eai-sparsify", s)'
