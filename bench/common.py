"""Shared helpers for the llama.cpp comparison scripts in bench/.

Everything here runs inside bench/.venv (see setup_venv.sh): numpy + llama-cpp-python.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LANTERN = REPO / "target" / "release" / "lantern"
OUT_DIR = REPO / "bench" / "out"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_json_stdout(text: str) -> dict:
    """The contract is one JSON object on stdout; tolerate stray lines before it."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON object on stdout: {text[:500]!r}")


def run_lantern(binary: Path, args: list[str], env: dict | None = None) -> dict:
    cmd = [str(binary), *args]
    log("+", " ".join(c if len(c) <= 80 else repr(c[:60] + "...") for c in cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return parse_json_stdout(proc.stdout)


def lantern_available(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


def lantern_asset_path(binary: Path, name: str) -> Path | None:
    """`lantern assets path NAME` prints the cached path (fetching on first use)."""
    if not lantern_available(binary):
        return None
    proc = subprocess.run(
        [str(binary), "assets", "path", name], capture_output=True, text=True
    )
    if proc.returncode != 0:
        log(f"`lantern assets path {name}` failed: {proc.stderr.strip()[-300:]}")
        return None
    out = proc.stdout.strip()
    if out.startswith("{"):
        try:
            obj = parse_json_stdout(out)
            out = obj.get("path") or obj["assets"][0]["path"]
        except Exception:
            return None
    out = out.splitlines()[-1].strip() if out else ""
    return Path(out) if out else None


def resolve_model(arg: str | None, binary: Path) -> Path:
    if arg:
        p = Path(arg)
        if not p.is_file():
            sys.exit(f"--model {arg}: no such file")
        return p
    p = lantern_asset_path(binary, "smollm2-135m")
    if p is None or not p.is_file():
        sys.exit(
            "no model: pass --model PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf "
            "(`lantern assets path smollm2-135m` is not available)"
        )
    return p


def resolve_text_file(arg: str | None, binary: Path, year: str = "2021") -> Path:
    if arg:
        p = Path(arg)
        if not p.is_file():
            sys.exit(f"--text-file {arg}: no such file")
        return p
    folder = lantern_asset_path(binary, "sotu")
    if folder is None or not folder.exists():
        sys.exit(
            "no text: pass --text-file PATH (e.g. a SOTU speech .txt); "
            "`lantern assets path sotu` is not available"
        )
    if folder.is_file():
        return folder
    hits = sorted(glob.glob(str(folder / "**" / f"{year}_*.txt"), recursive=True))
    if not hits:
        sys.exit(f"no {year}_*.txt under {folder}")
    return Path(hits[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def llama_cpp_versions() -> dict:
    import llama_cpp

    info = {"llama_cpp_python": llama_cpp.__version__}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception:
        pass
    commit = _vendored_llama_cpp_commit()
    if commit:
        info["llama_cpp_commit"] = commit
    return info


def _vendored_llama_cpp_commit() -> str | None:
    """setup_venv.sh records the ggml commit it saw in the build log."""
    stamp = REPO / "bench" / ".venv" / "llama_cpp_commit.txt"
    if stamp.is_file():
        return stamp.read_text().strip() or None
    return None


def load_llama(model: Path, *, n_ctx: int, n_threads: int, logits_all: bool, n_batch: int = 512):
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(model),
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        logits_all=logits_all,
        n_gpu_layers=0,
        verbose=False,
    )


def tokenize(llm, text: str) -> list[int]:
    # No BOS: SmolLM2's GGUF says tokenizer.ggml.add_bos_token = false, and `lantern lm tokenize`
    # adds none unless --bos. special=False: the speech is plain text.
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
