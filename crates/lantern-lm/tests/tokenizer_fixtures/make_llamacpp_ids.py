#!/usr/bin/env python3
"""Writes llamacpp_ids.json: token ids that llama.cpp itself gives for a set of texts, per vocabulary.

Run with a Python that has llama-cpp-python 0.3.36, the version whose llama.cpp Lantern follows
(`pip install` of the vocab-vectors asset's sdist builds it; it reproduces every test vector there):

    make_llamacpp_ids.py VOCAB_DIR SMOLLM2_GGUF > llamacpp_ids.json

VOCAB_DIR is the `vocab-vectors` asset folder (the ggml-vocab-*.gguf files); SMOLLM2_GGUF is the
`smollm2-135m` asset. For every vocabulary and text it records
`llama_tokenize(text, add_special=False, parse_special=False)` ("plain") and the same with
`parse_special=True` ("special"). The texts are llama.cpp's own gpt-2 test inputs, hand-written
cases (spaces, newlines, digits, accents, CJK, emoji, chat markup) and seeded random mixtures of
awkward characters.
"""
import json
import os
import random
import sys

import llama_cpp

VOCABS = ["gpt-neox", "gpt-2", "llama-bpe", "llama-spm", "qwen2", "qwen35", "starcoder", "falcon",
          "deepseek-llm", "deepseek-coder", "mpt", "refact", "command-r", "phi-3"]

HAND = [
    "Hello",
    "Hello world",
    " Hello world",
    "Hello  world   with    many     spaces",
    "line one\nline two\n\nline four\n\n\n",
    "windows\r\nline\r\n\r\nends",
    "\ttabbed\t\tcode()\n    indented = 4\n",
    "3.14159 and 1234567890 and 2024-06-01, 1,000,000",
    "Numbers: 0 1 22 333 4444 55555 666666",
    "café naïve Ünïcödé résumé façade jalapeño",
    "中文字符测试，包括标点。日本語のテキスト。한국어 텍스트.",
    "emoji 🦙🔥👍🏽 🇺🇸 🧑‍💻 done",
    "I'm sure you've heard they'll say it's John's, WE'RE told, I'D say",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>Once upon a time<|endoftext|>",
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "text with <|im_start|> inside and <|im_end|>trailing",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$ and $a_{i,j}$",
    "Mr. Speaker, Mr. Vice President, Members of Congress, distinguished guests, and fellow "
    "Americans: Tonight marks the eighth year that I've come here to report on the State of the "
    "Union. And for this final one, I'm going to try to make it a little shorter.\n\n"
    "Fellow-Citizens of the Senate and House of Representatives: I embrace with great "
    "satisfaction the opportunity which now presents itself of congratulating you on the "
    "present favorable prospects of our public affairs. The recent accession of the important "
    "State of North Carolina to the Constitution of the United States (of which official "
    "information has been received), the rising credit and respectability of our country, the "
    "general and increasing good will toward the Government of the Union, and the concord, "
    "peace, and plenty with which we are blessed are circumstances auspicious in an eminent "
    "degree to our national prosperity.\n",
    "   leading and trailing spaces   ",
    "\n",
    " ",
    "",
    "a\u00a0b\u3000c\u2009d\u0085e",
    "e\u0301 a\u0308 combining marks",
    "\u0378 unassigned \ufeff bom \u200b zwsp",
]

POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + [" ", "  ", "   ", "\n", "\n\n", "\r\n", "\r", "\t", " \n", "'", "'s", "'ll", "'RE", "'D",
           "'ve", "!", "?", ".", ",", ";", ":", "-", "_", "(", ")", "[", "]", "{", "}", "<", ">",
           "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "+", "=", "~", "`", "\"", "...",
           "é", "ñ", "ü", "ß", "e\u0301", "中", "文", "日本", "한국어", "Ж", "ωσ", "ا", "ह", "๑",
           "\u00a0", "\u3000", "\u2009", "\u0085", "🦙", "👍🏽", "🇺🇸", "\U0001F9D1\u200D\U0001F4BB",
           "①", "²", "٣", "\u0378", "\ufeff", "\u200b", "…", "—", "“", "”", "¿", "€", "£", "½",
           "word", " word", "Word", " the", "ing", "123", "4567", "<|endoftext|>", "<|im_start|>",
           "<|im_end|>", "<s>", "</s>", "<unk>", "<|eot_id|>", "<|begin_of_text|>", "<|end|>",
           "<|user|>", "<|assistant|>", "\u2581", "Ġ", "Ċ"])


def random_texts(n, seed=20240601):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def gpt2_inputs(vocab_dir):
    raw = open(os.path.join(vocab_dir, "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8", newline="").read()
    sep = "\n__ggml_vocab_test__\n"
    out, pos = [], 0
    while pos < len(raw):
        n = raw.find(sep, pos)
        if n < 0:
            out.append(raw[pos:])
            break
        out.append(raw[pos:n])
        pos = n + len(sep)
    return out


def main():
    vocab_dir, smollm2 = sys.argv[1], sys.argv[2]
    texts = HAND + gpt2_inputs(vocab_dir) + random_texts(300)
    files = {name: os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf") for name in VOCABS}
    files["smollm2"] = smollm2
    result = {"llama_cpp_python": llama_cpp.__version__, "texts": texts, "vocabs": {}}
    for name, path in files.items():
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        enc = lambda t, special: llm.tokenize(t.encode("utf-8"), add_bos=False, special=special)
        result["vocabs"][name] = {
            "plain": [enc(t, False) for t in texts],
            "special": [enc(t, True) for t in texts],
        }
        del llm
    json.dump(result, sys.stdout, ensure_ascii=True, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
