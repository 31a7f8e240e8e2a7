//! TODO: filled in by the charset work.
