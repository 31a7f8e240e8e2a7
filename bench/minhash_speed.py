#!/usr/bin/env python3
"""MinHash signature speed: lantern-mathweb against datasketch on the same input, in one run.

Input: the State of the Union speeches (`sotu` asset) cut into 100-word chunks, one per line.
- ours: `crates/lantern-mathweb/examples/minhash_bench.rs` (release build), 128 permutations of
  word 5-gram shingles, once with RAYON_NUM_THREADS=1 and once with every core; best of
  `--repeat` passes, shingling included.
- datasketch: `MinHash(num_perm=128)` + `update_batch` of the UTF-8 encoded 5-gram shingles
  (`chunk.lower().split()`, joined by spaces), shingling included, one core (it is pure Python +
  numpy), over the first `--peer-docs` chunks.

Prints pages/s and MB/s for each and the ratios (target: ours one core >= 30x datasketch).

Run it with any python3: it creates bench/.venv-minhash (datasketch from PyPI) on first use and
re-executes itself there. Never used by tests or CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv-minhash"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def ensure_venv() -> None:
    """Re-exec inside {VENV} with the peer installed (created on first use)."""
    common.ensure_venv(VENV, ["datasketch"], ["datasketch"], __file__)


def sotu_dir(arg: str | None) -> Path:
    """--sotu-dir, else the lantern asset cache (LANTERN_CACHE or ~/.cache/lantern)."""
    if arg:
        return Path(arg)
    root = Path(os.environ.get("LANTERN_CACHE", Path.home() / ".cache" / "lantern"))
    return root / "assets" / "sotu" / "speeches"


def write_chunks(folder: Path, words_per_chunk: int, out: Path) -> list[str]:
    """Every speech cut into `words_per_chunk`-word chunks (the tail of each dropped)."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        sys.exit(f"no .txt speeches in {folder} (run `lantern assets path sotu` or pass --sotu-dir)")
    chunks = []
    for f in files:
        words = f.read_text(encoding="utf-8", errors="replace").split()
        for i in range(0, len(words) - words_per_chunk + 1, words_per_chunk):
            chunks.append(" ".join(words[i : i + words_per_chunk]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(chunks) + "\n", encoding="utf-8")
    return chunks


def build() -> Path:
    """Release build of the example; returns the binary path."""
    cmd = ["cargo", "build", "--release", "-p", "lantern-mathweb", "--example", "minhash_bench"]
    log("+", " ".join(cmd))
    subprocess.run(cmd, cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "examples" / "minhash_bench"


def run_ours(binary: Path, chunks_file: Path, threads: int, repeat: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [str(binary), str(chunks_file), "--num-perm", "128", "--repeat", str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_datasketch(chunks: list[str]) -> dict:
    from datasketch import MinHash

    def shingles(text: str) -> list[bytes]:
        words = text.lower().split()
        if len(words) < 5:
            return [" ".join(words).encode()]
        return [" ".join(words[i : i + 5]).encode() for i in range(len(words) - 4)]

    start = time.perf_counter()
    for c in chunks:
        m = MinHash(num_perm=128)
        m.update_batch(shingles(c))
    seconds = time.perf_counter() - start
    return {"docs": len(chunks), "bytes": sum(len(c.encode()) for c in chunks), "seconds": seconds}


def rates(r: dict) -> tuple[float, float]:
    return r["docs"] / r["seconds"], r["bytes"] / r["seconds"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sotu-dir", help="folder of SOTU .txt speeches (default: the asset cache)")
    ap.add_argument("--chunk-words", type=int, default=100)
    ap.add_argument("--peer-docs", type=int, default=5000, help="chunks timed for datasketch")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes for ours (best kept)")
    ap.add_argument("--no-build", action="store_true", help="use the existing example binary")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    ensure_venv()
    import datasketch

    chunks_file = HERE / "out" / "minhash" / "chunks.txt"
    chunks = write_chunks(sotu_dir(args.sotu_dir), args.chunk_words, chunks_file)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "release" / "examples" / "minhash_bench" if args.no_build else build()
    cores = os.cpu_count() or 1
    ours1 = run_ours(binary, chunks_file, 1, args.repeat)
    oursn = run_ours(binary, chunks_file, cores, args.repeat)
    peer = run_datasketch(chunks[: args.peer_docs])
    result = {
        "chunks": len(chunks),
        "chunk_words": args.chunk_words,
        "num_perm": 128,
        "datasketch_version": datasketch.__version__ if hasattr(datasketch, "__version__") else "?",
        "ours_1_core": ours1,
        f"ours_{cores}_cores": oursn,
        "datasketch": peer,
        "ratio_1_core": rates(ours1)[1] / rates(peer)[1],
        f"ratio_{cores}_cores": rates(oursn)[1] / rates(peer)[1],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{len(chunks)} chunks of {args.chunk_words} words, 128 permutations, 5-gram shingles")
    for name, r in [("ours, 1 core", ours1), (f"ours, {cores} cores", oursn), ("datasketch", peer)]:
        pages, mbs = rates(r)
        print(f"{name:>16}: {r['docs']:6d} docs in {r['seconds']:.3f} s  {pages:10.0f} pages/s  {mbs:8.2f} MB/s")
    print(f"ratio (MB/s) ours/datasketch: 1 core {result['ratio_1_core']:.1f}x, "
          f"{cores} cores {result[f'ratio_{cores}_cores']:.1f}x (target >= 30x on 1 core)")


if __name__ == "__main__":
    main()
