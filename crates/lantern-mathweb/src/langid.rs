//! Language identification with fastText's `lid.176` model, as OpenWebMath does it.
//!
//! OpenWebMath keeps a document when `lid.176` says English with probability ≥ 0.5
//! ([`ENGLISH_THRESHOLD`]); the text is first made one line (newlines become spaces) because
//! fastText's `predict` reads exactly one line.
//!
//! The model is run through the `fasttext` 0.7.8 crate (bindings to the C++ fastText 0.9 sources,
//! bundled and compiled with `cc`); the 0.8 pure-Rust rewrite returns wrong labels on
//! `lid.176.ftz` and must not be used.
//!
//! # Threads
//!
//! [`LangId`] is `Send + Sync` and one instance can be shared by every rayon thread (by `&` or in
//! an `Arc`): the crate declares `FastText` `Send`/`Sync`, and C++ `FastText::predictLine` is a
//! `const` method that builds its scratch state (`Model::State`) on the stack of each call, so
//! concurrent predictions never write shared memory. No `Mutex`, no per-thread copies (the
//! quantised model is ~1 MB on disk but loading it costs tens of milliseconds).

use std::path::{Path, PathBuf};

/// OpenWebMath's language filter: keep a document whose English probability is at least this.
pub const ENGLISH_THRESHOLD: f32 = 0.5;

/// The asset name of `lid.176.ftz` in `lantern-assets`.
pub const ASSET: &str = "lid176";

/// fastText prefixes every label with this; [`LangId`] strips it (`__label__en` -> `en`).
const LABEL_PREFIX: &str = "__label__";

/// Errors from loading the model or predicting, each naming the model file.
#[derive(Debug, thiserror::Error)]
pub enum LangIdError {
    /// The `lid176` asset could not be fetched or verified.
    #[error("fetching the lid.176 model (asset `{ASSET}`): {0}")]
    Asset(#[from] lantern_assets::AssetError),
    /// The file is missing or unreadable.
    #[error("fastText model {path}: cannot read: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// fastText refused the file (not a fastText model, truncated, wrong version).
    #[error("fastText model {path}: cannot load: {message}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// fastText's message.
        message: String,
    },
    /// The model loaded but is not a supervised classifier (cannot predict).
    #[error("fastText model {path}: prediction failed: {message}")]
    Predict {
        /// The model file.
        path: PathBuf,
        /// fastText's message.
        message: String,
    },
}

/// A language guess: ISO-639-ish code as `lid.176` spells it (`"en"`, `"fr"`, `"de"`) and the
/// model's probability for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lang {
    /// The language code without fastText's `__label__` prefix.
    pub lang: String,
    /// Softmax probability in `[0, 1]`.
    pub prob: f32,
}

/// A loaded `lid.176` (or any supervised fastText) model. Cheap to share: see the module docs.
pub struct LangId {
    model: fasttext::FastText,
    path: PathBuf,
    /// Number of labels (176 for `lid.176`): the largest useful `k`.
    labels: usize,
}

impl std::fmt::Debug for LangId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LangId").field("path", &self.path).finish()
    }
}

impl LangId {
    /// Loads a fastText model file (`.bin` or quantised `.ftz`).
    ///
    /// The file is checked for readability first so that a missing file gives an I/O error
    /// naming it rather than fastText's bare message; a file without fastText's magic number is
    /// a [`LangIdError::Load`]. The file must otherwise be trusted: C++ fastText does not
    /// validate the sizes inside a model, so a file with a valid header but corrupt body can
    /// abort the process (the `lid176` asset is sha256-verified by `lantern-assets`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LangIdError> {
        let path = path.as_ref().to_path_buf();
        std::fs::File::open(&path).map_err(|source| LangIdError::Io {
            path: path.clone(),
            source,
        })?;
        let name = path.to_str().ok_or_else(|| LangIdError::Load {
            path: path.clone(),
            message: "path is not valid UTF-8".into(),
        })?;
        let mut model = fasttext::FastText::new();
        let load_err = |message| LangIdError::Load {
            path: path.clone(),
            message,
        };
        model.load_model(name).map_err(load_err)?;
        let labels = model.get_labels().map_err(load_err)?.0.len();
        Ok(Self {
            model,
            path,
            labels,
        })
    }

    /// Loads `lid.176.ftz` from the `lid176` asset, fetching it on first use.
    pub fn default_model() -> Result<Self, LangIdError> {
        Self::load(lantern_assets::fetch(ASSET)?)
    }

    /// The number of labels (languages) the model knows.
    pub fn labels(&self) -> usize {
        self.labels
    }

    /// The model file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The most likely language and its probability.
    ///
    /// Text with no words (empty, only whitespace) gives `("", 0.0)` rather than an error, so a
    /// filter comparing with [`ENGLISH_THRESHOLD`] simply drops it.
    pub fn predict(&self, text: &str) -> Result<Lang, LangIdError> {
        Ok(self.top_k(text, 1)?.into_iter().next().unwrap_or(Lang {
            lang: String::new(),
            prob: 0.0,
        }))
    }

    /// The `k` most likely languages, most likely first (fewer when the text has no words, when
    /// `k` exceeds the number of labels, or for labels whose probability underflows to 0 in
    /// fastText's hierarchical softmax; none for `k = 0`).
    pub fn top_k(&self, text: &str, k: usize) -> Result<Vec<Lang>, LangIdError> {
        // fastText reserves k + 1 slots, so an unclamped huge k overflows in C++.
        let k = k.min(self.labels);
        if k == 0 {
            return Ok(Vec::new());
        }
        let k = i32::try_from(k).unwrap_or(i32::MAX);
        let line = one_line(text);
        let predictions =
            self.model
                .predict(&line, k, 0.0)
                .map_err(|message| LangIdError::Predict {
                    path: self.path.clone(),
                    message,
                })?;
        Ok(predictions.into_iter().map(to_lang).collect())
    }

    /// The probability that `text` is English, whatever its rank (all labels are scored, so
    /// this is exact even when another language comes first; 0 for text with no words or when
    /// English's probability underflows).
    pub fn english_prob(&self, text: &str) -> Result<f32, LangIdError> {
        let all = self.top_k(text, usize::MAX)?;
        Ok(all.iter().find(|l| l.lang == "en").map_or(0.0, |l| l.prob))
    }

    /// OpenWebMath's language filter: the top language is English with probability ≥
    /// [`ENGLISH_THRESHOLD`].
    pub fn is_english(&self, text: &str) -> Result<bool, LangIdError> {
        let top = self.predict(text)?;
        Ok(top.lang == "en" && top.prob >= ENGLISH_THRESHOLD)
    }
}

/// Makes `text` a single fastText line: newlines (and NULs, which C strings cannot carry)
/// become spaces, then one `\n` is appended, as the Python `fasttext.predict` binding does, so
/// the end-of-sentence token `</s>` is counted the same way as in OpenWebMath.
pub fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\0' => ' ',
            c => c,
        })
        .collect();
    line.push('\n');
    line
}

/// Strips the `__label__` prefix and clamps fastText's probability (which can exceed 1 by a
/// rounding hair) into `[0, 1]`.
fn to_lang(p: fasttext::Prediction) -> Lang {
    let lang = p
        .label
        .strip_prefix(LABEL_PREFIX)
        .unwrap_or(&p.label)
        .to_string();
    Lang {
        lang,
        prob: p.prob.clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_replaces_newlines_and_nuls() {
        assert_eq!(one_line("a\nb\r\nc\0d"), "a b  c d\n");
        assert_eq!(one_line(""), "\n");
    }

    #[test]
    fn missing_model_names_the_file() {
        let err = LangId::load("/nonexistent/lid.176.ftz").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/lid.176.ftz"),
            "{err}"
        );
    }

    #[test]
    fn garbage_model_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.ftz");
        std::fs::write(&path, b"not a fasttext model").unwrap();
        let err = LangId::load(&path).unwrap_err();
        assert!(err.to_string().contains("bad.ftz"), "{err}");
    }

    #[test]
    fn langid_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LangId>();
    }
}
