#!/usr/bin/env python3
"""SAE training-step throughput on a GPU: `lantern sae bench --device cuda` against PyTorch.

The GPU counterpart of sae_speed.py, for a machine with an NVIDIA GPU, PyTorch and a lantern
built with `--features cuda`. Both sides train the same TopK SAE (d_in 576, 9216 latents, k 32,
batches of 4096 Gaussian activation vectors already on the GPU, f32) and report tokens/s =
activation vectors per second of wall time over --steps steps after --warmup, with the GPU
synchronised before the clock stops.

Peers, in this process:
  * sparsify: EleutherAI's `SparseCoder` (PyPI `eai-sparsify`) moved to the GPU, which there
    decodes with its Triton sparse kernel; forward + FVU + backward + Adam + zero_grad per step
    (skipped, and said so, when it does not import).
  * minimal: sae_speed.py's minimal TopK SAE (encoder Linear, topk, embedding_bag decoder, a
    sparse encoder backward, Adam) on the GPU.
lantern: its device trainer (candle's CUDA backend: the encoder product on cuBLAS, the top-k, the
  decode and the backward as lantern's own sparse kernels), in exact f32 (as the peers) and with
  --tf32 (the encoder product on TF32 tensor cores).

Run (on the GPU machine): python3 bench/sae_gpu_speed.py --lantern path/to/lantern [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sae_speed  # noqa: E402


def bench_torch(kind: str, cfg: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(cfg.seed)
    if kind == "sparsify":
        with contextlib.redirect_stdout(sys.stderr):
            from sparsify import SparseCoder, SparseCoderConfig
        sae = SparseCoder(cfg.d_in, SparseCoderConfig(num_latents=cfg.latents, k=cfg.k),
                          device="cuda")
        loss_fn = lambda x: sae(x).fvu  # noqa: E731
    else:
        sae, loss_fn, _, _ = sae_speed.make_minimal_sae(cfg.d_in, cfg.latents, cfg.k)
        sae = sae.cuda()
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (cfg.latents / 2**14) ** 0.5)
    gen = torch.Generator(device="cuda").manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, cfg.d_in, device="cuda", generator=gen)

    def step():
        loss = loss_fn(x)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for _ in range(cfg.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        loss = step()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    return {"side": kind, "tok_s": cfg.batch * cfg.steps / secs,
            "ms_per_step": 1e3 * secs / cfg.steps, "fvu_last": float(loss)}


def bench_lantern(cfg: argparse.Namespace, tf32: bool) -> dict:
    args = [cfg.lantern, "sae", "bench", "--device", cfg.lantern_device, "--d-in",
            str(cfg.d_in), "--latents", str(cfg.latents), "--k", str(cfg.k), "--batch",
            str(cfg.batch), "--steps", str(cfg.steps), "--warmup", str(cfg.warmup), "--json"]
    if tf32:
        args.append("--tf32")
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"lantern exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {"side": "lantern-tf32" if tf32 else "lantern", "tok_s": out["tok_s"],
            "ms_per_step": 1e3 * out["seconds_per_step"], "fvu_last": out["fvu"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lantern", required=True, help="a lantern built with --features cuda")
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--latents", type=int, default=9216)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lantern-device", default="cuda",
                    help="lantern's --device (tensor-cpu checks this script without a GPU)")
    ap.add_argument("--json", action="store_true")
    cfg = ap.parse_args()
    import torch

    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "d_in": cfg.d_in, "latents": cfg.latents, "k": cfg.k, "batch": cfg.batch,
                 "steps": cfg.steps, "rows": [], "errors": {}}
    for side in ("lantern", "lantern-tf32", "sparsify", "minimal"):
        try:
            if side.startswith("lantern"):
                row = bench_lantern(cfg, side.endswith("tf32"))
            else:
                row = bench_torch(side, cfg)
            res["rows"].append(row)
        except Exception as e:  # noqa: BLE001 -- report and go on with the other sides
            res["errors"][side] = f"{type(e).__name__}: {e}"[:2000]
    tok = {r["side"]: r["tok_s"] for r in res["rows"]}
    for ours in ("lantern", "lantern-tf32"):
        for peer in ("sparsify", "minimal"):
            if ours in tok and peer in tok:
                res[f"{ours}_vs_{peer}"] = tok[ours] / tok[peer]
    if cfg.json:
        print(json.dumps(res))
    else:
        print(f"{res['gpu']}, torch {res['torch']}")
        for r in res["rows"]:
            print(f"{r['side']:>9}  {r['tok_s']:>12,.0f} tok/s  {r['ms_per_step']:8.2f} ms/step"
                  f"  fvu {r['fvu_last']:.3f}")
        for k, v in res.items():
            if "_vs_" in k:
                print(f"{k}: {v:.2f}x")
        for side, err in res["errors"].items():
            print(f"{side}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
