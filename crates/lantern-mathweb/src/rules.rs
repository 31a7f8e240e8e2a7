//! OpenWebMath's final document rules: minimum length, accented-character ratio (non-English
//! text that slipped past language id), and a URL / domain block list.

use std::collections::HashSet;
use std::path::Path;

/// Thresholds of the final rules (OpenWebMath's values by default).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Fewest characters a document keeps (100).
    pub min_chars: usize,
    /// Largest share of accented Latin letters among letters (0.015).
    pub max_accented_ratio: f64,
    /// Blocked domains: a URL whose host is one of these or a subdomain of one is dropped.
    pub blocked_domains: HashSet<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            min_chars: 100,
            max_accented_ratio: 0.015,
            blocked_domains: HashSet::new(),
        }
    }
}

/// Why a document failed the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleFailure {
    /// Shorter than `min_chars`.
    TooShort,
    /// Too many accented letters.
    Accented,
    /// The URL's domain is blocked.
    BlockedUrl,
}

impl RuleFailure {
    /// Name used in `stats.json`.
    pub fn name(self) -> &'static str {
        match self {
            RuleFailure::TooShort => "too_short",
            RuleFailure::Accented => "accented_chars",
            RuleFailure::BlockedUrl => "blocked_url",
        }
    }
}

/// Error reading a block list.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BlocklistError {
    path: String,
    source: std::io::Error,
}

impl Rules {
    /// Adds the domains of a block-list file (one domain per line, `#` comments).
    pub fn load_blocklist(&mut self, path: &Path) -> Result<usize, BlocklistError> {
        let text = std::fs::read_to_string(path).map_err(|source| BlocklistError {
            path: path.display().to_string(),
            source,
        })?;
        let before = self.blocked_domains.len();
        for line in text.lines() {
            let d = line
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_start_matches("*.");
            if !d.is_empty() {
                self.blocked_domains.insert(d.to_ascii_lowercase());
            }
        }
        Ok(self.blocked_domains.len() - before)
    }

    /// The first rule `text` (from `url`) fails, if any.
    pub fn check(&self, text: &str, url: Option<&str>) -> Option<RuleFailure> {
        if text.chars().count() < self.min_chars {
            return Some(RuleFailure::TooShort);
        }
        if accented_ratio(text) > self.max_accented_ratio {
            return Some(RuleFailure::Accented);
        }
        if url.and_then(host).is_some_and(|h| self.blocked(&h)) {
            return Some(RuleFailure::BlockedUrl);
        }
        None
    }

    fn blocked(&self, host: &str) -> bool {
        let mut h = host;
        loop {
            if self.blocked_domains.contains(h) {
                return true;
            }
            match h.find('.') {
                Some(i) => h = &h[i + 1..],
                None => return false,
            }
        }
    }
}

/// Share of letters that are accented Latin letters (U+00C0..U+024F).
pub fn accented_ratio(text: &str) -> f64 {
    let (mut letters, mut accented) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        if ('\u{c0}'..='\u{24f}').contains(&c) && c != '\u{d7}' && c != '\u{f7}' {
            accented += 1;
        }
    }
    if letters == 0 {
        0.0
    } else {
        accented as f64 / letters as f64
    }
}

/// Lower-cased host of an absolute URL (`https://user@Host:8080/x` -> `host`).
pub fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_order() {
        let mut r = Rules::default();
        r.blocked_domains.insert("spam.example".into());
        let long =
            "The derivative of $x^2$ is $2x$, which we prove from the limit definition. ".repeat(3);
        assert_eq!(r.check("short", None), Some(RuleFailure::TooShort));
        assert_eq!(
            r.check(&long, Some("https://a.spam.example/x")),
            Some(RuleFailure::BlockedUrl)
        );
        assert_eq!(r.check(&long, Some("https://notspam.example/x")), None);
        let french =
            "Le théorème de Pythagore établit qu'à côté d'un triangle rectangle, été élève. "
                .repeat(3);
        assert_eq!(r.check(&french, None), Some(RuleFailure::Accented));
        assert_eq!(
            host("HTTP://u@Math.Example.org:80/p?q"),
            Some("math.example.org".into())
        );
    }

    #[test]
    fn blocklist_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("block.txt");
        std::fs::write(&p, "# adult\nbad.example\n*.worse.example  # comment\n\n").unwrap();
        let mut r = Rules::default();
        assert_eq!(r.load_blocklist(&p).unwrap(), 2);
        assert!(r.blocked("x.worse.example"));
        let err = r
            .load_blocklist(&dir.path().join("missing.txt"))
            .unwrap_err();
        assert!(err.to_string().contains("missing.txt"));
    }
}
