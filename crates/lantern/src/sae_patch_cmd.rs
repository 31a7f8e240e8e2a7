//! `lantern sae patch`: feature patching on indirect object identification, SAE latents against
//! neuron, PCA and random bases.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use lantern_lm::runtime;
use lantern_sae::basis::Basis;
use lantern_sae::corpus::Corpus;
use lantern_sae::patch::{ioi_pairs, Ioi, PatchConfig, PatchCurve};
use lantern_sae::plot::{line_chart, Series};
use lantern_sae::sae::write_atomic;
use lantern_sae::source::{kept_activations, windows};
use serde_json::json;

use crate::output::print;
use crate::sae_cmd::SavedSae;

#[derive(Args)]
pub struct PatchArgs {
    /// The SAE (its hook point is the one studied) and the model.
    #[command(flatten)]
    saved: SavedSae,
    /// IOI prompt pairs.
    #[arg(long, default_value_t = 16)]
    prompts: usize,
    /// Directions with the largest coefficient change whose single patch is measured.
    #[arg(long, default_value_t = 96)]
    candidates: usize,
    /// Strongest single patches the greedy search draws from.
    #[arg(long, default_value_t = 24)]
    pool: usize,
    /// Directions the greedy search adds.
    #[arg(long, default_value_t = 12)]
    steps: usize,
    /// Baselines searched the same way (neurons, pca, random); empty for none.
    #[arg(long, value_delimiter = ',', default_value = "neurons,pca,random")]
    baselines: Vec<String>,
    /// Corpus whose activations the PCA baseline is fitted to.
    #[arg(long, default_value = "sotu")]
    pca_corpus: String,
    /// Activation rows the PCA is fitted to.
    #[arg(long, default_value_t = 8192)]
    pca_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for patch.json and patch.svg (default: <sae>/patch).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn patch(a: PatchArgs, json: bool) -> Result<()> {
    let t0 = Instant::now();
    let (sae, lm, point) = a.saved.load()?;
    let pairs = ioi_pairs(&lm, a.prompts, a.seed)?;
    let ioi = Ioi::new(&lm, point, pairs)?;
    if ioi.d() != sae.cfg.d_in {
        bail!(
            "{}: SAE reads width {}, but {point} of {} has width {}",
            a.saved.sae.display(),
            sae.cfg.d_in,
            a.saved.model,
            ioi.d()
        );
    }
    eprintln!(
        "IOI at {point}: {} pairs, logit diff clean {:.3}, corrupted {:.3}",
        ioi.pairs.len(),
        ioi.metric_clean,
        ioi.metric_corrupt
    );
    let cfg = PatchConfig {
        candidates: a.candidates,
        pool: a.pool,
        steps: a.steps,
    };
    let mut bases = vec![Basis::Sae(&sae)];
    for b in &a.baselines {
        bases.push(match b.as_str() {
            "neurons" => Basis::neurons(ioi.d()),
            "random" => Basis::random(ioi.d(), ioi.d(), a.seed ^ 0x5eed),
            "pca" => pca_basis(&lm, point, &a.pca_corpus, a.pca_tokens)?,
            other => bail!("--baselines: unknown basis {other:?} (neurons, pca, random)"),
        });
    }
    let mut curves = Vec::new();
    for b in &bases {
        let t = Instant::now();
        let c = ioi.search(b, &cfg)?;
        eprintln!(
            "{}: {} of {} directions change; all patched recovers {:.3}; {:.1}s",
            c.basis,
            c.changed,
            c.directions,
            c.all_recovered,
            t.elapsed().as_secs_f64()
        );
        curves.push(c);
    }
    let out = a.out.clone().unwrap_or_else(|| a.saved.sae.join("patch"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let result = json!({
        "hookpoint": point.to_string(), "prompts": ioi.pairs.len(),
        "metric_clean": ioi.metric_clean, "metric_corrupt": ioi.metric_corrupt,
        "metric_replayed": ioi.metric_replayed, "config": cfg, "curves": curves,
        "examples": ioi.pairs.iter().take(4).map(|p| p.text.clone()).collect::<Vec<_>>(),
        "seconds": t0.elapsed().as_secs_f64(),
    });
    write_atomic(
        &out.join("patch.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    write_atomic(&out.join("patch.svg"), svg(&curves).as_bytes())?;
    if !json {
        eprint!("{}", table(&curves));
    }
    let mut summary = json!({
        "hookpoint": point.to_string(), "prompts": ioi.pairs.len(),
        "metric_clean": ioi.metric_clean, "metric_corrupt": ioi.metric_corrupt,
        "out": out, "seconds": t0.elapsed().as_secs_f64(),
    });
    if json {
        summary["curves"] = serde_json::to_value(&curves)?;
    }
    print(&summary, json);
    Ok(())
}

/// PCA directions of the activations at `point` over about `tokens` rows of a corpus.
fn pca_basis(
    lm: &runtime::Lm,
    point: lantern_lm::HookPoint,
    corpus: &str,
    tokens: usize,
) -> Result<Basis<'static>> {
    let ctx = 256;
    let c = Corpus::open(corpus)?;
    let w = windows(lm, &c, ctx, 0, Some(tokens.div_ceil(ctx - 1).max(1)))?.windows;
    let (mut rows, mut width) = (Vec::new(), 0);
    for chunk in w.chunks(8) {
        let (kept, widths, _) = kept_activations(lm, chunk, &[point], false)?;
        width = widths[0];
        rows.extend(kept.into_iter().next().unwrap_or_default());
    }
    Ok(Basis::pca(&rows, width)?)
}

/// Recovered fraction against directions patched and against edit size, one line per basis.
fn svg(curves: &[PatchCurve]) -> String {
    let by_n: Vec<Series> = curves
        .iter()
        .map(|c| Series {
            name: c.basis.clone(),
            points: c.steps.iter().map(|s| (s.n as f64, s.recovered)).collect(),
        })
        .collect();
    let by_edit: Vec<Series> = curves
        .iter()
        .map(|c| Series {
            name: c.basis.clone(),
            points: c.steps.iter().map(|s| (s.edit, s.recovered)).collect(),
        })
        .collect();
    let a = line_chart(
        "IOI logit difference moved",
        "directions patched",
        "fraction recovered",
        &by_n,
    );
    let b = line_chart(
        "… against edit size",
        "edit ‖Δx‖ / ‖x_corrupt − x_clean‖",
        "fraction recovered",
        &by_edit,
    );
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="960" height="320"><g>{a}</g><g transform="translate(480,0)">{b}</g></svg>"#
    )
}

/// A text table: fraction recovered (and edit size) after n directions, per basis.
fn table(curves: &[PatchCurve]) -> String {
    let mut s = String::from("n");
    for c in curves {
        let _ = write!(s, "\t{} rec\t{} edit", c.basis, c.basis);
    }
    s.push('\n');
    let rows = curves.iter().map(|c| c.steps.len()).max().unwrap_or(0);
    for i in 0..rows {
        let _ = write!(s, "{i}");
        for c in curves {
            match c.steps.get(i) {
                Some(st) => {
                    let _ = write!(s, "\t{:.3}\t{:.3}", st.recovered, st.edit);
                }
                None => s.push_str("\t-\t-"),
            }
        }
        s.push('\n');
    }
    let _ = write!(s, "all");
    for c in curves {
        let _ = write!(s, "\t{:.3}\t{:.3}", c.all_recovered, c.all_edit);
    }
    s.push('\n');
    s
}
