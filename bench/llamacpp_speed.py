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
                   reps: int, gen_reps: int, gate: common.IdleGate,
                   gen_from_empty: bool = False) -> dict:
    llm = common.load_llama(model, n_ctx=max(1024, n_prompt + n_gen + 8), n_threads=threads,
                            logits_all=False, n_batch=max(512, n_prompt))
    ids = prompt_ids_for(llm, text_file, n_prompt)
    n_vocab = llm.n_vocab()

    def last_argmax() -> int:
        # With logits_all=False, Llama.eval does not copy logits into llm.scores; the batch's only
        # output row (its last token) is what llama_get_logits points at.
        row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        return int(np.argmax(row))

    def prompt_once() -> float:
        llm.reset()  # empty KV cache: eval() removes every cell from position n_tokens = 0 on
        t0 = time.perf_counter()
        llm.eval(ids)
        return time.perf_counter() - t0

    def gen_once() -> float:
        llm.reset()
        if gen_from_empty:  # llama-bench's tg: start from one token in an empty KV cache
            tok = ids[0]
        else:
            llm.eval(ids)
            tok = last_argmax()
        t0 = time.perf_counter()
        for _ in range(n_gen):
            llm.eval([tok])
            tok = last_argmax()
        return time.perf_counter() - t0

    prompt_once()  # warm-up (page in the weights, build the graph)
    pp, pp_other = gate.repeat(prompt_once, reps, threads)
    tg, tg_other = gate.repeat(gen_once, gen_reps, threads)
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
        "other_cores_prompt": pp_other,
        "other_cores_gen": tg_other,
    }


def bench_lantern(binary: Path, model: Path, threads: int, n_prompt: int, n_gen: int,
                  repeats: int, gate: common.IdleGate, lantern_slack: float) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    args = ["lm", "bench", "--model", str(model), "--prompt-tokens", str(n_prompt),
            "--gen-tokens", str(n_gen), "--json"]
    # The whole process is measured, model loading included, while lantern times only its compute:
    # others may use a core that a single-threaded loading phase leaves idle.
    runs, other = gate.repeat(lambda: common.run_lantern(binary, args, env=env), repeats, threads,
                              slack=lantern_slack)
    prompt_all = [float(r["prompt_tok_s"]) for r in runs]
    gen_all = [float(r["gen_tok_s"]) for r in runs]
    return {
        "threads": threads,
        "reported_threads": runs[-1].get("threads"),
        "prompt_tok_s": statistics.median(prompt_all),
        "prompt_tok_s_all": prompt_all,
        "gen_tok_s": statistics.median(gen_all),
        "gen_tok_s_all": gen_all,
        "runs": runs,
        "other_cores": other,
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
    ap.add_argument("--max-other-load", type=float, default=0.1,
                    help="keep a run only if other processes used less than this many cores "
                         "beyond those it leaves free (a 1-thread run leaves one core free on 2), "
                         "from /proc/stat; others are discarded and repeated")
    ap.add_argument("--lantern-slack", type=float, default=0.6,
                    help="extra cores others may use during a `lantern lm bench` run, which "
                         "includes loading the model (on one thread) outside its timings")
    ap.add_argument("--idle-timeout", type=float, default=900.0,
                    help="seconds to wait for an idle machine before measuring anyway")
    ap.add_argument("--no-idle-gate", action="store_true",
                    help="measure at once, whatever else runs")
    ap.add_argument("--boost", action="store_true",
                    help="(root) run in a scheduler autogroup of its own at nice -20, so that "
                         "other sessions' processes (a cargo build) cannot take CPU from the timed "
                         "runs (a spinning process of ours holds the cores a 1-thread run leaves "
                         "free); they get it back when this script ends. The script leaves the "
                         "terminal's session: stop it with kill, not Ctrl-C")
    ap.add_argument("--gen-from-empty", action="store_true",
                    help="llama.cpp generation starts from an empty KV cache (as llama-bench's "
                         "tg128) instead of following the prompt")
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

    if args.boost:
        common.boost_priority()
    gate = common.IdleGate(args.max_other_load, args.idle_timeout, not args.no_idle_gate)
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        common.log(f"1-minute load average is {load_before:.2f}: "
                   + ("runs wait for idle moments" if gate.enabled else
                      "other work on this machine will distort the figures"))
    res: dict = {
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "autogroup": common.autogroup(),
        "load_avg_before": load_before,
        "model": str(model),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "gen_after_prompt": not args.gen_from_empty,
        "gflop_per_token": args.gflop_per_token,
        "peak_gflops": args.peak_gflops,
        "cpus": ncpu,
    }

    llama = []
    if not args.skip_llamacpp:
        res.update({k: v for k, v in common.llama_cpp_versions().items() if k != "system_info"})
        for t in threads:
            common.log(f"llama.cpp, {t} thread(s) ...")
            if args.boost:
                gate.hold_free_cores(t)
            try:
                llama.append(bench_llamacpp(model, text_file, t, args.prompt_tokens,
                                            args.gen_tokens, args.reps, args.gen_reps, gate,
                                            args.gen_from_empty))
            finally:
                gate.release()
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
            if args.boost:
                gate.hold_free_cores(t)
            try:
                ours.append(bench_lantern(binary, model, t, args.prompt_tokens, args.gen_tokens,
                                          args.lantern_repeats, gate, args.lantern_slack))
            except Exception as e:  # noqa: BLE001
                common.log(f"lantern lm bench failed: {e}")
                res["lantern_error"] = str(e).splitlines()[0]
                break
            finally:
                gate.release()
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
    res["idle_gate"] = {"enabled": gate.enabled, "max_other_cores": gate.max_other,
                        "discarded_runs": gate.discarded, "idle_timeouts": gate.timed_out}
    if args.json:
        print(json.dumps(res))
        return 0

    print(f"model {model}; prompt {args.prompt_tokens} tokens, generation {args.gen_tokens} greedy "
          f"tokens {'from an empty cache' if args.gen_from_empty else 'after it'}; {ncpu} CPUs; peak {args.peak_gflops:g} GFLOP/s, "
          f"{args.gflop_per_token:g} GFLOP/token; load average {load_before:.2f} before, "
          f"{res['load_avg_after']:.2f} after; "
          + (f"runs kept only while other processes used < {gate.max_other:g} cores beyond the "
             f"ones a run leaves free ({gate.discarded} runs "
             f"discarded, {gate.timed_out} idle timeouts)" if gate.enabled else "no idle gate"))
    print(f"{'':22s} {'threads':>7s} {'prompt tok/s':>13s} {'(max)':>7s} {'% peak':>7s} "
          f"{'gen tok/s':>10s} {'(max)':>7s} {'% peak':>7s}   (median of runs; max: fastest run)")
    for name, rows in (("llama.cpp (py " + res.get("llama_cpp_python", "") + ")", llama), ("lantern", ours)):
        for r in rows:
            pmax = max(r.get("prompt_tok_s_all") or [r["prompt_tok_s"]])
            gmax = max(r.get("gen_tok_s_all") or [r["gen_tok_s"]])
            print(f"{name:22s} {r['threads']:7d} {r['prompt_tok_s']:13.1f} {pmax:7.1f} "
                  f"{100 * frac(r['prompt_tok_s']):6.1f}% {r['gen_tok_s']:10.1f} {gmax:7.1f} "
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
