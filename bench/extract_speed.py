#!/usr/bin/env python3
"""HTML -> text extraction speed: lantern-mathweb against Resiliparse and trafilatura, one run.

Input: the first `--pages` scipy documentation pages that contain math (`class="math`), sorted
by path (300 pages, 7.8 MB by default), from the `scipy-doc` asset.
- ours: `crates/lantern-mathweb/examples/extract_bench.rs` (release build): full extraction
  (math from every source, Markdown, boilerplate removal), one thread, best of `--repeat`.
- Resiliparse: `extract_plain_text(html, main_content=True)` (keeps no math structure), one
  core, best of `--repeat`.
- trafilatura: `extract(html)`, one core, one pass (it is slow).
Each peer gets the same decoded strings; reading files is outside every timing.

Prints pages/s and MB/s per core and the ratios (targets: ours >= Resiliparse, >= 20x
trafilatura). Creates bench/.venv-extract on first use (pip: resiliparse, trafilatura) and
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
VENV = HERE / ".venv-extract"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def ensure_venv() -> None:
    """Re-exec inside {VENV} with the peer installed (created on first use)."""
    common.ensure_venv(VENV, ["resiliparse", "trafilatura"], ["resiliparse", "trafilatura", "lxml_html_clean"], __file__)


def scipy_pages(n: int) -> list[Path]:
    root = Path(os.environ.get("LANTERN_HOME", Path.home() / ".cache" / "lantern"))
    html = root / "assets" / "scipy-doc" / "html"
    if not html.is_dir():
        sys.exit(f"{html} missing: run `lantern assets fetch scipy-doc` first")
    pages = [p for p in sorted(html.rglob("*.html")) if b'class="math' in p.read_bytes()]
    return pages[:n]


def ours(list_file: Path, repeat: int) -> dict:
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "lantern-mathweb", "--example", "extract_bench"],
        cwd=REPO,
        check=True,
    )
    exe = REPO / "target" / "release" / "examples" / "extract_bench"
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run(
        ["taskset", "-c", "0", str(exe), str(list_file), str(repeat)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout)


def best_time(fn, docs: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for d in docs:
            fn(d)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ensure_venv()
    os.sched_setaffinity(0, {0})
    from resiliparse.extract.html2text import extract_plain_text
    import trafilatura

    pages = scipy_pages(args.pages)
    docs = [p.read_bytes().decode("utf-8", errors="replace") for p in pages]
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    list_file = HERE / "out" / "extract_pages.txt"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_text("\n".join(str(p) for p in pages) + "\n")
    log(f"{len(docs)} pages, {mb:.2f} MB")

    res_s = best_time(lambda d: extract_plain_text(d, main_content=True), docs, args.repeat)
    log(f"resiliparse: {res_s:.3f} s")
    tra_s = best_time(lambda d: trafilatura.extract(d), docs, 1)
    log(f"trafilatura: {tra_s:.3f} s")
    o = ours(list_file, args.repeat)
    log(f"lantern: {o['seconds']:.3f} s, {o['formulas']} formulas")

    def rate(s: float) -> dict:
        return {"seconds": s, "pages_s": len(docs) / s, "mb_s": mb / s}

    result = {
        "pages": len(docs),
        "mb": mb,
        "lantern": rate(o["seconds"]),
        "resiliparse": rate(res_s),
        "trafilatura": rate(tra_s),
        "ratio_vs_resiliparse": res_s / o["seconds"],
        "ratio_vs_trafilatura": tra_s / o["seconds"],
    }
    if args.json:
        print(json.dumps(result))
        return
    for name in ("lantern", "resiliparse", "trafilatura"):
        r = result[name]
        print(f"{name:12s} {r['pages_s']:8.1f} pages/s {r['mb_s']:7.2f} MB/s (one core)")
    print(f"lantern / resiliparse: {result['ratio_vs_resiliparse']:.2f}x")
    print(f"lantern / trafilatura: {result['ratio_vs_trafilatura']:.1f}x")


if __name__ == "__main__":
    main()
