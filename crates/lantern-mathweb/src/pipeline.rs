//! TODO: filled in by the pipeline work.
