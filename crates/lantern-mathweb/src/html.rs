//! TODO: filled in by the html work.
