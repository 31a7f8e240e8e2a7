#!/usr/bin/env python3
"""Training-step throughput of a TopK sparse autoencoder: `lantern sae bench` against PyTorch.

Both sides train the same SAE (d_in 576, 9216 latents, k 32 by default) on batches of 4096
random Gaussian activation vectors, on this CPU, and report tokens/s = activation vectors trained
on per second of wall time.

Peer (PyTorch, in this process; one fixed batch of torch.randn(batch, d_in) drawn with seed 0):
  * EleutherAI sparsify's `SparseCoder` (PyPI `eai-sparsify`) when it imports and runs on CPU
    (SPARSIFY_DISABLE_TRITON=1: its Triton decoder needs a GPU). One step = forward (encoder
    Linear on x - b_dec, ReLU, topk, sparse embedding_bag decoder) + its FVU loss + backward (its
    fused encoder's sparse backward) + torch.optim.Adam step + zero_grad.
  * otherwise a minimal TopK SAE written here with the same arithmetic: encoder Linear(d_in, n) on
    x - b_dec, ReLU, topk(k); decoder F.embedding_bag(indices, W_dec, per_sample_weights=acts,
    mode="sum") + b_dec; loss sum((x_hat - x)^2) / sum((x - x.mean(0))^2); backward through a
    sparse encoder backward (gradients only for the k selected latents of each row, as sparsify
    does; plain autograd would do two extra dense matmuls); Adam.
  `--peer` picks one (default auto: sparsify, else minimal); the output says which ran.
  Each thread count (torch.set_num_threads) builds a fresh model and optimizer, runs --warmup
  steps, then times --steps steps with perf_counter: tok/s = batch * steps / seconds.
lantern: `lantern sae bench --d-in D --latents N --k K --batch B --steps S --json` with
  RAYON_NUM_THREADS=t; it prints one JSON object with `tok_s` (and `threads`).

Each side's figure is the best over --threads (1 and 2). Printed: a table (side, threads, tok/s,
% of ceiling), the ratio lantern / peer, and the fraction of the machine's f32 peak (--peak-gflops,
170 GFLOP/s over both cores) that the encoder matmul alone would take at that rate:
tok/s * 2 * d_in * latents / 1e9 / peak. The encoder forward is the only dense product in the step
(the decoder and the backward touch k latents per row), so this is a ceiling on tok/s for an f32
product, not a count of all the work done. Where the CPU has AMX, lantern's encoder product is a
bf16 tile product that only screens, with the survivors recomputed in f32 (same picks and values
as the f32 product), so lantern can pass 100% of this f32 ceiling; LANTERN_SCREEN=off in the
environment times lantern's f32 product instead.

Run: bash bench/setup_torch_venv.sh   (once)
     bench/.venv-torch/bin/python bench/sae_speed.py [--json] [--skip-lantern] [--boost]
(started with another python that lacks torch, the script re-executes itself with
bench/.venv-torch/bin/python when that exists)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TORCH_VENV = common.TORCH_VENV




def cpu_model() -> str:
    """The CPU's model name and whether it has AMX tiles (which lantern's encoder screen uses)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                 if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return f"{name} ({'AMX' if 'amx_tile' in flags else 'no AMX'})"


# --------------------------------------------------------------------------------------------
# The peer: sparsify's SparseCoder, or a minimal TopK SAE with the same arithmetic


def make_minimal_sae(d_in: int, n: int, k: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SparseTopKEncoder(torch.autograd.Function):
        """relu(x @ W.T + b), then topk; the backward only touches the k chosen latents per row."""

        @staticmethod
        def forward(ctx, x, weight, bias, k):
            pre = F.relu(F.linear(x, weight, bias))
            acts, idx = pre.topk(k, dim=-1, sorted=False)
            ctx.save_for_backward(x, weight, idx)
            ctx.mark_non_differentiable(idx)
            return acts, idx

        @staticmethod
        def backward(ctx, g_acts, _g_idx):
            x, weight, idx = ctx.saved_tensors
            flat_idx = idx.reshape(-1)
            # d/dx: sum over the chosen latents j of g[j] * W[j, :]
            g_x = F.embedding_bag(idx, weight, per_sample_weights=g_acts, mode="sum")
            # d/dW[j, :] += g[row, j] * x[row, :] for each chosen (row, j)
            rows = (g_acts.unsqueeze(-1) * x.unsqueeze(1)).reshape(-1, x.shape[1])
            g_w = torch.zeros_like(weight).index_add_(0, flat_idx, rows)
            g_b = weight.new_zeros(weight.shape[0]).index_add_(0, flat_idx, g_acts.reshape(-1))
            return g_x, g_w, g_b, None

    class MinimalTopKSae(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = k
            self.encoder = nn.Linear(d_in, n)  # weight [n, d_in], PyTorch's default init
            with torch.no_grad():
                self.encoder.bias.zero_()
            # decoder rows start as the encoder's, at unit norm (as sparsify initializes)
            self.W_dec = nn.Parameter(self.encoder.weight.detach().clone())
            self.b_dec = nn.Parameter(torch.zeros(d_in))
            self.normalize_decoder()

        @torch.no_grad()
        def normalize_decoder(self):
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True) + torch.finfo(self.W_dec.dtype).eps

        @torch.no_grad()
        def project_decoder_grad(self):
            """Remove the part of each decoder row's gradient along that row."""
            along = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad -= along * self.W_dec

        def forward(self, x):
            acts, idx = SparseTopKEncoder.apply(x - self.b_dec, self.encoder.weight,
                                                self.encoder.bias, self.k)
            x_hat = F.embedding_bag(idx, self.W_dec, per_sample_weights=acts, mode="sum") + self.b_dec
            return (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()  # FVU

    sae = MinimalTopKSae()
    return sae, lambda x: sae(x), sae.normalize_decoder, sae.project_decoder_grad


def make_sparsify_sae(d_in: int, n: int, k: int):
    # sparsify prints its choice of decoder to stdout on import; keep stdout for --json.
    with contextlib.redirect_stdout(sys.stderr):
        from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=n, k=k), device="cpu")
    return (sae, lambda x: sae(x).fvu, sae.set_decoder_norm_to_unit_norm,
            sae.remove_gradient_parallel_to_decoder_directions)


def sparsify_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("eai-sparsify")
    except metadata.PackageNotFoundError:
        return None


def build_peer(kind: str, d_in: int, n: int, k: int, seed: int):
    import torch

    torch.manual_seed(seed)
    if kind == "sparsify":
        return make_sparsify_sae(d_in, n, k)
    return make_minimal_sae(d_in, n, k)


def choose_peer(requested: str, cfg: argparse.Namespace) -> tuple[str, str | None]:
    """'sparsify' if it imports and trains one small step on CPU (or 'minimal'), and why not."""
    if requested == "minimal":
        return "minimal", None
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    try:
        import torch

        sae, loss_fn, _, _ = build_peer("sparsify", 64, 256, 8, cfg.seed)
        loss = loss_fn(torch.randn(32, 64))
        loss.backward()
        torch.optim.Adam(sae.parameters()).step()
        return "sparsify", None
    except Exception as e:  # noqa: BLE001 -- any failure means: fall back
        why = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        if requested == "sparsify":
            sys.exit(f"--peer sparsify: sparsify does not run here: {why}")
        common.log(f"sparsify does not run on this CPU ({why}); using the minimal TopK SAE")
        return "minimal", why


def measured(fn, threads: int, cfg: argparse.Namespace, gate: common.IdleGate):
    """fn's result and the cores other processes used while it ran (None without /proc/stat).
    With --wait-idle, first waits (up to that many seconds) for a moment when they use less
    than 0.1 cores beyond those the run leaves free."""
    if not gate.enabled:
        return fn(), None
    if cfg.wait_idle > 0:
        gate.wait(threads)
    before = gate._snap()
    out = fn()
    return out, gate._other(before, gate._snap())


def bench_peer(kind: str, threads: int, cfg: argparse.Namespace, gate: common.IdleGate) -> dict:
    import torch

    torch.set_num_threads(threads)
    sae, loss_fn, normalize, project = build_peer(kind, cfg.d_in, cfg.latents, cfg.k, cfg.seed)
    # sparsify's Adam learning rate for this width (its trainer's default)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (cfg.latents / 2**14) ** 0.5)
    x = torch.randn(cfg.batch, cfg.d_in, generator=torch.Generator().manual_seed(cfg.seed))

    def step() -> float:
        if cfg.decoder_norm:
            normalize()
        loss = loss_fn(x)
        loss.backward()
        if cfg.decoder_norm:
            project()
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    losses = [step() for _ in range(cfg.warmup)]
    step_seconds: list[float] = []

    def timed() -> float:
        t_start = time.perf_counter()
        for _ in range(cfg.steps):
            t0 = time.perf_counter()
            losses.append(step())
            step_seconds.append(time.perf_counter() - t0)
        return time.perf_counter() - t_start

    seconds, other = measured(timed, threads, cfg, gate)
    return {
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "seconds": seconds,
        "tok_s": cfg.batch * cfg.steps / seconds,
        "step_seconds_median": statistics.median(step_seconds),
        "step_seconds_min": min(step_seconds),
        "fvu_first": losses[0],
        "fvu_last": losses[-1],
        "other_cores": other,
    }


# --------------------------------------------------------------------------------------------
# lantern


def bench_lantern(binary: Path, threads: int, cfg: argparse.Namespace,
                  gate: common.IdleGate) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    args = ["sae", "bench", "--d-in", str(cfg.d_in), "--latents", str(cfg.latents),
            "--k", str(cfg.k), "--batch", str(cfg.batch), "--steps", str(cfg.steps), "--json"]
    out, other = measured(lambda: common.run_lantern(binary, args, env=env), threads, cfg, gate)
    if "tok_s" not in out:
        raise RuntimeError(f"`lantern sae bench` printed no tok_s: {json.dumps(out)[:300]}")
    return {
        "threads": threads,
        "reported_threads": out.get("threads"),
        "tok_s": float(out["tok_s"]),
        "other_cores": other,  # of the whole process, setup included
        "output": out,
    }


# --------------------------------------------------------------------------------------------


def summarize_error(e: Exception) -> str:
    """One line: common.run_lantern's 'CMD exited N' (without CMD) and stderr's first line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    head = lines[0]
    if " exited " in head:
        head = "exited " + head.rsplit(" exited ", 1)[1]
    detail = next((line for line in lines[1:] if line != "stderr:"), "")
    return f"{head}: {detail}" if detail else head


def best(rows: list[dict]) -> dict:
    top = max(rows, key=lambda r: r["tok_s"])
    return {"tok_s": top["tok_s"], "threads": top["threads"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-in", type=int, default=576, help="activation width")
    ap.add_argument("--latents", type=int, default=9216, help="SAE width n")
    ap.add_argument("--k", type=int, default=32, help="active latents per row")
    ap.add_argument("--batch", type=int, default=4096, help="activation vectors per step")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them (peer)")
    ap.add_argument("--threads", default="1,2", help="thread counts to try, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer", choices=("auto", "sparsify", "minimal"), default="auto",
                    help="PyTorch side: sparsify's SparseCoder, the minimal SAE written here, or "
                         "sparsify when it runs on CPU and minimal otherwise")
    ap.add_argument("--decoder-norm", action="store_true",
                    help="peer steps also do what sparsify's trainer adds around the step: "
                         "renormalize decoder rows before it, project the decoder gradient "
                         "before Adam (off: forward + loss + backward + Adam only)")
    ap.add_argument("--lantern", default=str(common.DEFAULT_LANTERN), help="lantern binary")
    ap.add_argument("--skip-lantern", action="store_true", help="only run the PyTorch side")
    ap.add_argument("--skip-peer", action="store_true", help="only run lantern")
    ap.add_argument("--peak-gflops", type=float, default=170.0,
                    help="the machine's f32 peak over all its cores, GFLOP/s")
    ap.add_argument("--boost", action="store_true",
                    help="(root) as in llamacpp_speed.py: a scheduler autogroup of our own at "
                         "nice -20, and a spinning process on each core a run leaves free, so "
                         "other sessions' work cannot take CPU from the timed runs; the script "
                         "leaves the terminal's session (stop it with kill, not Ctrl-C)")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each timed run, wait up to this many seconds for other "
                         "processes to leave the cores it uses alone (default: measure at once; "
                         "the table says how much CPU others took)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    cfg = ap.parse_args()

    if not cfg.skip_peer:
        common.ensure_torch(Path(__file__))
    threads = [int(t) for t in cfg.threads.split(",") if t.strip()]
    binary = Path(cfg.lantern)
    flop_per_token = 2 * cfg.d_in * cfg.latents

    def ceiling_frac(tok_s: float) -> float:
        return tok_s * flop_per_token / 1e9 / cfg.peak_gflops

    if cfg.boost:
        common.boost_priority()
    # Says how many cores other processes used during each timed run (and waits, --wait-idle).
    gate = common.IdleGate(max_other=0.1, timeout=cfg.wait_idle)
    res: dict = {
        "d_in": cfg.d_in, "latents": cfg.latents, "k": cfg.k, "batch": cfg.batch,
        "steps": cfg.steps, "warmup": cfg.warmup, "threads": threads, "seed": cfg.seed,
        "decoder_norm": cfg.decoder_norm, "peak_gflops": cfg.peak_gflops,
        "encoder_flop_per_token": flop_per_token, "cpus": os.cpu_count(), "cpu": cpu_model(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0), "load_avg_before": os.getloadavg()[0],
    }

    peer_rows: list[dict] = []
    if not cfg.skip_peer:
        import torch

        kind, why_not = choose_peer(cfg.peer, cfg)
        res["peer"] = kind
        res["torch"] = torch.__version__
        if kind == "sparsify":
            res["sparsify"] = sparsify_version()
        if why_not:
            res["sparsify_error"] = why_not
        for t in threads:
            common.log(f"peer ({kind}), torch.set_num_threads({t}) ...")
            if cfg.boost:
                gate.hold_free_cores(t)
            try:
                peer_rows.append(bench_peer(kind, t, cfg, gate))
            finally:
                gate.release()
            r = peer_rows[-1]
            common.log(f"  {r['tok_s']:.0f} tok/s ({r['seconds']:.2f} s for {cfg.steps} steps; "
                       f"FVU {r['fvu_first']:.4f} -> {r['fvu_last']:.4f}; others used "
                       f"{r['other_cores'] or 0:.2f} cores)")
        res["peer_runs"] = peer_rows
        res["peer_best"] = best(peer_rows)

    ours: list[dict] = []
    if cfg.skip_lantern:
        res["lantern_error"] = "skipped (--skip-lantern)"
    elif not common.lantern_available(binary):
        res["lantern_error"] = f"lantern binary missing at {binary} (cargo build --release)"
        common.log(res["lantern_error"])
    else:
        for t in threads:
            common.log(f"lantern, RAYON_NUM_THREADS={t} ...")
            if cfg.boost:
                gate.hold_free_cores(t)
            try:
                ours.append(bench_lantern(binary, t, cfg, gate))
            except Exception as e:  # noqa: BLE001 -- report it and keep the peer's figures
                common.log(f"`lantern sae bench` failed: {e}")
                res["lantern_error"] = f"`lantern sae bench` failed: {summarize_error(e)}"
                break
            finally:
                gate.release()
    if ours:
        res["lantern_runs"] = ours
        res["lantern_best"] = best(ours)
    for key in ("peer_best", "lantern_best"):
        if key in res:
            res[key]["ceiling_frac"] = ceiling_frac(res[key]["tok_s"])
    if "peer_best" in res and "lantern_best" in res:
        res["ratio"] = res["lantern_best"]["tok_s"] / res["peer_best"]["tok_s"]
    res["load_avg_after"] = os.getloadavg()[0]

    if cfg.json:
        print(json.dumps(res))
        return 0

    peer_name = {"sparsify": f"sparsify {res.get('sparsify') or ''}".strip(),
                 "minimal": "minimal torch SAE"}.get(res.get("peer", ""), "peer")
    print(f"TopK SAE training step: d_in {cfg.d_in}, {cfg.latents} latents, k {cfg.k}, batch "
          f"{cfg.batch}, {cfg.steps} timed steps; {res['cpus']} CPUs; ceiling = encoder matmul "
          f"({flop_per_token / 1e6:.2f} MFLOP/token) at {cfg.peak_gflops:g} GFLOP/s; "
          f"load average {res['load_avg_before']:.2f} before, {res['load_avg_after']:.2f} after")
    print(f"cpu: {res['cpu']}")
    if "peer" in res:
        print(f"peer: {peer_name} on torch {res['torch']}"
              + (f" (sparsify did not run: {res['sparsify_error']})" if "sparsify_error" in res
                 else ""))
    print(f"{'side':24s} {'threads':>7s} {'tok/s':>10s} {'% ceiling':>10s} {'others':>7s}")
    for name, rows in ((peer_name, peer_rows), ("lantern", ours)):
        for r in rows:
            other = "-" if r["other_cores"] is None else f"{r['other_cores']:.2f}"
            print(f"{name:24s} {r['threads']:7d} {r['tok_s']:10.0f} "
                  f"{100 * ceiling_frac(r['tok_s']):9.1f}% {other:>7s}")
    print("(others: cores used by other processes during the timed run)")
    if "ratio" in res:
        print(f"lantern / peer: {res['ratio']:.2f}x "
              f"(best of threads {cfg.threads} each: {res['lantern_best']['tok_s']:.0f} vs "
              f"{res['peer_best']['tok_s']:.0f} tok/s)")
    if "lantern_error" in res:
        print(f"lantern: {res['lantern_error']}"
              + (" -- only the peer's figures above" if peer_rows else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
