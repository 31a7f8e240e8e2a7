//! Evaluation of backdoor detectors: AUROC, accuracy and ROC curves, per trigger family,
//! plus an SVG ROC chart and a Markdown summary table.
//!
//! Conventions used throughout:
//! * a score is a detector's output, higher meaning "more likely backdoored" (for the
//!   meta-model it is P(backdoored));
//! * a label is `true` for a backdoored model and `false` for a clean one;
//! * functions never panic on bad input: mismatched lengths, empty inputs, a missing class or
//!   a NaN score give `None` (or an empty result), as documented on each function.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The family name that clean models carry in [`by_family`].
pub const CLEAN_FAMILY: &str = "clean";

/// The key of the pooled entry (every model) in [`by_family`]'s result.
pub const ALL_FAMILIES: &str = "all";

/// The threshold [`by_family`] uses for accuracy: a score at or above it is called backdoored.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// Whether `scores` and `labels` form a usable evaluation set (same length, no NaN score).
fn valid_input(scores: &[f64], labels: &[bool]) -> bool {
    scores.len() == labels.len() && !scores.iter().any(|s| s.is_nan())
}

/// Area under the ROC curve, computed as the Mann-Whitney U statistic: the probability that a
/// random backdoored model scores above a random clean one, with ties counted as one half.
///
/// Returns `None` when the lengths differ, a score is NaN, or either class is absent.
/// Runs in O(n log n) (average ranks over a sort).
pub fn auroc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if !valid_input(scores, labels) {
        return None;
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let pos_rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    let n_pos_f = n_pos as f64;
    let u = pos_rank_sum - n_pos_f * (n_pos_f + 1.0) / 2.0;
    Some(u / (n_pos_f * n_neg as f64))
}

/// 1-based ranks of `values` in ascending order, tied values sharing their average rank.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let end = tie_group_end(&order, start, values);
        // Positions start..end (0-based) hold ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// The end (exclusive) of the run of values equal to `values[order[start]]` in `order`.
fn tie_group_end(order: &[usize], start: usize, values: &[f64]) -> usize {
    let v = values[order[start]];
    let mut end = start + 1;
    while end < order.len() && values[order[end]] == v {
        end += 1;
    }
    end
}

/// Fraction of models classified correctly when a score `>= threshold` is called backdoored.
///
/// Returns `None` when the inputs are empty, the lengths differ, or a score is NaN.
pub fn accuracy(scores: &[f64], labels: &[bool], threshold: f64) -> Option<f64> {
    if scores.is_empty() || !valid_input(scores, labels) {
        return None;
    }
    let correct = scores
        .iter()
        .zip(labels)
        .filter(|(&s, &l)| (s >= threshold) == l)
        .count();
    Some(correct as f64 / scores.len() as f64)
}

/// The ROC curve as `(false positive rate, true positive rate)` points, from `(0, 0)` to
/// `(1, 1)`, sweeping the threshold from the highest score down. Models with equal scores
/// enter together, as one (possibly diagonal) step, so the curve's trapezoidal area equals
/// [`auroc`]. Both coordinates are non-decreasing along the curve.
///
/// Returns an empty vector when the lengths differ, a score is NaN, or either class is absent.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    if !valid_input(scores, labels) {
        return Vec::new();
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut start = 0;
    while start < order.len() {
        let end = tie_group_end(&order, start, scores);
        for &i in &order[start..end] {
            if labels[i] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        points.push((fp as f64 / n_neg as f64, tp as f64 / n_pos as f64));
        start = end;
    }
    points
}

/// AUROC and accuracy of a detector on one group of models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FamilyMetrics {
    /// Area under the ROC curve; `None` when the group lacks a class.
    pub auroc: Option<f64>,
    /// Accuracy at the threshold used (see [`by_family`]).
    pub accuracy: f64,
    /// Number of models evaluated (backdoored models of the group plus the clean ones).
    pub n: usize,
}

/// Per-family metrics at [`DEFAULT_THRESHOLD`]; see [`by_family_at`].
pub fn by_family(
    scores: &[f64],
    labels: &[bool],
    families: &[String],
) -> BTreeMap<String, FamilyMetrics> {
    by_family_at(scores, labels, families, DEFAULT_THRESHOLD)
}

/// Per-family metrics with accuracy measured at `threshold`.
///
/// Clean models (label `false`, conventionally family [`CLEAN_FAMILY`]) form one negative set
/// that is **shared by every family**: the entry for family `F` evaluates the backdoored
/// models whose family is `F` against *all* clean models, so its `n` counts those backdoored
/// models plus every clean one, and accuracies of different families are not independent.
/// A model's label decides which side it is on; the family name of a clean model is ignored.
/// The [`ALL_FAMILIES`] entry pools every model (a family literally named `"all"` would be
/// overwritten by it).
///
/// Returns an empty map when the three slices differ in length or a score is NaN.
pub fn by_family_at(
    scores: &[f64],
    labels: &[bool],
    families: &[String],
    threshold: f64,
) -> BTreeMap<String, FamilyMetrics> {
    let mut out = BTreeMap::new();
    if families.len() != labels.len() || !valid_input(scores, labels) {
        return out;
    }
    let clean: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for i in (0..labels.len()).filter(|&i| labels[i]) {
        members.entry(families[i].as_str()).or_default().push(i);
    }
    for (family, backdoored) in members {
        let idx: Vec<usize> = backdoored.iter().chain(&clean).copied().collect();
        out.insert(
            family.to_string(),
            metrics_on(scores, labels, &idx, threshold),
        );
    }
    let all: Vec<usize> = (0..labels.len()).collect();
    if !all.is_empty() {
        out.insert(
            ALL_FAMILIES.to_string(),
            metrics_on(scores, labels, &all, threshold),
        );
    }
    out
}

/// Metrics on the models at `idx` (non-empty).
fn metrics_on(scores: &[f64], labels: &[bool], idx: &[usize], threshold: f64) -> FamilyMetrics {
    let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
    let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
    FamilyMetrics {
        auroc: auroc(&s, &l),
        accuracy: accuracy(&s, &l, threshold).unwrap_or(0.0),
        n: idx.len(),
    }
}

/// Escapes the five XML special characters.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Line colours, cycled when there are more curves.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Chart geometry: total size and the plot area's origin and side.
const SVG_W: f64 = 520.0;
const SVG_H: f64 = 440.0;
const PLOT_X: f64 = 60.0;
const PLOT_Y: f64 = 40.0;
const PLOT_SIDE: f64 = 340.0;

/// Maps a rate in [0, 1] (clamped) to pixel coordinates.
fn to_px(fpr: f64, tpr: f64) -> (f64, f64) {
    let (x, y) = (fpr.clamp(0.0, 1.0), tpr.clamp(0.0, 1.0));
    (PLOT_X + x * PLOT_SIDE, PLOT_Y + (1.0 - y) * PLOT_SIDE)
}

/// A small standalone SVG line chart of ROC curves: unit axes with ticks every 0.2, the chance
/// diagonal, one polyline per `(name, points)` curve, a legend naming each curve, and `title`
/// on top. All text is XML-escaped; points outside [0, 1] are clamped and non-finite ones
/// dropped.
pub fn roc_svg(curves: &[(String, Vec<(f64, f64)>)], title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" viewBox="0 0 {SVG_W} {SVG_H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{SVG_W}" height="{SVG_H}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        PLOT_X + PLOT_SIDE / 2.0,
        xml_escape(title)
    );
    svg_axes(&mut s);
    for (k, (_, points)) in curves.iter().enumerate() {
        svg_polyline(&mut s, points, PALETTE[k % PALETTE.len()]);
    }
    svg_legend(&mut s, curves);
    s.push_str("</svg>\n");
    s
}

/// Frame, ticks, tick labels, axis titles and the chance diagonal.
fn svg_axes(s: &mut String) {
    let _ = writeln!(
        s,
        r#"<rect x="{PLOT_X}" y="{PLOT_Y}" width="{PLOT_SIDE}" height="{PLOT_SIDE}" fill="none" stroke="black"/>"#
    );
    for i in 0..=5 {
        let v = f64::from(i) / 5.0;
        let (x, y0) = to_px(v, 0.0);
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{v:.1}</text>"#,
            y0 + 5.0,
            y0 + 18.0
        );
        let (x0, y) = to_px(0.0, v);
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{y}" x2="{x0}" y2="{y}" stroke="black"/><text x="{}" y="{}" text-anchor="end">{v:.1}</text>"#,
            x0 - 5.0,
            x0 - 8.0,
            y + 4.0
        );
    }
    let (x0, y0) = to_px(0.0, 0.0);
    let (x1, y1) = to_px(1.0, 1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999999" stroke-dasharray="4 4"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">False positive rate</text>"#,
        PLOT_X + PLOT_SIDE / 2.0,
        y0 + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">True positive rate</text>"#,
        PLOT_Y + PLOT_SIDE / 2.0,
        PLOT_Y + PLOT_SIDE / 2.0
    );
}

/// One curve as a polyline.
fn svg_polyline(s: &mut String, points: &[(f64, f64)], colour: &str) {
    let mut coords = String::new();
    for &(fpr, tpr) in points
        .iter()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
    {
        let (x, y) = to_px(fpr, tpr);
        let _ = write!(coords, "{x:.2},{y:.2} ");
    }
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
        coords.trim_end()
    );
}

/// The legend: a colour swatch and the escaped name per curve, right of the plot area.
fn svg_legend(s: &mut String, curves: &[(String, Vec<(f64, f64)>)]) {
    let x = PLOT_X + PLOT_SIDE + 12.0;
    for (k, (name, _)) in curves.iter().enumerate() {
        let y = PLOT_Y + 10.0 + 18.0 * k as f64;
        let colour = PALETTE[k % PALETTE.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 18.0,
            x + 22.0,
            y + 4.0,
            xml_escape(name)
        );
    }
}

/// Escapes a Markdown table cell (pipes and line breaks).
fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A Markdown table of AUROC, one row per detector and one column per family: the union of
/// the families over all rows in sorted order, with [`ALL_FAMILIES`] last. Cells show the
/// AUROC to three decimals, or `n/a` when it is undefined or the detector lacks that family.
pub fn table_markdown(rows: &[(String, BTreeMap<String, FamilyMetrics>)]) -> String {
    let mut families: Vec<&str> = rows
        .iter()
        .flat_map(|(_, m)| m.keys().map(String::as_str))
        .filter(|f| *f != ALL_FAMILIES)
        .collect();
    families.sort_unstable();
    families.dedup();
    if rows.iter().any(|(_, m)| m.contains_key(ALL_FAMILIES)) {
        families.push(ALL_FAMILIES);
    }
    let mut s = String::from("| detector |");
    for f in &families {
        let _ = write!(s, " {} |", md_cell(f));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(families.len()));
    s.push('\n');
    for (detector, metrics) in rows {
        let _ = write!(s, "| {} |", md_cell(detector));
        for f in &families {
            let cell = match metrics.get(*f).and_then(|m| m.auroc) {
                Some(a) => format!("{a:.3}"),
                None => "n/a".to_string(),
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auroc_perfect_reversed_ties() {
        let labels = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &labels), Some(0.5));
    }

    #[test]
    fn auroc_hand_computed_with_ties() {
        // pos: 0.8, 0.5, 0.3 ; neg: 0.5, 0.3, 0.1
        // pairs (pos > neg = 1, tie = 0.5):
        // 0.8: 1+1+1 = 3 ; 0.5: 0.5+1+1 = 2.5 ; 0.3: 0+0.5+1 = 1.5 -> 7 / 9
        let scores = [0.8, 0.5, 0.3, 0.5, 0.3, 0.1];
        let labels = [true, true, true, false, false, false];
        assert!(close(auroc(&scores, &labels).unwrap(), 7.0 / 9.0));
    }

    #[test]
    fn auroc_bad_input_is_none() {
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auroc(&[0.1], &[true, false]), None);
        assert_eq!(auroc(&[f64::NAN, 0.2], &[true, false]), None);
        assert_eq!(auroc(&[], &[]), None);
    }

    #[test]
    fn accuracy_counts_threshold_inclusive() {
        let scores = [0.5, 0.4, 0.9, 0.1];
        let labels = [true, true, true, false];
        assert_eq!(accuracy(&scores, &labels, 0.5), Some(0.75));
        assert_eq!(accuracy(&scores, &labels, 0.0), Some(0.75));
        assert_eq!(accuracy(&[], &[], 0.5), None);
        assert_eq!(accuracy(&[0.1], &[], 0.5), None);
    }

    #[test]
    fn roc_curve_endpoints_monotone_and_area() {
        let scores = [0.8, 0.5, 0.3, 0.5, 0.3, 0.1, 0.7];
        let labels = [true, true, true, false, false, false, false];
        let c = roc_curve(&scores, &labels);
        assert_eq!(c.first(), Some(&(0.0, 0.0)));
        assert_eq!(c.last(), Some(&(1.0, 1.0)));
        // one step per distinct score
        assert_eq!(c.len(), 1 + 5);
        let mut area = 0.0;
        for w in c.windows(2) {
            assert!(w[1].0 >= w[0].0 && w[1].1 >= w[0].1);
            area += (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0;
        }
        assert!(close(area, auroc(&scores, &labels).unwrap()));
        assert!(roc_curve(&[0.1], &[true]).is_empty());
    }

    #[test]
    fn by_family_shares_clean_set() {
        let fam = |s: &str| s.to_string();
        let scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.4];
        let labels = [true, true, true, true, false, false];
        let families = [
            fam("patch"),
            fam("patch"),
            fam("blend"),
            fam("blend"),
            fam("clean"),
            fam("clean"),
        ];
        let m = by_family(&scores, &labels, &families);
        assert_eq!(m.len(), 3);
        assert_eq!(m["patch"].auroc, Some(1.0));
        assert_eq!(m["patch"].n, 4);
        assert_eq!(m["patch"].accuracy, 1.0);
        // blend: pos 0.3, 0.6 vs neg 0.2, 0.4 -> (1 + 0) + (1 + 1) = 3 / 4
        assert_eq!(m["blend"].auroc, Some(0.75));
        assert_eq!(m["blend"].n, 4);
        assert_eq!(m["blend"].accuracy, 0.75);
        assert_eq!(m["all"].n, 6);
        assert!(close(m["all"].auroc.unwrap(), 7.0 / 8.0));
        assert!(by_family(&scores, &labels, &families[..2]).is_empty());
    }

    /// Crude well-formedness check: every tag closes in order.
    fn balanced(xml: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                return false;
            };
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = |t: &str| t.split_whitespace().next().unwrap_or("").to_string();
            if let Some(closing) = tag.strip_prefix('/') {
                if stack.pop() != Some(name(closing)) {
                    return false;
                }
            } else {
                stack.push(name(tag));
            }
        }
        stack.is_empty() && !rest.contains('>')
    }

    #[test]
    fn svg_is_well_formed_and_names_curves() {
        let curves = vec![
            (
                "meta-model".to_string(),
                vec![(0.0, 0.0), (0.1, 0.9), (1.0, 1.0)],
            ),
            (
                "stats <baseline> & co".to_string(),
                vec![(0.0, 0.0), (f64::NAN, 0.5), (2.0, 1.0)],
            ),
        ];
        let svg = roc_svg(&curves, "ROC \"held-out\"");
        assert!(svg.starts_with("<svg"));
        assert!(balanced(&svg));
        assert!(svg.contains("meta-model"));
        assert!(svg.contains("stats &lt;baseline&gt; &amp; co"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(balanced(&roc_svg(&[], "")));
    }

    #[test]
    fn table_has_every_family() {
        let m1 = by_family(
            &[0.9, 0.1, 0.2],
            &[true, false, false],
            &["patch".into(), "clean".into(), "clean".into()],
        );
        let m2 = by_family(
            &[0.9, 0.1],
            &[true, false],
            &["blend|x".into(), "clean".into()],
        );
        let t = table_markdown(&[("meta".into(), m1), ("stats".into(), m2)]);
        assert!(t.contains("patch"));
        assert!(t.contains("blend\\|x"));
        assert!(t.contains("| all |"));
        assert!(t.contains("n/a"));
        assert_eq!(t.lines().count(), 4);
        assert!(t.lines().next().unwrap().ends_with("| all |"));
    }
}
