//! vene model adapter for Silero VAD 16 kHz (`model_type` "silero_vad", `silero_vad_16k.safetensors`): speech
//! probability per 512-sample chunk (32 ms). Each chunk, with the 64 samples before it as context, goes through a
//! fixed STFT convolution (magnitudes of 129 bins), four Conv1d + ReLU layers down to one 128-vector, an LSTMCell
//! whose state carries from chunk to chunk, and a 1×1 convolution with a sigmoid.
//!
//! A chunk is a time step: the LSTM sites of [`vene_nn::lstm`] (layer 0) and `speech_probability` are called once
//! per chunk, so unit `t` names chunk t. Input: waveforms `(b, samples)` at 16 kHz, samples a multiple of 512.
//! Output: `(b, chunks)` speech probabilities.

use std::path::Path;

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    abi_stable::std_types::ROption, model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter,
    ModelCatalog, ModelInputs, PluginError, PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{
    component,
    conv::{Conv, Padding},
    lstm::{self, LstmCell},
};

vene_api::export_plugin! {
    adapters: [SileroAdapter],
    interventions: [],
}

/// The fields of a Silero VAD config.json; the defaults are the released 16 kHz model's.
#[derive(Debug, Clone, Deserialize)]
pub struct SileroConfig {
    #[serde(default = "default_chunk")]
    pub chunk: i64,
    #[serde(default = "default_context")]
    pub context: i64,
    /// The STFT's window; its hop is half of it.
    #[serde(default = "default_fft")]
    pub n_fft: i64,
    #[serde(default = "default_hidden")]
    pub hidden_size: i64,
    /// Output channels of conv1…conv4 (conv4's must equal `hidden_size`).
    #[serde(default = "default_conv_channels")]
    pub conv_channels: [i64; 4],
}

fn default_chunk() -> i64 {
    512
}

fn default_context() -> i64 {
    64
}

fn default_fft() -> i64 {
    256
}

fn default_hidden() -> i64 {
    128
}

fn default_conv_channels() -> [i64; 4] {
    [128, 64, 64, 128]
}

const CONV_STRIDES: [i64; 4] = [1, 2, 2, 1];

/// Catalog order: the LSTM's sites, then the output.
fn speech_probability_site() -> u32 {
    lstm::site_count(1)
}

/// Loads `silero_vad` checkpoints.
pub struct SileroAdapter;

impl ModelAdapter for SileroAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["silero_vad".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let load = || -> Result<Silero, Box<dyn std::error::Error>> {
            let config: SileroConfig = vene_checkpoint::read_config(dir)?;
            let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
            Silero::load(&mut weights, config)
        };
        Ok(Box::new(load().map_err(|e| PluginError::load(e.to_string()))?))
    }
}

/// A loaded Silero VAD.
pub struct Silero {
    config: SileroConfig,
    stft: Conv,
    convs: Vec<Conv>,
    cell: LstmCell,
    head: Conv,
    catalog: ModelCatalog,
}

impl Silero {
    fn load(weights: &mut Weights, config: SileroConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let (fft, hidden) = (config.n_fft, config.hidden_size);
        if config.conv_channels[3] != hidden {
            return Err(format!(
                "conv_channels ends in {}, but the LSTM takes hidden_size {hidden}",
                config.conv_channels[3]
            )
            .into());
        }
        let stft =
            Conv::load(weights, "stft_conv", &[2 * (fft / 2 + 1), 1, fft], false, fft / 2, Padding::Symmetric(0), 1)?;
        let mut input = fft / 2 + 1;
        let mut convs = Vec::new();
        for (i, (&out, &stride)) in config.conv_channels.iter().zip(&CONV_STRIDES).enumerate() {
            let name = format!("conv{}", i + 1);
            convs.push(Conv::load(weights, &name, &[out, input, 3], true, stride, Padding::Symmetric(1), 1)?);
            input = out;
        }
        let cell = LstmCell::load(weights, "lstm_cell", "", hidden, hidden)?;
        let head = Conv::load(weights, "final_conv", &[1, hidden, 1], true, 1, Padding::Symmetric(0), 1)?;
        let mut components = lstm::components(hidden, &[hidden], 1);
        components.push(component("speech_probability", SiteLayout::Recurrent, 1, 1, None, &[]));
        let catalog = ModelCatalog {
            model_type: "silero_vad".into(),
            num_layers: 1,
            num_heads: 0,
            hidden_size: hidden as u32,
            vocab_size: 0,
            max_positions: 0,
            input: InputKind::Features,
            components: components.into(),
        };
        Ok(Self { config, stft, convs, cell, head, catalog })
    }

    /// One chunk with its context `(b, context + chunk)` → the LSTM's input `(b, hidden)`.
    fn encode(&self, window: &Tensor) -> Tensor {
        let bins = self.config.n_fft / 2 + 1;
        let padded = window.unsqueeze(1).pad([0, self.config.n_fft / 4], "reflect", None);
        let spectrum = self.stft.forward1d(&padded);
        let (real, imaginary) = (spectrum.narrow(1, 0, bins), spectrum.narrow(1, bins, bins));
        let magnitude = (real.square() + imaginary.square()).sqrt();
        let features = self.convs.iter().fold(magnitude, |x, conv| conv.forward1d(&x).relu());
        features.squeeze_dim(-1)
    }

    fn forward_audio(&self, audio: &Tensor, hooks: &mut Hooks<'_>) -> PluginResult<Tensor> {
        let (batch, samples) = (audio.size()[0], audio.size()[1]);
        let (chunk, context) = (self.config.chunk, self.config.context);
        let padded = audio.pad([context, 0], "constant", Some(0.0));
        let zeros = Tensor::zeros([batch, self.config.hidden_size], (audio.kind(), audio.device()));
        let (mut hidden, mut state) = (zeros.shallow_clone(), zeros);
        let mut probabilities = Vec::new();
        for t in 0..samples / chunk {
            let window = padded.narrow(1, t * chunk, context + chunk);
            let (h, c) = self.cell.step(hooks, 0, 0, t as u32, self.encode(&window), (&hidden, &state))?;
            let logit = self.head.forward1d(&h.relu().unsqueeze(-1)).squeeze_dim(-1);
            let probability = hooks.site_at(speech_probability_site(), 0, t as u32, logit.sigmoid())?;
            probabilities.push(probability);
            (hidden, state) = (h, c);
        }
        Ok(Tensor::cat(&probabilities, 1))
    }
}

impl Model for Silero {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let audio = match inputs.features {
            ROption::RSome(audio) => audio.to_tensor(),
            ROption::RNone => return Err(PluginError::invalid_input("Silero VAD needs 16 kHz audio as \"inputs\"")),
        };
        let size = audio.size();
        let chunk = self.config.chunk;
        if size.len() != 2 || size[1] < chunk || size[1] % chunk != 0 {
            return Err(PluginError::invalid_input(format!(
                "Silero VAD takes waveforms (batch, samples) at 16 kHz with samples a positive multiple of {chunk} \
                 (one {chunk}-sample chunk per step); got {size:?}"
            )));
        }
        let weight = self.stft.weight();
        let audio = audio.to_kind(weight.kind()).to_device(weight.device());
        Ok(ModelOutput { output: self.forward_audio(&audio, hooks)?, present: Vec::new() })
    }
}
