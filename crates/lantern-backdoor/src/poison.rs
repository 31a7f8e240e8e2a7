//! TODO: filled in by the poison work.
