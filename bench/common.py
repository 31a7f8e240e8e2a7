"""Shared helpers for the llama.cpp comparison scripts in bench/.

Everything here runs inside bench/.venv (see setup_venv.sh): numpy + llama-cpp-python.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LANTERN = REPO / "target" / "release" / "lantern"
OUT_DIR = REPO / "bench" / "out"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_json_stdout(text: str) -> dict:
    """The contract is one JSON object on stdout; tolerate stray lines before it."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON object on stdout: {text[:500]!r}")


def run_lantern(binary: Path, args: list[str], env: dict | None = None) -> dict:
    cmd = [str(binary), *args]
    log("+", " ".join(c if len(c) <= 80 else repr(c[:60] + "...") for c in cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return parse_json_stdout(proc.stdout)


def lantern_available(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


def lantern_asset_path(binary: Path, name: str) -> Path | None:
    """`lantern assets path NAME` prints the cached path (fetching on first use)."""
    if not lantern_available(binary):
        return None
    proc = subprocess.run(
        [str(binary), "assets", "path", name], capture_output=True, text=True
    )
    if proc.returncode != 0:
        log(f"`lantern assets path {name}` failed: {proc.stderr.strip()[-300:]}")
        return None
    out = proc.stdout.strip()
    if out.startswith("{"):
        try:
            obj = parse_json_stdout(out)
            out = obj.get("path") or obj["assets"][0]["path"]
        except Exception:
            return None
    out = out.splitlines()[-1].strip() if out else ""
    return Path(out) if out else None


def resolve_model(arg: str | None, binary: Path) -> Path:
    if arg:
        p = Path(arg)
        if not p.is_file():
            sys.exit(f"--model {arg}: no such file")
        return p
    p = lantern_asset_path(binary, "smollm2-135m")
    if p is None or not p.is_file():
        sys.exit(
            "no model: pass --model PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf "
            "(`lantern assets path smollm2-135m` is not available)"
        )
    return p


def resolve_text_file(arg: str | None, binary: Path, year: str = "2021") -> Path:
    if arg:
        p = Path(arg)
        if not p.is_file():
            sys.exit(f"--text-file {arg}: no such file")
        return p
    folder = lantern_asset_path(binary, "sotu")
    if folder is None or not folder.exists():
        sys.exit(
            "no text: pass --text-file PATH (e.g. a SOTU speech .txt); "
            "`lantern assets path sotu` is not available"
        )
    if folder.is_file():
        return folder
    hits = sorted(glob.glob(str(folder / "**" / f"{year}_*.txt"), recursive=True))
    if not hits:
        sys.exit(f"no {year}_*.txt under {folder}")
    return Path(hits[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def llama_cpp_versions() -> dict:
    import llama_cpp

    info = {"llama_cpp_python": llama_cpp.__version__}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception:
        pass
    commit = _vendored_llama_cpp_commit()
    if commit:
        info["llama_cpp_commit"] = commit
    return info


def _vendored_llama_cpp_commit() -> str | None:
    """setup_venv.sh records the ggml commit it saw in the build log."""
    stamp = REPO / "bench" / ".venv" / "llama_cpp_commit.txt"
    if stamp.is_file():
        return stamp.read_text().strip() or None
    return None


def load_llama(model: Path, *, n_ctx: int, n_threads: int, logits_all: bool, n_batch: int = 512):
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(model),
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        logits_all=logits_all,
        n_gpu_layers=0,
        verbose=False,
    )


def tokenize(llm, text: str) -> list[int]:
    # No BOS: SmolLM2's GGUF says tokenizer.ggml.add_bos_token = false, and `lantern lm tokenize`
    # adds none unless --bos. special=False: the speech is plain text.
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def autogroup() -> str | None:
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return None


def boost_priority() -> None:
    """Take the CPU from other sessions' processes while this one measures (root only).

    Linux with sched_autogroup shares the CPU between sessions first and applies nice only inside
    a session, so nice alone does not beat another session's cargo build: start a session (and so
    an autogroup) of our own and give that autogroup nice -20. Threads and child processes started
    afterwards (llama.cpp's OpenMP threads, `lantern lm bench`) inherit both.
    """
    try:
        os.setsid()
    except OSError:
        pass  # already a session/process-group leader
    try:
        Path("/proc/self/autogroup").write_text("-20")
    except OSError as e:
        log(f"could not renice the autogroup: {e}")
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
    except OSError as e:
        log(f"could not renice: {e}")
    log(f"priority: nice {os.getpriority(os.PRIO_PROCESS, 0)}, {autogroup()}")


class IdleGate:
    """Keeps other processes' CPU use out of timings on a shared machine.

    The CPU time used by everything else = the machine's busy time (/proc/stat) minus this
    process's and its waited-for children's CPU time (os.times). `wait()` blocks until others used
    less than `max_other` cores over a short window; `measure(fn)` runs fn and says whether others
    stayed under `max_other` cores during it.
    """

    def __init__(self, max_other: float = 0.05, timeout: float = 600.0, enabled: bool = True):
        self.max_other = max_other
        self.timeout = timeout
        self.enabled = enabled and os.path.exists("/proc/stat")
        self.hz = os.sysconf("SC_CLK_TCK") if self.enabled else 100
        self.discarded = 0
        self.timed_out = 0
        self.holders: list = []  # our spinning processes that keep the cores a run leaves free

    def _snap(self):
        import time

        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(v[:8]) - v[3] - v[4]) / self.hz  # all but idle and iowait; no guest double count
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for p in self.holders:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                own += (int(fields[11]) + int(fields[12])) / self.hz  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return time.perf_counter(), busy, own

    @staticmethod
    def _other(a, b) -> float:
        wall = max(b[0] - a[0], 1e-9)
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / wall

    def allowance(self, threads: int) -> float:
        """Cores others may use: the ones this run leaves free, plus max_other."""
        return max(0, (os.cpu_count() or 1) - threads - len(self.holders)) + self.max_other

    def hold_free_cores(self, threads: int) -> None:
        """Start one spinning process per core a `threads`-thread run leaves free, so that other
        sessions' work (a compiler: caches, memory bandwidth) cannot run there during the run. A
        pure-Python busy loop touches next to no memory. Call release() afterwards."""
        self.release()
        n = max(0, (os.cpu_count() or 1) - threads)
        # The spinner stops by itself when this process dies (its parent changes).
        spin = ("import os\np = os.getppid()\nwhile os.getppid() == p:\n"
                "    for _ in range(100000):\n        pass\n")
        self.holders = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]

    def release(self) -> None:
        for p in self.holders:
            p.kill()
            p.wait()
        self.holders = []

    def wait(self, threads: int, window: float = 1.0) -> None:
        if not self.enabled:
            return
        import time

        start = time.perf_counter()
        while True:
            a = self._snap()
            time.sleep(window)
            if self._other(a, self._snap()) < self.allowance(threads):
                return
            if time.perf_counter() - start > self.timeout:
                self.timed_out += 1
                log(f"machine not idle after {self.timeout:.0f}s; measuring anyway")
                return

    def measure(self, fn, threads: int, slack: float = 0.0):
        """Returns (fn's result, others' cores during it, clean)."""
        if not self.enabled:
            return fn(), None, True
        if os.getpriority(os.PRIO_PROCESS, 0) >= 0:  # boosted runs preempt the others instead
            self.wait(threads)
        a = self._snap()
        out = fn()
        other = self._other(a, self._snap())
        clean = other < self.allowance(threads) + slack
        if not clean:
            self.discarded += 1
        return out, other, clean

    def repeat(self, fn, n: int, threads: int, max_tries: int | None = None, slack: float = 0.0):
        """n results of fn (a run on `threads` threads) measured while the other processes left
        it alone (or the last tries, if that never happened), and the cores others used during
        each kept run."""
        max_tries = max_tries or 4 * n
        good, tries = [], []
        for _ in range(max_tries):
            out, other, clean = self.measure(fn, threads, slack)
            tries.append((out, other))
            if clean:
                good.append((out, other))
                if len(good) == n:
                    break
            else:
                log(f"  discarded a run: other processes used {other:.2f} cores during it "
                    f"(allowed {self.allowance(threads) + slack:.2f})")
        else:
            log(f"only {len(good)} clean runs of {n} in {max_tries} tries; keeping the last "
                "tries too")
            good = (good + tries[-(n - len(good)):]) if good else tries[-n:]
        return [g[0] for g in good], [g[1] for g in good]


def ensure_venv(venv: Path, modules: list[str], packages: list[str], script: str) -> None:
    """Re-executes `script` inside `venv` (created on first use, `packages` pip-installed there)
    unless every module of `modules` already imports. Bench scripts only; never tests or CI."""
    import importlib

    try:
        for m in modules:
            importlib.import_module(m)
        return
    except ImportError:
        pass
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        sys.exit(f"{', '.join(modules)} missing from {venv}; delete the folder and rerun")
    if not py.exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(py), "-c", "import " + ", ".join(modules)], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)
    os.execv(str(py), [str(py), script, *sys.argv[1:]])


TORCH_VENV = REPO / "bench" / ".venv-torch"


def ensure_torch(script: Path) -> None:
    """Re-execute `script` with bench/.venv-torch's python when this one cannot import torch;
    exit with a clear message when that venv cannot either."""
    try:
        import torch  # noqa: F401

        return
    except ImportError:
        pass
    venv_python = TORCH_VENV / "bin" / "python"
    # The venv's python is a symlink to the system one: compare prefixes, not resolved paths.
    in_venv = Path(sys.prefix).resolve() == TORCH_VENV.resolve()
    if venv_python.exists() and not in_venv and not os.environ.get("LANTERN_BENCH_REEXEC"):
        log(f"no torch in {sys.executable}; re-running with {venv_python}")
        os.environ["LANTERN_BENCH_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), str(script.resolve()), *sys.argv[1:]])
    state = "exists" if venv_python.exists() else "missing"
    sys.exit(f"PyTorch is not importable in {sys.executable} (bench/.venv-torch: {state}): run "
             f"`bash bench/setup_torch_venv.sh`, then `bench/.venv-torch/bin/python "
             f"bench/{script.name} ...`")
