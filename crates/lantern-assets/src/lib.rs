//! Asset registry (filled in by the assets work).
