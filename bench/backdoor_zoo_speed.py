#!/usr/bin/env python3
"""Backdoor-zoo training throughput: `lantern backdoor zoo` against a per-model PyTorch loop.

Both sides train the same small CNN with the same recipe on the same Fashion-MNIST subset, on
this CPU, in one run, and report models per hour (models trained, evaluated and saved per hour of
wall time).

CNN (crates/lantern-backdoor/src/cnn.rs): 1x28x28 input, 3 blocks of widths W, 2W, 4W (--width W,
default 8), each conv3x3(pad 1) -> LayerNorm -> ReLU -> conv3x3(pad 1) -> maxpool 2x2 ->
LayerNorm -> ReLU; global max-pool over H x W; Linear(4W, 10). The LayerNorms normalise over the
whole (C, H, W) of a sample (eps 1e-5) with a per-channel affine gamma/beta of size C.
Recipe (zoo.rs `Recipe`): AdamW betas (0.9, 0.999), eps 1e-8, weight decay 1e-3 on every tensor;
triangle LR schedule per step peaking at 0.01 half way; global grad-norm clip 5; every training
image shifted by up to 2 pixels in each direction with zero padding (drawn per image per step);
mean cross-entropy; epochs x ceil(train_subset / batch) steps over reshuffled epochs (the last
batch of an epoch smaller). Half the models are poisoned: 10% of the training subset (non-target
images) stamped with a trigger and relabelled to the model's target. Each model then gets its
clean accuracy on the test subset and its ASR on the test-subset images not of the target class,
stamped with the trigger, and is saved.

lantern: `lantern backdoor zoo --models N --out DIR --width W --epochs E --train-subset T
  --test-subset S --batch B --families corner,noise --poisoned-frac 0.5 --poison-rate 0.1
  --seed SEED --json` into a fresh DIR; models in parallel on rayon's pool (all cores). Its
  figure uses the `seconds` it reports (from the command's start: loading Fashion-MNIST
  included).
torch: the same CNN as an nn.Module (PyTorch default init, which is the same uniform(+-1/sqrt
  (fan_in)) as ours), torch.optim.AdamW, torch.nn.utils.clip_grad_norm_, models one after
  another in this process with torch.set_num_threads(os.cpu_count()) (--torch-threads), reading
  the same IDX files (found with `lantern assets list --json`, or --data DIR). Poisoned models
  use a corner patch (lantern cycles corner and noise: the same amount of work, not the same
  pixels). Timed from the data in memory to the last model saved (safetensors, else
  torch.save); --torch-models M trains only the first M and computes models/hour from those.

Run: bash bench/setup_torch_venv.sh   (once)
     bench/.venv-torch/bin/python bench/backdoor_zoo_speed.py [--boost] [--json]
(started with another python that lacks torch, the script re-executes itself with
bench/.venv-torch/bin/python when that exists)
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TORCH_VENV = common.TORCH_VENV
DEFAULT_WORKDIR = common.OUT_DIR / "backdoor_zoo_speed"

# Fixed parts of the recipe (zoo.rs, cnn/optim.rs, cnn/forward.rs, backdoor_cmd.rs defaults).
PEAK_LR = 0.01
WEIGHT_DECAY = 1e-3
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
CLIP = 5.0
LN_EPS = 1e-5
MAX_SHIFT = 2
TRIANGLE_PEAK_FRACTION = 0.5
BLOCKS = 3
CLASSES = 10
POISONED_FRAC = 0.5
POISON_RATE = 0.1
FAMILIES = "corner,noise"
PATCH = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]  # triggers.rs PATCH, bottom-right
EVAL_CHUNK = 512




# --------------------------------------------------------------------------------------------
# Data: the same IDX files lantern reads


def read_idx(path: Path):
    """An IDX file (gzip or plain) as a uint8 numpy array of its declared shape."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path}: {data.size} values, header says {dims}")
    return data.reshape(dims)


def fashion_mnist_dir(arg: str | None, binary: Path) -> Path:
    if arg:
        return Path(arg)
    if common.lantern_available(binary):
        proc = subprocess.run([str(binary), "assets", "list", "--json"], capture_output=True,
                              text=True)
        if proc.returncode == 0:
            for a in common.parse_json_stdout(proc.stdout).get("assets", []):
                if a.get("name") == "fashion-mnist" and a.get("path"):
                    return Path(a["path"])
        common.log(f"`lantern assets list --json` failed: {proc.stderr.strip()[-300:]}")
    sys.exit("no Fashion-MNIST: pass --data DIR (the folder of train-images-idx3-ubyte.gz etc.); "
             "`lantern assets list --json` did not name the fashion-mnist asset")


def load_fashion(folder: Path, train_subset: int, test_subset: int):
    """(x_train, y_train, x_test, y_test): float32 [N,1,28,28] in [0,1] (p / 255) and int64."""
    import torch

    def part(prefix: str, n: int):
        files = [folder / f"{prefix}-{k}-ubyte{ext}" for k in ("images-idx3", "labels-idx1")
                 for ext in (".gz", "")]
        img = next((p for p in files[:2] if p.is_file()), None)
        lab = next((p for p in files[2:] if p.is_file()), None)
        if img is None or lab is None:
            sys.exit(f"{folder}: no {prefix}-images-idx3-ubyte(.gz) or "
                     f"{prefix}-labels-idx1-ubyte(.gz)")
        x = read_idx(img)[:n]
        y = read_idx(lab)[:n]
        x = torch.from_numpy(x.astype("float32") / 255.0).unsqueeze(1).contiguous()
        return x, torch.from_numpy(y.astype("int64"))

    return (*part("train", train_subset), *part("t10k", test_subset))


# --------------------------------------------------------------------------------------------
# The PyTorch side


def build_model(width: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ChannelAffineLayerNorm(nn.Module):
        """LayerNorm over (C, H, W) without affine, then gamma[c] * x + beta[c]."""

        def __init__(self, c: int):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(c))
            self.bias = nn.Parameter(torch.zeros(c))

        def forward(self, x):
            x = F.layer_norm(x, x.shape[1:], eps=LN_EPS)
            return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    class Block(nn.Module):
        def __init__(self, c_in: int, w: int):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, w, 3, padding=1)
            self.ln1 = ChannelAffineLayerNorm(w)
            self.conv2 = nn.Conv2d(w, w, 3, padding=1)
            self.ln2 = ChannelAffineLayerNorm(w)

        def forward(self, x):
            x = F.relu(self.ln1(self.conv1(x)))
            return F.relu(self.ln2(F.max_pool2d(self.conv2(x), 2)))

    class Cnn(nn.Module):
        # Parameter names equal lantern's safetensors names (blocks.0.conv1.weight, ..., head.bias).
        def __init__(self):
            super().__init__()
            widths = [width << b for b in range(BLOCKS)]
            self.blocks = nn.ModuleList(
                Block(1 if b == 0 else widths[b - 1], w) for b, w in enumerate(widths))
            self.head = nn.Linear(widths[-1], CLASSES)

        def forward(self, x):
            for blk in self.blocks:
                x = blk(x)
            return self.head(x.amax(dim=(2, 3)))

    return Cnn()


def triangle_lr(step: int, total: int, peak: float) -> float:
    """cnn/optim.rs triangle_lr."""
    if step >= total:
        return 0.0
    up = min(max(int(math.floor(total * TRIANGLE_PEAK_FRACTION + 0.5)), 1), total)
    if step < up:
        return peak * (step + 1) / up
    return peak * (total - step) / (total - up + 1)


def shift_batch(x, gen):
    """Each image shifted by (dy, dx) uniform in [-MAX_SHIFT, MAX_SHIFT], zero padding."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    padded = F.pad(x, (MAX_SHIFT,) * 4)
    d = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2, b), generator=gen)
    rows = torch.arange(h).view(1, h) - d[0].view(b, 1) + MAX_SHIFT  # out[y] = in[y - dy]
    cols = torch.arange(w).view(1, w) - d[1].view(b, 1) + MAX_SHIFT
    return padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(c).view(1, c, 1, 1),
                  rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def stamp_corner(x):
    import torch

    patch = torch.tensor(PATCH, dtype=x.dtype)
    x = x.clone()
    x[:, :, -3:, -3:] = patch
    return x


def predict(model, x):
    import torch

    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x.split(EVAL_CHUNK)])


def train_torch_model(i: int, poisoned: bool, data, cfg, out_dir: Path, save) -> dict:
    import numpy as np
    import torch

    x_train, y_train, x_test, y_test = data
    seed = cfg.seed * 1_000_003 + i
    rng = np.random.default_rng(seed)
    target = int(rng.integers(CLASSES))
    if poisoned:
        cand = np.flatnonzero(y_train.numpy() != target)
        k = min(int(round(POISON_RATE * len(y_train))), len(cand))
        idx = torch.from_numpy(np.sort(rng.choice(cand, size=k, replace=False)))
        x_train, y_train = x_train.clone(), y_train.clone()
        x_train[idx] = stamp_corner(x_train[idx])
        y_train[idx] = target
    torch.manual_seed(seed)
    model = build_model(cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=BETAS, eps=ADAM_EPS,
                            weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(seed)
    n = len(y_train)
    total = cfg.epochs * math.ceil(n / cfg.batch)
    step = 0
    loss = None
    for _ in range(cfg.epochs):
        for chunk in torch.randperm(n, generator=gen).split(cfg.batch):
            xb = shift_batch(x_train[chunk], gen)
            loss = torch.nn.functional.cross_entropy(model(xb), y_train[chunk])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            for g in opt.param_groups:
                g["lr"] = triangle_lr(step, total, PEAK_LR)
            opt.step()
            step += 1
    model.eval()
    clean_acc = (predict(model, x_test) == y_test).float().mean().item()
    keep = y_test != target
    asr = (predict(model, stamp_corner(x_test[keep])) == target).float().mean().item() \
        if keep.any() else 0.0
    save(model, out_dir / f"model-{i:05d}")
    return {"index": i, "poisoned": poisoned, "target": target, "steps": step,
            "last_loss": float(loss.item()) if loss is not None else None,
            "clean_acc": clean_acc, "asr": asr}


def saver():
    """Saves a state_dict with safetensors when it imports, else torch.save; and its name."""
    import torch

    try:
        from safetensors.torch import save_file

        def save(model, stem: Path):
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      str(stem) + ".safetensors")

        return save, "safetensors"
    except ImportError:
        return (lambda model, stem: torch.save(model.state_dict(), str(stem) + ".pt")), "torch.save"


def bench_torch(cfg, data, out_dir: Path, gate: common.IdleGate) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(cfg.torch_threads)
    m = cfg.torch_models
    # Which of the M models are poisoned: round(0.5 M) of them, by a seeded shuffle (as plan()).
    order = np.random.default_rng(cfg.seed).permutation(m)
    poisoned = set(order[: int(round(POISONED_FRAC * m))].tolist())
    save, save_kind = saver()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)

    def loop():
        rows = []
        t0 = time.perf_counter()
        for i in range(m):
            rows.append(train_torch_model(i, i in poisoned, data, cfg, out_dir, save))
            r = rows[-1]
            common.log(f"  torch model {i + 1}/{m} ({'poisoned' if r['poisoned'] else 'clean'}): "
                       f"clean acc {r['clean_acc']:.3f}, ASR {r['asr']:.3f}, "
                       f"{time.perf_counter() - t0:.1f} s so far")
        return rows, time.perf_counter() - t0

    (rows, seconds), other = measured(loop, gate)
    bad = [r for r in rows if r["poisoned"]]
    clean = [r for r in rows if not r["poisoned"]]
    return {
        "models": m,
        "seconds": seconds,
        "models_per_hour": m / seconds * 3600,
        "threads": torch.get_num_threads(),
        "steps_per_model": rows[0]["steps"] if rows else 0,
        "clean_acc_mean": _mean([r["clean_acc"] for r in rows]),
        "asr_mean_backdoored": _mean([r["asr"] for r in bad]),
        "asr_mean_clean": _mean([r["asr"] for r in clean]),
        "backdoored": len(bad),
        "save": save_kind,
        "other_cores": other,
        "out": str(out_dir),
    }


def measured(fn, gate: common.IdleGate):
    """fn's result and the cores other processes used while it ran (None without /proc/stat)."""
    if not gate.enabled:
        return fn(), None
    before = gate._snap()
    out = fn()
    return out, gate._other(before, gate._snap())


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


# --------------------------------------------------------------------------------------------
# lantern


def resolve_lantern(arg: str | None) -> Path:
    """--lantern, else $LANTERN_BIN, else target/release/lantern (built when missing)."""
    given = arg or os.environ.get("LANTERN_BIN")
    binary = Path(given) if given else common.DEFAULT_LANTERN
    if common.lantern_available(binary):
        return binary
    if given:
        sys.exit(f"lantern binary missing at {binary}")
    common.log(f"{binary} missing; running `cargo build --release -p lantern`")
    proc = subprocess.run(["cargo", "build", "--release", "-p", "lantern"], cwd=common.REPO)
    if proc.returncode != 0 or not common.lantern_available(binary):
        sys.exit(f"could not build {binary} (`cargo build --release -p lantern` failed)")
    return binary


def bench_lantern(binary: Path, cfg, out_dir: Path, gate: common.IdleGate) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)  # the zoo resumes from an existing index
    args = ["backdoor", "zoo", "--dataset", "fashion-mnist", "--models", str(cfg.models),
            "--out", str(out_dir), "--width", str(cfg.width), "--blocks", str(BLOCKS),
            "--epochs", str(cfg.epochs), "--train-subset", str(cfg.train_subset),
            "--test-subset", str(cfg.test_subset), "--batch", str(cfg.batch),
            "--families", FAMILIES, "--poisoned-frac", str(POISONED_FRAC),
            "--poison-rate", str(POISON_RATE), "--seed", str(cfg.seed), "--json"]
    t0 = time.perf_counter()
    out, other = measured(lambda: common.run_lantern(binary, args), gate)
    wall = time.perf_counter() - t0
    if "seconds" not in out or "models" not in out:
        raise RuntimeError(f"`lantern backdoor zoo` printed no seconds/models: "
                           f"{json.dumps(out)[:300]}")
    seconds = float(out["seconds"])
    return {
        "models": int(out["models"]),
        "seconds": seconds,
        "wall_seconds": wall,
        "models_per_hour": int(out["models"]) / seconds * 3600,
        "clean_acc_mean": out.get("clean_acc_mean"),
        "asr_mean_backdoored": out.get("asr_mean_backdoored"),
        "asr_mean_clean": out.get("asr_mean_clean"),
        "backdoored": out.get("backdoored"),
        "backdoor_took": out.get("backdoor_took"),
        "rayon_threads": os.environ.get("RAYON_NUM_THREADS") or os.cpu_count(),
        "other_cores": other,
        "out": str(out_dir),
    }


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=8, help="models in lantern's zoo")
    ap.add_argument("--torch-models", type=int, default=None,
                    help="models the torch loop trains (default: --models); models/hour is "
                         "computed from those that ran")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads for the torch loop (default: all cores, as "
                         "lantern's rayon pool)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=2500, help="first N training images")
    ap.add_argument("--test-subset", type=int, default=1000, help="first N test images")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=8, help="first block's channels (then 2x, 4x)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default=None,
                    help="folder of the Fashion-MNIST IDX files (default: the fashion-mnist "
                         "asset, from `lantern assets list --json`)")
    ap.add_argument("--lantern", default=None,
                    help="lantern binary (default: $LANTERN_BIN, else target/release/lantern, "
                         "built with `cargo build --release -p lantern` when missing)")
    ap.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                    help="where both zoos are written (lantern/ and torch/, emptied first)")
    ap.add_argument("--skip-lantern", action="store_true", help="only run the PyTorch side")
    ap.add_argument("--skip-torch", action="store_true", help="only run lantern")
    ap.add_argument("--boost", action="store_true",
                    help="(root) as in llamacpp_speed.py: a scheduler autogroup of our own at "
                         "nice -20 (the script leaves the terminal's session; stop it with kill)")
    ap.add_argument("--json", action="store_true", help="print only the JSON object on stdout")
    cfg = ap.parse_args()
    if cfg.torch_models is None:
        cfg.torch_models = cfg.models
    for name in ("models", "torch_models", "torch_threads", "epochs", "train_subset",
                 "test_subset", "batch", "width"):
        if getattr(cfg, name) < 1:
            sys.exit(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.torch_models > cfg.models:
        sys.exit("--torch-models must not exceed --models")

    if not cfg.skip_torch:
        common.ensure_torch(Path(__file__))
    binary = None if cfg.skip_lantern and cfg.data else resolve_lantern(cfg.lantern)
    if cfg.boost:
        common.boost_priority()
    gate = common.IdleGate()  # only says how many cores others used during each timed run
    workdir = Path(cfg.workdir)
    steps = cfg.epochs * math.ceil(cfg.train_subset / cfg.batch)
    res: dict = {
        "models": cfg.models, "torch_models": cfg.torch_models, "epochs": cfg.epochs,
        "train_subset": cfg.train_subset, "test_subset": cfg.test_subset, "batch": cfg.batch,
        "width": cfg.width, "blocks": BLOCKS, "seed": cfg.seed, "steps_per_model": steps,
        "poisoned_frac": POISONED_FRAC, "poison_rate": POISON_RATE, "cpus": os.cpu_count(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0), "load_avg_before": os.getloadavg()[0],
    }

    if not cfg.skip_lantern:
        common.log(f"lantern backdoor zoo: {cfg.models} models ...")
        res["lantern"] = bench_lantern(binary, cfg, workdir / "lantern", gate)
        r = res["lantern"]
        common.log(f"  {r['seconds']:.1f} s, {r['models_per_hour']:.0f} models/h, clean acc "
                   f"{r['clean_acc_mean']}")

    if not cfg.skip_torch:
        import torch

        res["torch_version"] = torch.__version__
        res["torch_threads"] = cfg.torch_threads
        folder = fashion_mnist_dir(cfg.data, binary)
        res["data"] = str(folder)
        t0 = time.perf_counter()
        data = load_fashion(folder, cfg.train_subset, cfg.test_subset)
        res["torch_data_load_seconds"] = time.perf_counter() - t0
        if len(data[1]) < cfg.train_subset or len(data[3]) < cfg.test_subset:
            common.log(f"note: only {len(data[1])} train / {len(data[3])} test images")
        common.log(f"torch loop: {cfg.torch_models} models, {cfg.torch_threads} threads ...")
        res["torch"] = bench_torch(cfg, data, workdir / "torch", gate)
    if "lantern" in res and "torch" in res:
        res["ratio"] = res["lantern"]["models_per_hour"] / res["torch"]["models_per_hour"]
    res["load_avg_after"] = os.getloadavg()[0]

    if not cfg.json:
        print(f"backdoor zoo: width {cfg.width} ({BLOCKS} blocks), {cfg.epochs} epochs x "
              f"ceil({cfg.train_subset}/{cfg.batch}) = {steps} steps per model, test subset "
              f"{cfg.test_subset}; {res['cpus']} CPUs; load average "
              f"{res['load_avg_before']:.2f} before, {res['load_avg_after']:.2f} after")
        print(f"{'side':26s} {'models':>6s} {'seconds':>9s} {'models/h':>9s} {'clean acc':>9s} "
              f"{'ASR bd':>7s} {'ASR clean':>9s} {'others':>6s}")
        names = (("lantern", "lantern backdoor zoo"),
                 ("torch", f"torch {res.get('torch_version', '')} loop"))
        for key, name in names:
            if key not in res:
                continue
            r = res[key]

            def f(v, fmt):
                return "-" if v is None else format(v, fmt)

            print(f"{name:26s} {r['models']:6d} {r['seconds']:9.1f} {r['models_per_hour']:9.0f} "
                  f"{f(r['clean_acc_mean'], '.3f'):>9s} {f(r['asr_mean_backdoored'], '.3f'):>7s} "
                  f"{f(r['asr_mean_clean'], '.3f'):>9s} {f(r['other_cores'], '.2f'):>6s}")
        print("(ASR bd / clean: mean ASR of the poisoned / clean models; others: cores used by "
              "other processes during the timed run)")
        if "ratio" in res:
            print(f"lantern / torch: {res['ratio']:.2f}x models per hour")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
