//! The study commands: each takes any model with the right sites, runs one of the paper's studies and writes its
//! figures and numbers (a `StudyOutput`) into `--out`.

pub mod attribute;
pub mod channels;
pub mod circuit;
pub mod cnn_trace;
pub mod das_probe;
pub mod erase;
pub mod image_das;
pub mod interchange;
pub mod interchange_search;
pub mod ocr_steps;
pub mod path_patch;
pub mod scrub;
pub mod senses;
pub mod steer;
pub mod steer_sentiment;
pub mod timesteps;
pub mod trace;
pub mod vad_state;
