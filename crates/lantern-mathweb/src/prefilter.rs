//! TODO: filled in by the prefilter work.
