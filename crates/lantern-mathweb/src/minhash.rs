//! TODO: filled in by the minhash work.
