//! vene's integration tests: one binary (each test binary links libtorch).
//!
//! Reference values come from pyvene 0.1.8 + transformers (scripts/gen_fixtures_gpt2.py, committed under
//! tests/fixtures); plugins are the real cdylibs of this workspace, loaded with dlopen.

mod adapters;
mod attribution;
mod causal;
mod checkpoints;
mod circuit;
mod cnn_rnn;
mod common;
mod das;
mod erasure;
mod errors;
mod generation;
mod gguf;
mod interventions;
mod llama;
mod loading;
mod path_patching;
mod plugins;
mod real_cnn_rnn;
mod real_model;
mod reference;
mod robustness;
mod scrubbing;
mod sharding;
mod studies;
mod units;
