//! TODO: filled in by the cnn work.
