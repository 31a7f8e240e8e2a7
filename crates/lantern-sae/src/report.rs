//! The feature report: one static HTML file a researcher opens in a browser.
//!
//! It shows the SAE's metrics, its feature-density histogram (SVG), and for each shown latent its
//! top-activating contexts with the activating tokens highlighted, examples drawn across the
//! quantiles of its activations, and the output tokens its decoder direction promotes and
//! suppresses through the unembedding (`W_dec[j] · W_U`, the direct logit effect).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use lantern_lm::runtime::Lm;
use lantern_lm::HookPoint;

use crate::error::{Result, SaeError};
use crate::metrics::ReconMetrics;
use crate::sae::{write_atomic, Sae};
use crate::source::{keep_position, run_windows};

/// What goes into a report.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// Latents shown (the most frequently firing live ones first, then a spread of the rest).
    pub latents: usize,
    /// Top contexts per latent.
    pub top: usize,
    /// Quantile examples per latent.
    pub quantile_examples: usize,
    /// Tokens of context left and right of the activating token.
    pub left: usize,
    pub right: usize,
    /// Promoted / suppressed tokens listed.
    pub logit_tokens: usize,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            latents: 48,
            top: 8,
            quantile_examples: 4,
            left: 16,
            right: 4,
            logit_tokens: 8,
        }
    }
}

/// One firing: (activation, window, position).
type Firing = (f32, u32, u32);

/// Every firing of every latent over `windows`, and the activations at each window position.
struct Firings {
    by_latent: BTreeMap<u32, Vec<Firing>>,
    /// `[window][position] -> (latent, activation)` for highlighting.
    codes: Vec<Vec<Vec<(u32, f32)>>>,
    tokens: usize,
}

fn collect(lm: &Lm, sae: &Sae, point: HookPoint, windows: &[Vec<u32>]) -> Result<Firings> {
    let mut f = Firings {
        by_latent: BTreeMap::new(),
        codes: Vec::new(),
        tokens: 0,
    };
    for (b, batch) in windows.chunks(8).enumerate() {
        let acts = run_windows(lm, batch, &[point])?;
        let t = batch[0].len();
        let data = acts[0].flatten_all()?.to_vec1::<f32>()?;
        let codes = sae.encode(&data, false).codes;
        for (w, window) in batch.iter().enumerate() {
            let wi = (b * 8 + w) as u32;
            let mut per_pos = vec![Vec::new(); t];
            for (p, slot) in per_pos.iter_mut().enumerate() {
                if !keep_position(lm, window, p, false) {
                    continue;
                }
                f.tokens += 1;
                for (j, a) in codes.row(w * t + p) {
                    slot.push((j as u32, a));
                    f.by_latent
                        .entry(j as u32)
                        .or_default()
                        .push((a, wi, p as u32));
                }
            }
            f.codes.push(per_pos);
        }
    }
    Ok(f)
}

/// Writes the report for `sae` over `windows` to `path`.
#[allow(clippy::too_many_arguments)]
pub fn write(
    lm: &Lm,
    sae: &Sae,
    point: HookPoint,
    windows: &[Vec<u32>],
    metrics: &[(&str, String)],
    recon: Option<&ReconMetrics>,
    cfg: &ReportConfig,
    path: &Path,
) -> Result<()> {
    if windows.is_empty() {
        return Err(SaeError::Config("no windows to build a report from".into()));
    }
    let f = collect(lm, sae, point, windows)?;
    let shown = pick_latents(&f, cfg.latents);
    let unembed = lm.model.unembedding_matrix().to_vec2::<f32>()?;
    let mut html = String::new();
    header(&mut html, sae, point, metrics, &f, windows.len());
    if let Some(r) = recon {
        density_svg(&mut html, r);
    }
    for &j in &shown {
        latent_section(&mut html, lm, sae, &unembed, &f, windows, j, cfg);
    }
    html.push_str("</body></html>\n");
    write_atomic(path, html.as_bytes())
}

/// The most frequent latents first (half), then an even spread over the rest by frequency.
fn pick_latents(f: &Firings, want: usize) -> Vec<u32> {
    let mut live: Vec<(usize, u32)> = f.by_latent.iter().map(|(&j, v)| (v.len(), j)).collect();
    live.sort_by(|a, b| b.cmp(a));
    let head = want / 2;
    let mut out: Vec<u32> = live.iter().take(head).map(|&(_, j)| j).collect();
    let rest = &live[head.min(live.len())..];
    let step = (rest.len() / (want - head).max(1)).max(1);
    out.extend(rest.iter().step_by(step).take(want - head).map(|&(_, j)| j));
    out
}

/// `s` escaped for HTML and SVG text and attributes.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A token's text for display (lossy where a token ends inside a UTF-8 character).
pub fn token_text(lm: &Lm, id: u32) -> String {
    let bytes = lm.tokenizer.token_to_piece(id);
    String::from_utf8_lossy(&bytes).to_string()
}

fn header(
    html: &mut String,
    sae: &Sae,
    point: HookPoint,
    metrics: &[(&str, String)],
    f: &Firings,
    windows: usize,
) {
    let c = &sae.cfg;
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>SAE {p}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}\
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
.ctx{{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;margin:2px 0;\
padding:3px;background:#fafafa;border-left:3px solid #ddd}}\
.tok{{border-radius:2px}}.lat{{border-top:2px solid #888;margin-top:1.5em}}\
.pos{{color:#1a6}}.neg{{color:#c33}}small{{color:#666}}</style></head><body>\
<h1>Sparse autoencoder at <code>{p}</code></h1>\
<p>{kind}, {n} latents over {d} dimensions, k = {k}; model {m}. Evaluated on {t} tokens in {w} \
held-out windows.</p><table>",
        p = esc(&point.to_string()),
        kind = c.activation.name(),
        n = c.num_latents,
        d = c.d_in,
        k = c.k,
        m = esc(&c.model),
        t = f.tokens,
        w = windows,
    );
    for (k, v) in metrics {
        let _ = write!(html, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    html.push_str("</table>");
}

/// The feature-density histogram as an inline SVG bar chart.
fn density_svg(html: &mut String, r: &ReconMetrics) {
    let (w, h, pad) = (640.0, 220.0, 40.0);
    let max = r.density_hist.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bars = r.density_hist.len() as f64;
    let bw = (w - 2.0 * pad) / bars;
    let _ = write!(
        html,
        "<h2>Feature density</h2><p><small>Latents by log10 of the fraction of tokens they fire on; \
the first bar counts latents that never fired.</small></p>\
<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\">\
<line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/>",
        y0 = h - pad,
        x1 = w - pad,
    );
    for (i, &c) in r.density_hist.iter().enumerate() {
        let bh = (h - 2.0 * pad) * c as f64 / max;
        let x = pad + i as f64 * bw;
        let label = if i == 0 {
            "never".to_string()
        } else {
            format!("{:.1}", r.density_edges[i - 1])
        };
        let _ = write!(
            html,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw2:.1}\" height=\"{bh:.1}\" fill=\"{fill}\">\
<title>{label}: {c}</title></rect><text x=\"{tx:.1}\" y=\"{ly:.1}\" font-size=\"10\" \
text-anchor=\"middle\">{label}</text><text x=\"{tx:.1}\" y=\"{cy:.1}\" font-size=\"10\" \
text-anchor=\"middle\">{c}</text>",
            y = h - pad - bh,
            bw2 = bw * 0.9,
            fill = if i == 0 { "#c33" } else { "#4a7" },
            tx = x + bw * 0.45,
            ly = h - pad + 14.0,
            cy = h - pad - bh - 3.0,
        );
    }
    html.push_str("</svg>");
}

#[allow(clippy::too_many_arguments)]
fn latent_section(
    html: &mut String,
    lm: &Lm,
    sae: &Sae,
    unembed: &[Vec<f32>],
    f: &Firings,
    windows: &[Vec<u32>],
    j: u32,
    cfg: &ReportConfig,
) {
    let mut fires = f.by_latent.get(&j).cloned().unwrap_or_default();
    fires.sort_by(|a, b| b.0.total_cmp(&a.0));
    let max = fires.first().map_or(0.0, |x| x.0);
    let _ = write!(
        html,
        "<div class=\"lat\" id=\"latent-{j}\"><h3>Latent {j}</h3><p>fires on {:.3}% of tokens; \
max activation {max:.3}</p>",
        100.0 * fires.len() as f64 / f.tokens.max(1) as f64
    );
    logit_effects(html, lm, sae, unembed, j as usize, cfg.logit_tokens);
    html.push_str("<h4>Top activations</h4>");
    for &(_, w, p) in fires.iter().take(cfg.top) {
        context(html, lm, f, windows, j, w as usize, p as usize, max, cfg);
    }
    if fires.len() > cfg.top {
        html.push_str("<h4>Across quantiles</h4>");
        let n = fires.len();
        for q in 0..cfg.quantile_examples {
            // From the top quantile down to the lowest.
            let i = ((q as f64 + 0.5) / cfg.quantile_examples as f64 * n as f64) as usize;
            let (a, w, p) = fires[i.min(n - 1)];
            let _ = write!(
                html,
                "<small>quantile {}/{}: {a:.3}</small>",
                q + 1,
                cfg.quantile_examples
            );
            context(html, lm, f, windows, j, w as usize, p as usize, max, cfg);
        }
    }
    html.push_str("</div>");
}

fn logit_effects(html: &mut String, lm: &Lm, sae: &Sae, unembed: &[Vec<f32>], j: usize, n: usize) {
    let d = sae.cfg.d_in;
    if unembed.first().map_or(0, Vec::len) != d {
        return; // the hook point is not in the residual stream's basis
    }
    let row = &sae.w_dec[j * d..(j + 1) * d];
    let mut eff: Vec<(f32, u32)> = unembed
        .iter()
        .enumerate()
        .map(|(t, u)| (crate::linalg::dot(row, u), t as u32))
        .collect();
    eff.sort_by(|a, b| b.0.total_cmp(&a.0));
    let list = |items: &mut dyn Iterator<Item = &(f32, u32)>, class: &str| -> String {
        items
            .map(|&(v, t)| {
                format!(
                    "<code class=\"{class}\">{}</code> {v:+.2}",
                    esc(&token_text(lm, t))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        html,
        "<p><small>promotes:</small> {}<br><small>suppresses:</small> {}</p>",
        list(&mut eff.iter().take(n), "pos"),
        list(&mut eff.iter().rev().take(n), "neg"),
    );
}

#[allow(clippy::too_many_arguments)]
fn context(
    html: &mut String,
    lm: &Lm,
    f: &Firings,
    windows: &[Vec<u32>],
    j: u32,
    w: usize,
    p: usize,
    max: f32,
    cfg: &ReportConfig,
) {
    let window = &windows[w];
    let lo = p.saturating_sub(cfg.left);
    let hi = (p + cfg.right + 1).min(window.len());
    html.push_str("<div class=\"ctx\">");
    for (q, &tok) in window.iter().enumerate().take(hi).skip(lo) {
        let a = f.codes[w][q]
            .iter()
            .find(|&&(l, _)| l == j)
            .map_or(0.0, |&(_, a)| a);
        let alpha = if max > 0.0 {
            (a / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let border = if q == p {
            "outline:1px solid #c60;"
        } else {
            ""
        };
        let _ = write!(
            html,
            "<span class=\"tok\" style=\"background:rgba(255,140,0,{alpha:.2});{border}\" \
title=\"{a:.3}\">{}</span>",
            esc(&token_text(lm, tok))
        );
    }
    html.push_str("</div>");
}
