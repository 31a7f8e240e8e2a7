#!/usr/bin/env bash
# Create bench/.venv with llama-cpp-python (built from source by pip) and numpy.
# Idempotent: does nothing when the venv already imports the pinned llama_cpp version.
# Only for the bench scripts; never run in CI (the build takes 10-20 minutes on 2 cores).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.16}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$LLAMA_CPP_PYTHON_VERSION" <<'PY' 2>/dev/null
import sys, llama_cpp, numpy
sys.exit(0 if llama_cpp.__version__ == sys.argv[1] else 1)
PY
then
  echo "bench/.venv ready (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"
  exit 0
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip >/dev/null
"$VENV/bin/pip" install numpy

# llama.cpp's defaults: GGML_NATIVE=ON (-march=native), OpenMP when the compiler has it.
# Only the python package's extras are switched off (llava/mtmd shared library) to save build time.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
echo "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION with CMAKE_ARGS=$CMAKE_ARGS (takes many minutes)" >&2
"$VENV/bin/pip" install --no-cache-dir --verbose "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" \
  > "$HERE/.venv/llama_cpp_build.log" 2>&1 || {
  echo "llama-cpp-python build failed; last lines of bench/.venv/llama_cpp_build.log:" >&2
  tail -n 40 "$HERE/.venv/llama_cpp_build.log" >&2
  exit 1
}
# Remember which llama.cpp commit the sdist vendored (ggml's build stamps it into the compile flags).
grep -o 'GGML_COMMIT=\\"[0-9a-f]*' "$VENV/llama_cpp_build.log" | head -n 1 | grep -o '[0-9a-f]*$' \
  > "$VENV/llama_cpp_commit.txt" || true
"$VENV/bin/python" -c 'import llama_cpp, numpy; print("bench/.venv ready: llama-cpp-python", llama_cpp.__version__, "numpy", numpy.__version__)'
