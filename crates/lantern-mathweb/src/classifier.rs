//! TODO: filled in by the classifier work.
