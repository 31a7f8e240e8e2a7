#!/usr/bin/env python3
"""Writes chat_templates.json: chat templates rendered by Jinja2 the way `transformers` renders
them (`apply_chat_template`: sandboxed environment, trim_blocks, lstrip_blocks), for Lantern's
hand-written renderers to match.

    make_chat_fixture.py SMOLLM2_GGUF TEMPLATES_DIR > chat_templates.json

SMOLLM2_GGUF is the `smollm2-135m` asset (its `tokenizer.chat_template` is read with
llama-cpp-python); TEMPLATES_DIR is `vendor/llama.cpp/models/templates` of the llama-cpp-python
0.3.36 sdist (the `vocab-vectors` asset's package). Needs jinja2 and llama-cpp-python.
"""
import json
import os
import sys

import jinja2
import jinja2.sandbox
import llama_cpp

LLAMA3_0 = r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"""

LLAMA2 = r"""{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"""

CONVERSATIONS = [
    [["user", "Hi"]],
    [["system", "You are terse."], ["user", "What is 2+2?"]],
    [["user", "Hello"], ["assistant", "Hi! How can I help?"], ["user", "Tell me a joke."]],
    [["system", " Be kind. "], ["user", "  padded  \n"], ["assistant", "\nok "], ["user", "x"]],
]


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def render(template, messages, gen, bos, eos):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    msgs = [{"role": r, "content": c} for r, c in messages]
    return env.from_string(template).render(messages=msgs, add_generation_prompt=gen,
                                            bos_token=bos, eos_token=eos)


def main():
    smollm2, tdir = sys.argv[1], sys.argv[2]
    llm = llama_cpp.Llama(model_path=smollm2, vocab_only=True, verbose=False)
    read = lambda name: open(os.path.join(tdir, name), encoding="utf-8").read()
    templates = {
        "smollm2": (llm.metadata["tokenizer.chat_template"], "<|im_start|>", "<|im_end|>"),
        "qwen2.5": (read("Qwen-Qwen2.5-7B-Instruct.jinja"), "", "<|im_end|>"),
        "llama3.0": (LLAMA3_0, "<|begin_of_text|>", "<|eot_id|>"),
        "llama3.1": (read("meta-llama-Llama-3.1-8B-Instruct.jinja"), "<|begin_of_text|>", "<|eot_id|>"),
        "llama2": (LLAMA2, "<s>", "</s>"),
    }
    cases = []
    for name, (template, bos, eos) in templates.items():
        for messages in CONVERSATIONS:
            for gen in (False, True):
                try:
                    out = render(template, messages, gen, bos, eos)
                except jinja2.exceptions.TemplateError:
                    out = None
                cases.append({"template": name, "messages": messages, "add_generation_prompt": gen,
                              "expected": out})
    fixture = {"templates": {k: {"text": t, "bos": b, "eos": e} for k, (t, b, e) in templates.items()},
               "cases": cases}
    json.dump(fixture, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
