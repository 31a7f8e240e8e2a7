#!/usr/bin/env python3
"""Logit agreement between `lantern lm logits` and llama.cpp on SmolLM2-135M-Instruct Q4_1.

Takes the first N (default 256) tokens of a State of the Union speech (default: the 2021 speech in
`lantern assets path sotu`), tokenized by llama.cpp WITHOUT a BOS token (SmolLM2's GGUF has
tokenizer.ggml.add_bos_token = false, and `lantern lm tokenize` adds none unless --bos), gets
llama.cpp's logits for every position (logits_all=True, one batch), gets ours from
`lantern lm logits --ids-file`, and prints:

  * mean next-token cross-entropy (positions 0..n-2 predicting ids[1..]) for both, and the difference
  * mean KL(llama.cpp || lantern) per position (softmax in float64)
  * the fraction of positions whose argmax agrees
  * argmax agreement restricted to positions where llama.cpp's top-2 logit margin > 0.2 nats

Targets: |dCE| <= 0.02, KL <= 0.01, every argmax agrees where the margin > 0.2. Exit status 1 if one
fails, 2 if lantern could not be run.

`--dump-llamacpp DIR` only writes llama.cpp's side (ids.json, llamacpp_logits.f32, meta.json,
text.txt) so the logits can be compared before the CLI exists.

Run: bench/.venv/bin/python bench/llamacpp_agreement.py [--model M] [--text-file F] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CE_TOL = 0.02
KL_TOL = 0.01
MARGIN = 0.2


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def mean_ce(logp: np.ndarray, ids: list[int]) -> float:
    n = len(ids)
    tgt = np.asarray(ids[1:], dtype=np.int64)
    return float(-logp[np.arange(n - 1), tgt].mean())


def llamacpp_logits(model: Path, text: str, n_tokens: int, n_threads: int):
    n_ctx = max(512, n_tokens)
    llm = common.load_llama(model, n_ctx=n_ctx, n_threads=n_threads, logits_all=True,
                            n_batch=n_ctx)
    all_ids = common.tokenize(llm, text)
    if len(all_ids) < n_tokens:
        sys.exit(f"text has only {len(all_ids)} tokens, need {n_tokens}")
    ids = [int(t) for t in all_ids[:n_tokens]]
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    secs = time.perf_counter() - t0
    vocab = llm.n_vocab()
    logits = np.array(llm.scores[:n_tokens, :vocab], dtype=np.float32, copy=True)
    if not np.isfinite(logits).all() or np.all(logits[0] == 0) or np.all(logits[-1] == 0):
        sys.exit("llama.cpp returned empty/non-finite logits (logits_all not honoured?)")
    prefix_text = llm.detokenize(ids).decode("utf-8", errors="replace")
    prefix_ids = [int(t) for t in common.tokenize(llm, prefix_text)]
    return ids, logits, vocab, secs, prefix_text, prefix_ids


def dump(outdir: Path, model: Path, text_file: Path, ids, logits, vocab, n_threads, secs,
         prefix_text) -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    common.write_json(outdir / "ids.json", ids)
    logits.astype("<f4").tofile(outdir / "llamacpp_logits.f32")
    (outdir / "text.txt").write_text(prefix_text)
    ce = mean_ce(log_softmax64(logits), ids)
    meta = {
        "n_tokens": len(ids),
        "vocab_size": int(vocab),
        "mean_ce": ce,
        "logits_file": "llamacpp_logits.f32",
        "logits_format": "raw little-endian f32, row-major [n_tokens, vocab_size]; row i = logits "
                         "after ids[0..=i]",
        "ids_file": "ids.json",
        "mean_ce_definition": "mean over i in 0..n-2 of -log_softmax(logits[i])[ids[i+1]], float64",
        "bos_added": False,
        "tokenizer": "llama.cpp tokenize(add_bos=False, special=False) of the whole text file, "
                     "first n_tokens kept; text.txt is their detokenization",
        "model": str(model),
        "model_sha256": common.sha256_file(model),
        "text_file": str(text_file),
        "n_threads": n_threads,
        "eval_seconds": secs,
        **common.llama_cpp_versions(),
    }
    common.write_json(outdir / "meta.json", meta)
    return meta


def check_tokenizer(binary: Path, model: Path, text: str, ids: list[int]) -> dict:
    """Informational: does `lantern lm tokenize` give llama.cpp's ids for the same text?

    `ids` is llama.cpp's tokenization of `text` (the detokenized prefix: usually, not always, the
    same ids as the prefix of the whole file's tokenization)."""
    try:
        out = common.run_lantern(binary, ["lm", "tokenize", "--model", str(model), "--text", text,
                                          "--json"])
        ours = [int(t) for t in out["ids"]]
    except Exception as e:  # noqa: BLE001
        return {"ok": None, "error": str(e).splitlines()[0]}
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, ids)) if a != b), None)
    if first_diff is None and len(ours) != len(ids):
        first_diff = min(len(ours), len(ids))
    return {"ok": first_diff is None, "n_ours": len(ours), "n_llamacpp": len(ids),
            "first_diff": first_diff}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF path (default: `lantern assets path smollm2-135m`)")
    ap.add_argument("--text-file", help="text (default: 2021_*.txt in `lantern assets path sotu`)")
    ap.add_argument("--lantern", default=str(common.DEFAULT_LANTERN), help="lantern binary")
    ap.add_argument("--n-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp n_threads(_batch)")
    ap.add_argument("--workdir", default=str(common.OUT_DIR / "agreement"),
                    help="where ids.json and the logits files are written")
    ap.add_argument("--dump-llamacpp", metavar="DIR",
                    help="only write llama.cpp's ids.json, llamacpp_logits.f32, meta.json, text.txt")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()

    binary = Path(args.lantern)
    model = common.resolve_model(args.model, binary)
    text_file = common.resolve_text_file(args.text_file, binary)
    text = text_file.read_text(encoding="utf-8")

    common.log(f"llama.cpp: {args.n_tokens} tokens of {text_file} with {model}")
    ids, ref, vocab, secs, prefix_text, prefix_ids = llamacpp_logits(model, text, args.n_tokens, args.threads)

    if args.dump_llamacpp:
        meta = dump(Path(args.dump_llamacpp), model, text_file, ids, ref, vocab, args.threads, secs,
                    prefix_text)
        if args.json:
            print(json.dumps(meta))
        else:
            print(f"wrote {args.dump_llamacpp}/ids.json, llamacpp_logits.f32 "
                  f"[{meta['n_tokens']} x {meta['vocab_size']}], meta.json, text.txt")
            print(f"llama.cpp mean CE over {meta['n_tokens']} tokens: {meta['mean_ce']:.6f}")
        return 0

    workdir = Path(args.workdir)
    meta = dump(workdir, model, text_file, ids, ref, vocab, args.threads, secs, prefix_text)

    if not common.lantern_available(binary):
        msg = f"lantern binary missing at {binary} (cargo build --release); llama.cpp side in {workdir}"
        if args.json:
            print(json.dumps({"error": msg, "llamacpp_mean_ce": meta["mean_ce"]}))
        else:
            print(msg)
            print(f"llama.cpp mean CE: {meta['mean_ce']:.6f}")
        return 2

    ours_file = workdir / "lantern_logits.f32"
    try:
        t0 = time.perf_counter()
        out = common.run_lantern(binary, ["lm", "logits", "--model", str(model), "--ids-file",
                                          str(workdir / "ids.json"), "--out", str(ours_file),
                                          "--json"])
        lantern_secs = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001
        print(f"lantern lm logits failed: {e}", file=sys.stderr)
        return 2
    if int(out.get("n_tokens", -1)) != len(ids) or int(out.get("vocab_size", -1)) != vocab:
        print(f"lantern says n_tokens={out.get('n_tokens')} vocab_size={out.get('vocab_size')}, "
              f"expected {len(ids)} x {vocab}", file=sys.stderr)
        return 2
    ours = np.fromfile(ours_file, dtype="<f4")
    if ours.size != len(ids) * vocab:
        print(f"{ours_file}: {ours.size} floats, expected {len(ids) * vocab}", file=sys.stderr)
        return 2
    ours = ours.reshape(len(ids), vocab)

    lp_ref = log_softmax64(ref)
    lp_ours = log_softmax64(ours)
    ce_ref = mean_ce(lp_ref, ids)
    ce_ours = mean_ce(lp_ours, ids)
    kl_pos = (np.exp(lp_ref) * (lp_ref - lp_ours)).sum(axis=1)
    kl = float(kl_pos.mean())
    am_ref = ref.argmax(axis=1)
    am_ours = ours.argmax(axis=1)
    agree = am_ref == am_ours
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    confident = margin > MARGIN
    n_conf = int(confident.sum())
    n_conf_agree = int((agree & confident).sum())
    disagree_conf = [int(i) for i in np.nonzero(confident & ~agree)[0]]

    checks = {
        "ce": abs(ce_ours - ce_ref) <= CE_TOL,
        "kl": kl <= KL_TOL,
        "argmax_margin": n_conf_agree == n_conf,
    }
    res = {
        "n_tokens": len(ids),
        "vocab_size": vocab,
        "text_file": str(text_file),
        "model": str(model),
        "llamacpp_mean_ce": ce_ref,
        "lantern_mean_ce": ce_ours,
        "lantern_reported_mean_ce": out.get("mean_ce"),
        "delta_ce": ce_ours - ce_ref,
        "mean_kl": kl,
        "max_kl": float(kl_pos.max()),
        "max_kl_position": int(kl_pos.argmax()),
        "argmax_agreement": float(agree.mean()),
        "margin": MARGIN,
        "margin_positions": n_conf,
        "margin_agreements": n_conf_agree,
        "margin_disagreement_positions": disagree_conf,
        "max_abs_logit_diff": float(np.abs(ours - ref).max()),
        "lantern_seconds": lantern_secs,
        "llamacpp_seconds": secs,
        "tokenizer_check": check_tokenizer(binary, model, prefix_text, prefix_ids),
        "checks": checks,
        "pass": all(checks.values()),
        **{k: v for k, v in common.llama_cpp_versions().items() if k != "system_info"},
    }
    if args.json:
        print(json.dumps(res))
    else:
        def pf(ok):
            return "PASS" if ok else "FAIL"
        print(f"tokens: {len(ids)} of {text_file.name}, vocab {vocab}")
        print(f"mean CE  llama.cpp {ce_ref:.6f}  lantern {ce_ours:.6f}  "
              f"(lantern reports {out.get('mean_ce')})  diff {ce_ours - ce_ref:+.6f}")
        print(f"mean KL(llama.cpp || lantern) {kl:.6f}  (max {kl_pos.max():.6f} at position "
              f"{int(kl_pos.argmax())})")
        print(f"argmax agreement {agree.mean():.4f} ({int(agree.sum())}/{len(ids)})")
        print(f"positions with llama.cpp top-2 margin > {MARGIN}: {n_conf}, agreeing {n_conf_agree}"
              + (f", disagreeing at {disagree_conf}" if disagree_conf else ""))
        print(f"max |logit diff| {res['max_abs_logit_diff']:.4f}")
        tc = res["tokenizer_check"]
        print(f"tokenizer (`lantern lm tokenize` vs llama.cpp on text.txt): "
              + ("same ids" if tc.get("ok") else
                 f"n/a ({tc.get('error')})" if tc.get("ok") is None else
                 f"differ at {tc.get('first_diff')} ({tc.get('n_ours')} vs {tc.get('n_llamacpp')} ids)"))
        print(f"{pf(checks['ce'])}  |dCE| <= {CE_TOL}")
        print(f"{pf(checks['kl'])}  KL <= {KL_TOL}")
        print(f"{pf(checks['argmax_margin'])}  argmax agrees at every position with margin > {MARGIN}")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
