//! End-to-end tests of the `charlstm` binary.

#![allow(clippy::print_stderr)]

mod backends;
mod common;
mod faults;
mod hostile;
mod lifecycle;
mod mirror;
mod runs;
