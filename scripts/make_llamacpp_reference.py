"""Condense llama.cpp's logits for SmolLM2 on 256 SOTU tokens into a small test fixture.

Input: the folder written by `bench/llamacpp_agreement.py --dump-llamacpp DIR` (ids.json,
llamacpp_logits.f32 [n_tokens, vocab] raw little-endian f32, meta.json).
Output: crates/lantern-lm/tests/fixtures/smollm2-llamacpp/reference.json with the ids, llama.cpp's
mean next-token cross-entropy, and per position the top-K token ids with llama.cpp's log-probs and
the top-2 logit margin, so the Rust test can check CE, (top-K) KL and argmax agreement without
llama.cpp. Run with bench/.venv/bin/python (needs numpy).
"""
import json
import sys
from pathlib import Path

import numpy as np

K = 16


def main(src: str, dst: str) -> None:
    src_dir = Path(src)
    meta = json.loads((src_dir / "meta.json").read_text())
    ids = json.loads((src_dir / "ids.json").read_text())
    n, vocab = meta["n_tokens"], meta["vocab_size"]
    logits = np.fromfile(src_dir / "llamacpp_logits.f32", dtype="<f4").reshape(n, vocab).astype(np.float64)
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    top = np.argsort(-logits, 1)[:, :K]
    srt = np.sort(logits, 1)
    positions = [
        {
            "top_ids": top[i].tolist(),
            "top_logprobs": [round(float(logp[i, j]), 6) for j in top[i]],
            "margin": round(float(srt[i, -1] - srt[i, -2]), 6),
        }
        for i in range(n)
    ]
    ce = float(-np.mean([logp[i, ids[i + 1]] for i in range(n - 1)]))
    out = {
        "source": "llama.cpp via llama-cpp-python %s (commit %s), %d threads"
        % (meta.get("llama_cpp_python"), meta.get("llama_cpp_commit"), meta.get("n_threads", 0)),
        "model_sha256": meta.get("model_sha256"),
        "text": "first %d tokens of %s" % (n, Path(meta.get("text_file", "")).name),
        "ids": ids,
        "mean_ce": ce,
        "k": K,
        "positions": positions,
    }
    Path(dst).write_text(json.dumps(out, separators=(",", ":")))
    print("wrote", dst, "mean_ce", ce)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
