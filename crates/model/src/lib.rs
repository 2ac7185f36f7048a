//! The networks: the notebook's LSTM cell (gates and fused layouts),
//! embeddings, dropout on non-recurrent connections, the character language
//! model, and the sequence-to-sequence word mirror.
//!
//! Owns: parameters, their initialisation and naming, and forward passes.
//! Every `forward` states its tensor shapes. Sizes (vocabulary, widths) arrive
//! in configs; this crate does not know where data comes from.
//!
//! May import: Burn and `tokenizer` (for its seedable RNG only). Never
//! `text8`, `trainer`, files, optimizers or terminals.

pub mod buffer;
pub mod charlm;
pub mod device;
pub mod dropout;
#[cfg(feature = "flex")]
pub mod flex_attention;
#[cfg(feature = "flex")]
pub mod flex_join;
#[cfg(feature = "flex")]
pub mod flex_linear;
#[cfg(feature = "flex")]
pub mod flex_ops;
pub mod host;
pub mod init;
pub mod kernel;
pub mod lstm;
pub mod mirror;
pub mod params;

pub use charlm::{CharLm, CharLmConfig, InputKind, cross_entropy};
pub use dropout::Dropout;
pub use init::InitScheme;
pub use lstm::{CellLayout, Lstm, LstmConfig, LstmInput, LstmState, Precision};

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Ids (of characters, tokens or labels) as a `[n]` integer tensor on `device`.
pub fn ids_tensor(ids: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [n]), device)
}
