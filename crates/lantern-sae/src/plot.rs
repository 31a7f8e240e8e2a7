//! Small SVG line charts for reports (patching curves, sweeps): no plotting dependency, opens in
//! any browser.

use std::fmt::Write;

use crate::report::esc;

/// One named line of `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A `w x h` chart of `series` with a title, axis labels, ticks and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (480.0, 320.0, 56.0, 120.0, 28.0, 44.0);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<&(f64, f64)> = pts.filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let (mut x0, mut x1) = span(finite.iter().map(|p| p.0));
    let (mut y0, mut y1) = span(finite.iter().map(|p| p.1));
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 <= y0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="16" text-anchor="middle" font-size="13">{}</text>"#,
        left + pw / 2.0,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            sx(xv),
            top + ph + 14.0,
            tick(xv),
            left - 4.0,
            sy(yv) + 4.0,
            tick(yv),
            left + pw,
            sy(yv),
            sy(yv)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        left + pw / 2.0,
        h - 8.0,
        esc(x_label),
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{c}"/>"#);
        }
        let ly = top + 14.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + pw + 10.0,
            left + pw + 28.0,
            left + pw + 32.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

fn span(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    })
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_places_points_inside_the_frame_and_names_every_series() {
        let s = line_chart(
            "t",
            "x",
            "y",
            &[
                Series {
                    name: "a<b".into(),
                    points: vec![(0.0, 0.0), (1.0, 2.0), (2.0, f64::NAN)],
                },
                Series {
                    name: "c".into(),
                    points: vec![(0.5, 1.0)],
                },
            ],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("a&lt;b") && s.contains(">c</text>"));
        // The NaN point is dropped: 3 finite points, 3 circles.
        assert_eq!(s.matches("<circle").count(), 3);
        // Extremes map to the frame's corners: x in [56, 360], y in [28, 276].
        assert!(s.contains(r#"cx="56.0" cy="276.0""#), "{s}");
        assert!(s.contains(r#"cx="360.0" cy="28.0""#), "{s}");
    }
}
