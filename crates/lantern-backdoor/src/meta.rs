//! The weight-reading meta-model (work in progress).
