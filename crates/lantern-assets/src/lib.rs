//! Lantern's real models and data sets, fetched from package registries.
//!
//! This first part holds the format readers: [`ar`] for Debian packages and [`rdata`] for R
//! serialized data.

pub mod ar;
mod error;
pub mod rdata;

pub use error::AssetError;
