//! TODO: filled in by the data work.
