//! `pinserve profile`: what a model's training data looked like to it, summarised for drift
//! monitoring. The data goes through the same path as `eval`'s (columns mapped to inputs, the
//! model's sessions and batcher, [`crate::eval::scoring`]); [`build`] turns the batches into
//! feature and prediction distributions in one bounded pass; [`format`] is the file serving
//! reads back and checks against the model.

pub(crate) mod build;
pub mod command;
pub mod format;

pub use self::format::ReferenceProfile;
pub(crate) use self::format::{FILE_NAME, ProfileError};
