//! `lantern lm ...`: inspect and run a language model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use lantern_lm::hooks::HookPoint;
use lantern_lm::model::{KvCache, LogitsFor, WeightMode};
use lantern_lm::runtime::{self, Lm, Sampling, DEFAULT_MODEL};
use serde_json::json;

use crate::output::{print, write_atomic};

/// Weight precision at load.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    /// Keep quantized blocks for matrix-vector kernels (fastest).
    Auto,
    /// Every weight an f32 variable (gradients flow).
    F32,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Asset name (smollm2-135m), a .gguf file, or a Hugging Face folder.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Weight precision.
    #[arg(long, value_enum, default_value = "auto")]
    dtype: DtypeArg,
}

impl ModelArgs {
    fn load(&self) -> Result<Lm> {
        let mode = match self.dtype {
            DtypeArg::Auto => WeightMode::Inference,
            DtypeArg::F32 => WeightMode::Trainable,
        };
        runtime::load(&self.model, mode).with_context(|| format!("loading model {}", self.model))
    }
}

#[derive(Subcommand)]
pub enum LmCmd {
    /// Architecture, sizes and hook points.
    Info(ModelArgs),
    /// Token ids of a text (no BOS unless --bos).
    Tokenize {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long)]
        text: String,
        #[arg(long)]
        bos: bool,
        /// Treat the text as a user message and apply the model's chat template.
        #[arg(long)]
        chat: bool,
    },
    /// Raw logits for the ids in a JSON list file, as little-endian f32 [n_tokens, vocab].
    Logits {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long)]
        ids_file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Mean next-token cross-entropy of a text file.
    Perplexity {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long)]
        text_file: PathBuf,
        /// Window length in tokens (each window scored on its own).
        #[arg(long, default_value_t = 2048)]
        ctx_len: usize,
        /// Score at most this many tokens.
        #[arg(long)]
        max_tokens: Option<usize>,
    },
    /// Generate text after a prompt.
    Generate(GenerateArgs),
    /// Prompt-processing and generation throughput.
    Bench {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long, default_value_t = 512)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Repetitions of the prompt pass (median reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Serve the model as an OpenAI-compatible chat endpoint (POST /v1/chat/completions).
    Serve {
        #[command(flatten)]
        m: ModelArgs,
        /// Address to listen on (loopback by default: there is no authentication).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[arg(long, default_value = "Once upon a time")]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
}

/// Runs an `lm` subcommand.
pub fn run(cmd: LmCmd, json: bool) -> Result<()> {
    match cmd {
        LmCmd::Info(m) => info(&m, json),
        LmCmd::Serve { m, host, port } => serve(&m, &host, port, json),
        LmCmd::Tokenize { m, text, bos, chat } => tokenize(&m, &text, bos, chat, json),
        LmCmd::Logits { m, ids_file, out } => logits(&m, &ids_file, &out, json),
        LmCmd::Perplexity {
            m,
            text_file,
            ctx_len,
            max_tokens,
        } => perplexity(&m, &text_file, ctx_len, max_tokens, json),
        LmCmd::Generate(g) => generate(&g, json),
        LmCmd::Bench {
            m,
            prompt_tokens,
            gen_tokens,
            reps,
        } => bench(&m, prompt_tokens, gen_tokens, reps, json),
    }
}

fn info(m: &ModelArgs, json: bool) -> Result<()> {
    let lm = m.load()?;
    let c = &lm.model.cfg;
    let hooks: Vec<String> = HookPoint::all(c.n_layers)
        .iter()
        .map(|p| p.to_string())
        .collect();
    let v = json!({
        "path": lm.path,
        "arch": c.arch.name(),
        "n_layers": c.n_layers,
        "d_model": c.d_model,
        "n_heads": c.n_heads,
        "n_kv_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "d_ff": c.d_ff,
        "vocab_size": c.vocab_size,
        "ctx_len": c.ctx_len,
        "rope_base": c.rope_base,
        "rope_dims": c.rope_dims,
        "tied_embeddings": c.tied_embeddings,
        "parallel_residual": c.parallel_residual,
        "hook_points": if json { json!(hooks) } else { json!(format!("{} points: embed, blocks.{{0..{}}}.{{resid_pre,attn_out,resid_mid,mlp_act,mlp_out,resid_post}}, final_norm, logits", hooks.len(), c.n_layers - 1)) },
    });
    print(&v, json);
    Ok(())
}

fn encode_prompt(lm: &Lm, text: &str, bos: bool, chat: bool) -> Result<Vec<u32>> {
    let text = if chat {
        lm.tokenizer
            .apply_chat_template(&[("user".to_string(), text.to_string())], true)?
    } else {
        text.to_string()
    };
    Ok(lm.tokenizer.encode(&text, bos)?)
}

fn tokenize(m: &ModelArgs, text: &str, bos: bool, chat: bool, json: bool) -> Result<()> {
    let lm = m.load()?;
    let ids = encode_prompt(&lm, text, bos, chat)?;
    if json {
        print(&json!({ "ids": ids }), true);
    } else {
        for id in &ids {
            let piece = String::from_utf8_lossy(&lm.tokenizer.token_to_piece(*id)).into_owned();
            println!("{id}\t{piece:?}");
        }
    }
    Ok(())
}

fn read_ids(path: &Path) -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON list of token ids", path.display()))
}

fn logits(m: &ModelArgs, ids_file: &Path, out: &Path, json: bool) -> Result<()> {
    let lm = m.load()?;
    let ids = read_ids(ids_file)?;
    let l = runtime::logits(&lm.model, &ids)?;
    let ce = runtime::token_ce(&l, &ids)?;
    let flat = l.flatten_all()?.to_vec1::<f32>()?;
    let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_atomic(out, &bytes)?;
    let mean_ce = if ce.is_empty() {
        f64::NAN
    } else {
        ce.iter().sum::<f64>() / ce.len() as f64
    };
    print(
        &json!({
            "n_tokens": ids.len(),
            "vocab_size": lm.model.cfg.vocab_size,
            "mean_ce": mean_ce,
            "out": out,
        }),
        json,
    );
    Ok(())
}

fn perplexity(
    m: &ModelArgs,
    file: &Path,
    ctx_len: usize,
    max: Option<usize>,
    json: bool,
) -> Result<()> {
    let lm = m.load()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut ids = lm.tokenizer.encode(&text, false)?;
    if let Some(max) = max {
        ids.truncate(max);
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tokens {per_sec} eta {eta}")
            .expect("static template"),
    );
    let p = runtime::perplexity(&lm.model, &ids, ctx_len, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    print(
        &json!({ "tokens": p.tokens, "mean_ce": p.mean_ce, "perplexity": p.mean_ce.exp() }),
        json,
    );
    Ok(())
}

fn generate(g: &GenerateArgs, json: bool) -> Result<()> {
    let lm = g.m.load()?;
    let prompt = encode_prompt(&lm, &g.prompt, false, g.chat)?;
    let s = Sampling {
        temperature: g.temperature,
        top_p: g.top_p,
        seed: g.seed,
        max_tokens: g.max_tokens,
        stop_ids: lm.tokenizer.eos_ids(),
    };
    let mut stdout = std::io::stdout();
    if !json {
        // A chat reply starts on its own line; a plain continuation follows the prompt directly.
        let sep = if g.chat { "\n" } else { "" };
        print!("{}{sep}", g.prompt);
    }
    let mut pending = Vec::new();
    let gen = runtime::generate(&lm.model, &prompt, &s, |id| {
        if !json && !s.stop_ids.contains(&id) {
            // Print whole UTF-8 characters only: a token may end mid-character.
            pending.extend(lm.tokenizer.token_to_piece(id));
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) => e.valid_up_to(),
            };
            let _ = stdout.write_all(&pending[..valid]);
            let _ = stdout.flush();
            pending.drain(..valid);
        }
    })?;
    let visible = gen.visible(&s.stop_ids);
    let text = lm.tokenizer.decode(&visible)?;
    if json {
        print(
            &json!({ "text": text, "tokens": gen.ids.len(), "tok_s": gen.tok_s(), "prompt_tok_s": gen.prompt_tok_s() }),
            true,
        );
    } else {
        println!();
        eprintln!("{} tokens, {:.1} tok/s", gen.ids.len(), gen.tok_s());
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(
    m: &ModelArgs,
    prompt_tokens: usize,
    gen_tokens: usize,
    reps: usize,
    json: bool,
) -> Result<()> {
    let lm = m.load()?;
    let model = &lm.model;
    if prompt_tokens == 0 || prompt_tokens + gen_tokens > model.cfg.ctx_len {
        bail!(
            "prompt + generated tokens must be between 1 and the context ({})",
            model.cfg.ctx_len
        );
    }
    // A real text, repeated as needed, so the prompt is not a degenerate token run.
    let text = include_str!("bench_prompt.txt");
    let mut ids = lm.tokenizer.encode(text, false)?;
    while ids.len() < prompt_tokens {
        ids.extend_from_within(..);
    }
    ids.truncate(prompt_tokens);
    let t = candle_core::Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
    let mut times = Vec::new();
    for _ in 0..reps.max(1) + 1 {
        let mut cache = KvCache::new(&model.cfg, prompt_tokens + gen_tokens);
        let start = Instant::now();
        model.forward(
            &t,
            Some(&mut cache),
            &mut lantern_lm::hooks::Hooks::new(),
            LogitsFor::Last,
        )?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.remove(0); // warm-up
    let prompt_tok_s = prompt_tokens as f64 / median(times);
    let s = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_tokens: gen_tokens,
        stop_ids: vec![],
    };
    let gen = runtime::generate(model, &ids, &s, |_| {})?;
    print(
        &json!({
            "prompt_tokens": prompt_tokens,
            "gen_tokens": gen.ids.len(),
            "prompt_tok_s": prompt_tok_s,
            "gen_tok_s": gen.tok_s(),
            "threads": candle_core::utils::get_num_threads(),
        }),
        json,
    );
    Ok(())
}

fn serve(m: &ModelArgs, host: &str, port: u16, json: bool) -> Result<()> {
    let lm = m.load()?;
    let server = lantern_chat::server::Server::bind(lm, &m.model, &format!("{host}:{port}"))
        .with_context(|| format!("listening on {host}:{port}"))?;
    eprintln!("serving {} at {} (Ctrl-C stops)", m.model, server.url());
    print(&json!({ "url": server.url(), "model": m.model }), json);
    std::io::stdout().flush()?;
    server.run()?;
    Ok(())
}
