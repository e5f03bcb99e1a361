//! torch's `nn.Conv2d` / `nn.Conv1d` (any stride, padding and groups) and `nn.BatchNorm2d` in eval mode, loaded by
//! their state-dict prefix. Used by the convolutional adapters that name their layers as torch modules do.

use tch::Tensor;
use vene_checkpoint::{Result, Weights};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// torch's `padding=p` on every side.
    Symmetric(i64),
    /// TensorFlow's `SAME`: output size `ceil(in / stride)`, the odd pixel of padding at the bottom / right.
    Same,
}

/// A 2-D (or, with [`Conv::forward1d`], 1-D) convolution.
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: i64,
    padding: Padding,
    groups: i64,
}

impl Conv {
    /// `prefix.weight` of `shape` (`(out, in / groups, k…)`) and, with `bias`, `prefix.bias`.
    pub fn load(
        weights: &mut Weights,
        prefix: &str,
        shape: &[i64],
        bias: bool,
        stride: i64,
        padding: Padding,
        groups: i64,
    ) -> Result<Self> {
        let weight = weights.take(&format!("{prefix}.weight"), shape)?;
        let bias = if bias { Some(weights.take(&format!("{prefix}.bias"), &[shape[0]])?) } else { None };
        Ok(Self { weight, bias, stride, padding, groups })
    }

    pub fn out_channels(&self) -> i64 {
        self.weight.size()[0]
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `(b, in, h, w)` → `(b, out, h', w')`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kernel = self.weight.size()[2];
        let x = match self.padding {
            Padding::Symmetric(_) => x.shallow_clone(),
            Padding::Same => {
                let (height, width) = (x.size()[2], x.size()[3]);
                let (top, bottom) = same_padding(height, kernel, self.stride);
                let (left, right) = same_padding(width, kernel, self.stride);
                x.constant_pad_nd([left, right, top, bottom])
            }
        };
        let pad = match self.padding {
            Padding::Symmetric(p) => p,
            Padding::Same => 0,
        };
        x.conv2d(&self.weight, self.bias.as_ref(), [self.stride; 2], [pad; 2], [1, 1], self.groups)
    }

    /// `(b, in, l)` → `(b, out, l')`, for a weight of shape `(out, in / groups, k)`.
    pub fn forward1d(&self, x: &Tensor) -> Tensor {
        let pad = match self.padding {
            Padding::Symmetric(p) => p,
            Padding::Same => {
                let (before, after) = same_padding(x.size()[2], self.weight.size()[2], self.stride);
                let padded = x.constant_pad_nd([before, after]);
                return padded.conv1d(&self.weight, self.bias.as_ref(), [self.stride], [0], [1], self.groups);
            }
        };
        x.conv1d(&self.weight, self.bias.as_ref(), [self.stride], [pad], [1], self.groups)
    }
}

/// TensorFlow `SAME` padding (before, after) of one axis.
fn same_padding(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// `nn.BatchNorm2d` with its running statistics (eval mode).
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
    epsilon: f64,
}

impl BatchNorm {
    /// `prefix.weight`, `.bias`, `.running_mean`, `.running_var` of `channels` (`num_batches_tracked` is unused).
    pub fn load(weights: &mut Weights, prefix: &str, channels: i64, epsilon: f64) -> Result<Self> {
        let mut take = |name: &str| weights.take(&format!("{prefix}.{name}"), &[channels]);
        Ok(Self {
            weight: take("weight")?,
            bias: take("bias")?,
            mean: take("running_mean")?,
            var: take("running_var")?,
            epsilon,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.mean),
            Some(&self.var),
            false,
            0.0,
            self.epsilon,
            false,
        )
    }
}
