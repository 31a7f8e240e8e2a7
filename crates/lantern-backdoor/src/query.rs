//! The MNTD-style query baseline (work in progress).
