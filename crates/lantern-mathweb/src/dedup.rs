//! TODO: filled in by the dedup work.
