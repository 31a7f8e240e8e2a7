#!/usr/bin/env python3
"""Make the tiny random GPT-NeoX (Pythia-shaped) fixtures and their reference outputs.

Writes crates/lantern-lm/tests/fixtures/tiny-gpt-neox/{parallel,sequential}/ with
  config.json, model.safetensors      -- GPTNeoXForCausalLM.save_pretrained(safe_serialization=True)
  inputs.json                         -- {"sequences": [[ids...], ...]}
  logits.safetensors                  -- logits_{k} [len_k, vocab] f32, one per sequence
  hidden.safetensors                  -- per-layer activations for sequence 0 (see the fixture README)
then reloads each saved folder with from_pretrained and checks that it reproduces the saved
tensors, and checks an independent plain-torch forward (written from the formulas in the fixture
README, not from the HF modules) against HF, plus a set of deliberately wrong variants to show
that each detail the README documents moves the logits far beyond the 1e-4 test tolerance.

Route used (no internet except package registries on the dev machine; no GPU needed):
  apt-get update && apt-get install -y python3-torch python3-venv   # Debian 12: torch 1.13.1+dfsg-4
  /usr/bin/python3 -m venv --system-site-packages /tmp/hfenv          # Debian's Python 3.11.2
  /tmp/hfenv/bin/pip install 'transformers==4.30.2' safetensors
  /tmp/hfenv/bin/python scripts/make_tiny_gpt_neox.py
Exact versions that produced the committed fixture:
  Python 3.11.2 (/usr/bin/python3, Debian 12.11), torch 1.13.0a0 (Debian python3-torch
  1.13.1+dfsg-4, CPU), transformers 4.30.2, safetensors 0.8.0, tokenizers 0.13.3, numpy 1.24.2.

Everything is f32 on CPU; the output is deterministic for a given torch build (seeded
torch.Generator, parameters filled in sorted-name order).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
import safetensors
from safetensors.torch import save_file, load_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

VOCAB = 384
HIDDEN = 64
HEADS = 4
LAYERS = 3
INTER = 256
ROTARY_PCT = 0.25
ROTARY_BASE = 10000
MAX_POS = 128
LN_EPS = 1e-5
SEQ_LENS = [17, 32, 100]
SEED = {"parallel": 1234, "sequential": 5678}
INPUT_SEED = 42

# Deliberately wrong variants must move the logits by at least this much (test tolerance is 1e-4).
MIN_BUG_EFFECT = 1e-3


def make_config(parallel):
    return GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_hidden_layers=LAYERS,
        intermediate_size=INTER,
        hidden_act="gelu",
        rotary_pct=ROTARY_PCT,
        rotary_emb_base=ROTARY_BASE,
        max_position_embeddings=MAX_POS,
        initializer_range=0.1,
        layer_norm_eps=LN_EPS,
        use_cache=True,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
        use_parallel_residual=parallel,
        torch_dtype="float32",
    )


def randomize(model, seed):
    """Non-trivial values everywhere: std-0.1 weights, nonzero biases, random LayerNorm affine."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if name.endswith("embed_in.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "layernorm" in name or "layer_norm" in name:
                if name.endswith(".weight"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))  # U(0.5, 1.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith("query_key_value.weight"):
                # a bit larger so attention patterns are peaked and rotary/position errors show
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith("dense_h_to_4h.weight"):
                # wide MLP pre-activations (std ~2) so exact-erf vs tanh GELU is visible
                p.copy_(torch.randn(p.shape, generator=g) * 0.25)
            elif name.endswith("dense_4h_to_h.weight") or name == "embed_out.weight":
                # amplify the MLP's share of the residual and the logits, again for the GELU check
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith(".weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                raise RuntimeError(f"unexpected parameter {name}")


def make_inputs():
    g = torch.Generator().manual_seed(INPUT_SEED)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in SEQ_LENS]


def run_hf(model, sequences):
    """Logits per sequence and the activations of sequence 0."""
    logits = {}
    hidden = {}
    captured = {}
    hooks = []
    for i, layer in enumerate(model.gpt_neox.layers):
        def save(key):
            def hook(_mod, _inp, out):
                captured[key] = out[0] if isinstance(out, tuple) else out
            return hook
        hooks.append(layer.attention.dense.register_forward_hook(save(f"attn_out_{i}")))
        hooks.append(layer.mlp.act.register_forward_hook(save(f"mlp_act_{i}")))
        hooks.append(layer.mlp.dense_4h_to_h.register_forward_hook(save(f"mlp_out_{i}")))
        hooks.append(layer.register_forward_hook(save(f"resid_post_{i}")))
    model.eval()
    with torch.no_grad():
        for k, ids in enumerate(sequences):
            captured.clear()
            out = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False, return_dict=True)
            logits[f"logits_{k}"] = out.logits[0].contiguous().clone()
            if k == 0:
                for j, h in enumerate(out.hidden_states):
                    hidden[f"hidden_{j}"] = h[0].contiguous().clone()
                for key, v in captured.items():
                    hidden[key] = v[0].contiguous().clone()
    for h in hooks:
        h.remove()
    return logits, hidden


# ---------------------------------------------------------------------------------------------
# Independent reference forward, from the safetensors file only. `bug` selects a wrong variant.
# ---------------------------------------------------------------------------------------------

def ref_forward(sd, cfg, ids, bug=None):
    d, nh, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    hd = d // nh
    rot = int(hd * cfg["rotary_pct"])
    if bug == "full_rotary":
        rot = hd
    eps = cfg["layer_norm_eps"]
    if bug == "ln_eps_1e-6":
        eps = 1e-6
    base = cfg["rotary_emb_base"]
    if bug == "rotary_base_1e4_to_1e5":
        base = 100000.0
    parallel = cfg["use_parallel_residual"]
    if bug == "other_residual_form":
        parallel = not parallel
    T = len(ids)

    def ln(x, p):
        w, b = sd[p + ".weight"], sd[p + ".bias"]
        if bug == "ln_no_bias":
            b = torch.zeros_like(b)
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
        return (x - mu) / torch.sqrt(var + eps) * w + b

    def lin(x, p, bias=True):
        y = x @ sd[p + ".weight"].T
        if bias:
            y = y + sd[p + ".bias"]
        return y

    def gelu(x):
        if bug == "gelu_tanh":
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))

    pos = torch.arange(T, dtype=torch.float32)
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))  # [rot/2]
    ang = pos[:, None] * inv_freq[None, :]  # [T, rot/2]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(x):  # x [nh, T, hd]
        xr, xp = x[..., :rot], x[..., rot:]
        if bug == "rotary_interleaved_gptj":
            a, b = xr[..., 0::2], xr[..., 1::2]
            ra, rb = a * cos - b * sin, a * sin + b * cos
            xr = torch.stack([ra, rb], -1).reshape(xr.shape)
        else:  # NeoX: pairs (j, j + rot/2)
            a, b = xr[..., : rot // 2], xr[..., rot // 2:]
            xr = torch.cat([a * cos - b * sin, b * cos + a * sin], -1)
        return torch.cat([xr, xp], -1)

    x = sd["gpt_neox.embed_in.weight"][torch.tensor(ids)]
    for i in range(L):
        p = f"gpt_neox.layers.{i}"
        h = ln(x, p + ".input_layernorm")
        qkv = lin(h, p + ".attention.query_key_value")  # [T, 3d]
        if bug == "qkv_split_3_heads_hd":
            qkv = qkv.view(T, 3, nh, hd)
            q, k, v = (qkv[:, j].permute(1, 0, 2) for j in range(3))
        else:  # [T, nh, 3, hd]: per head, q then k then v
            qkv = qkv.view(T, nh, 3 * hd)
            q = qkv[..., :hd].permute(1, 0, 2)
            k = qkv[..., hd:2 * hd].permute(1, 0, 2)
            v = qkv[..., 2 * hd:].permute(1, 0, 2)
        if bug != "no_rotary":
            q, k = rope(q), rope(k)
        scale = 1.0 / math.sqrt(hd)
        if bug == "scale_1_over_sqrt_d_model":
            scale = 1.0 / math.sqrt(d)
        s = (q @ k.transpose(1, 2)) * scale  # [nh, T, T]
        if bug != "no_causal_mask":
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, -1) @ v  # [nh, T, hd]
        a = a.permute(1, 0, 2).reshape(T, d)
        attn = lin(a, p + ".attention.dense")
        if parallel:
            m = lin(gelu(lin(ln(x, p + ".post_attention_layernorm"), p + ".mlp.dense_h_to_4h")),
                    p + ".mlp.dense_4h_to_h")
            x = x + attn + m
        else:
            x = x + attn
            m = lin(gelu(lin(ln(x, p + ".post_attention_layernorm"), p + ".mlp.dense_h_to_4h")),
                    p + ".mlp.dense_4h_to_h")
            x = x + m
    if bug != "no_final_norm":
        x = ln(x, "gpt_neox.final_layer_norm")
    return lin(x, "embed_out", bias=False)


BUGS = [
    "gelu_tanh", "rotary_interleaved_gptj", "full_rotary", "no_rotary", "rotary_base_1e4_to_1e5",
    "qkv_split_3_heads_hd", "scale_1_over_sqrt_d_model", "no_causal_mask",
    "other_residual_form", "ln_no_bias", "no_final_norm", "ln_eps_1e-6",
]
# ln_eps_1e-6 is reported but not required to be large (it is a tiny effect by nature).
BUGS_NOT_ASSERTED = {"ln_eps_1e-6"}


def build(out_root, name, parallel, sequences):
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(SEED[name])
    model = GPTNeoXForCausalLM(make_config(parallel)).float()
    randomize(model, SEED[name])
    model.eval()
    model.save_pretrained(d, safe_serialization=True)
    logits, hidden = run_hf(model, sequences)
    with open(os.path.join(d, "inputs.json"), "w") as f:
        json.dump({"sequences": sequences}, f)
        f.write("\n")
    save_file(logits, os.path.join(d, "logits.safetensors"))
    save_file(hidden, os.path.join(d, "hidden.safetensors"))
    return d


def self_check(d, sequences):
    """Reload the folder with HF and with the independent reference; compare to the saved files."""
    ok = True
    model = GPTNeoXForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
    model.eval()
    logits_saved = load_file(os.path.join(d, "logits.safetensors"))
    hidden_saved = load_file(os.path.join(d, "hidden.safetensors"))
    logits, hidden = run_hf(model, sequences)
    for k in logits_saved:
        diff = (logits[k] - logits_saved[k]).abs().max().item()
        print(f"  reload {k}: max|diff| = {diff:.3e}")
        ok &= diff == 0.0
    for k in hidden_saved:
        ok &= torch.equal(hidden[k], hidden_saved[k])
    assert set(hidden) == set(hidden_saved)

    sd = load_file(os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    for k, ids in enumerate(sequences):
        ref = ref_forward(sd, cfg, ids)
        diff = (ref - logits_saved[f"logits_{k}"]).abs().max().item()
        print(f"  independent reference vs HF logits_{k}: max|diff| = {diff:.3e}")
        ok &= diff < 1e-4
    # How the activations in hidden.safetensors relate (documented in the fixture README).
    L = cfg["num_hidden_layers"]
    fln = model.gpt_neox.final_layer_norm
    with torch.no_grad():
        rel = [torch.equal(hidden_saved["hidden_0"],
                           sd["gpt_neox.embed_in.weight"][torch.tensor(sequences[0])])]
        for i in range(L - 1):
            rel.append(torch.equal(hidden_saved[f"hidden_{i + 1}"], hidden_saved[f"resid_post_{i}"]))
        rel.append(torch.allclose(hidden_saved[f"hidden_{L}"], fln(hidden_saved[f"resid_post_{L - 1}"]),
                                  atol=1e-6, rtol=0))
        for i in range(L):
            recomposed = hidden_saved[f"hidden_{i}"] + hidden_saved[f"attn_out_{i}"] + hidden_saved[f"mlp_out_{i}"]
            rel.append(torch.allclose(recomposed, hidden_saved[f"resid_post_{i}"], atol=1e-5, rtol=0))
    print(f"  hidden.safetensors relations hold: {all(rel)}")
    ok &= all(rel)
    print(f"  logits range: [{min(v.min().item() for v in logits_saved.values()):.3f}, "
          f"{max(v.max().item() for v in logits_saved.values()):.3f}]")
    print("  what a bug does (max|diff| of logits over all sequences; must be > 1e-4 to be caught):")
    for bug in BUGS:
        worst = 0.0
        for k, ids in enumerate(sequences):
            ref = ref_forward(sd, cfg, ids, bug=bug)
            worst = max(worst, (ref - logits_saved[f"logits_{k}"]).abs().max().item())
        flag = ""
        if bug not in BUGS_NOT_ASSERTED and worst < MIN_BUG_EFFECT:
            flag = "  <-- TOO SMALL"
            ok = False
        print(f"    {bug:28s} {worst:.3e}{flag}")
    return ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "crates", "lantern-lm", "tests",
                                                  "fixtures", "tiny-gpt-neox"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, safetensors {safetensors.__version__}, numpy {np.__version__}")
    sequences = make_inputs()
    all_ok = True
    for name, parallel in [("parallel", True), ("sequential", False)]:
        d = build(args.out, name, parallel, sequences)
        print(f"{name}: wrote {os.path.normpath(d)}")
        for f in sorted(os.listdir(d)):
            print(f"  {f}: {os.path.getsize(os.path.join(d, f))} bytes")
        ok = self_check(d, sequences)
        print(f"  self-check {'OK' if ok else 'FAILED'}")
        all_ok &= ok
    if not all_ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
