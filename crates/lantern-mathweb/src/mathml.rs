//! TODO: filled in by the mathml work.
