//! Placeholder until the AsciiMath converter lands.

/// LaTeX for an AsciiMath formula.
pub fn asciimath_to_latex(src: &str) -> String {
    src.to_string()
}
