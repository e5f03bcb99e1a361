//! Fashion-MNIST (Debian package `dataset-fashion-mnist`, or `VENE_FASHION_MNIST=DIR` with the four IDX `.gz`
//! files), read with bounds-checked IDX headers.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use tch::{Kind, Tensor};

use crate::error::{Result, VeneError};

pub const CLASSES: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/// Where the Fashion-MNIST files are, if anywhere.
pub fn dataset_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VENE_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    dir.join("train-images-idx3-ubyte.gz").exists().then_some(dir)
}

/// Reads a gzipped IDX file: its dimensions and bytes.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let io = |source| VeneError::Io { path: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(io)?).read_to_end(&mut bytes).map_err(io)?;
    let invalid = |what: &str| VeneError::Inputs(format!("{} is not an IDX file: {what}", path.display()));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 {
        return Err(invalid("bad magic number"));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(invalid("truncated header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    if bytes.len() - header != dims.iter().product::<usize>() {
        return Err(invalid("the data does not match the declared dimensions"));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Images `(n, 1, 28, 28)` scaled to `[0, 1]` and normalised, and labels `(n)`, the first `limit` of a split.
pub fn load_split(dir: &Path, split: &str, limit: usize) -> Result<(Tensor, Tensor)> {
    let (dims, pixels) = read_idx(&dir.join(format!("{split}-images-idx3-ubyte.gz")))?;
    let (_, labels) = read_idx(&dir.join(format!("{split}-labels-idx1-ubyte.gz")))?;
    let n = dims[0].min(limit).min(labels.len());
    let (h, w) = (dims[1] as i64, dims[2] as i64);
    let images =
        Tensor::from_slice(&pixels[..n * (h * w) as usize]).view([n as i64, 1, h, w]).to_kind(Kind::Float) / 255.0;
    let images = (images - 0.2860) / 0.3530;
    let labels = Tensor::from_slice(&labels[..n]).to_kind(Kind::Int64);
    Ok((images, labels))
}
