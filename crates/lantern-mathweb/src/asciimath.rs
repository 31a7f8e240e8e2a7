//! TODO: filled in by the asciimath work.
