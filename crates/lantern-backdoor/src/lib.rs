//! Backdoor detection with meta-models (Langosco et al. 2023): image data sets, trigger
//! families and poisoning; later the batched CNN zoo, the weight-reading meta-model and its
//! evaluation.
//!
//! [`data`] loads Fashion-MNIST (IDX), MNIST-5k (CSV) and CIFAR-10 (binary) as one
//! [`data::Dataset`] type; [`triggers`] draws and stamps the paper's trigger families;
//! [`poison`] builds poisoned training sets and the attack-success test set.

mod atomic;
pub mod baseline;
pub mod cnn;
pub mod data;
pub mod meta;
pub mod metrics;
pub mod poison;
pub mod query;
pub mod triggers;
pub mod zoo;
