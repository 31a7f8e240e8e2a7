//! TODO: filled in by the baseline work.
