//! A Llama-family `config.json` read field by field: the families share most fields but differ in their defaults
//! (and in whether an absent field and `null` mean the same), so each family file resolves it into a
//! [`DecoderSpec`] with its own defaults through [`RawConfig::common`].

use serde_json::{Map, Value};
use vene_nn::{
    decoder::{AttentionKind, DecoderSpec, RopeScaling},
    Activation,
};

/// A config error: the field and what was wrong with it.
pub type ConfigResult<T> = Result<T, String>;

/// The config's fields, as parsed JSON.
pub struct RawConfig {
    fields: Map<String, Value>,
}

/// What a family assumes when its config leaves a field out.
pub struct Defaults {
    /// `None`: hidden_size / num_attention_heads.
    pub head_dim: Option<i64>,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub activation: &'static str,
    /// The field naming the activation (`hidden_act`, or Gemma 2/3's `hidden_activation`).
    pub activation_field: &'static str,
}

impl RawConfig {
    pub fn new(value: Value) -> ConfigResult<Self> {
        match value {
            Value::Object(fields) => Ok(Self { fields }),
            _ => Err("the model config is not a JSON object".to_string()),
        }
    }

    /// The text model's config inside a multimodal one (`text_config` of a `gemma3` config).
    pub fn text_config(&self) -> Option<RawConfig> {
        self.fields.get("text_config").and_then(|v| RawConfig::new(v.clone()).ok())
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// `Some(None)` for an explicit `null`, `None` when absent.
    pub fn float_or_null(&self, name: &str) -> ConfigResult<Option<Option<f64>>> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v.as_f64().map(|f| Some(Some(f))).ok_or_else(|| format!("'{name}' must be a number, got {v}")),
        }
    }

    pub fn float(&self, name: &str) -> ConfigResult<Option<f64>> {
        Ok(self.float_or_null(name)?.flatten())
    }

    pub fn int(&self, name: &str) -> ConfigResult<Option<i64>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| format!("'{name}' must be an integer, got {v}")),
        }
    }

    pub fn required_int(&self, name: &str) -> ConfigResult<i64> {
        self.int(name)?.ok_or_else(|| format!("the config has no '{name}'"))
    }

    pub fn bool(&self, name: &str) -> ConfigResult<Option<bool>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| format!("'{name}' must be true or false, got {v}")),
        }
    }

    pub fn string(&self, name: &str) -> ConfigResult<Option<&str>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("'{name}' must be a string, got {v}")),
        }
    }

    /// `layer_types` if the config lists them (checked against the layer count), else `fallback(layer)`.
    pub fn layer_types(
        &self,
        layers: i64,
        fallback: impl Fn(i64) -> AttentionKind,
    ) -> ConfigResult<Vec<AttentionKind>> {
        let Some(listed) = self.fields.get("layer_types").filter(|v| !v.is_null()) else {
            return Ok((0..layers).map(fallback).collect());
        };
        let names = listed.as_array().ok_or("'layer_types' must be a list")?;
        if names.len() as i64 != layers {
            return Err(format!("'layer_types' lists {} layers, the model has {layers}", names.len()));
        }
        names
            .iter()
            .map(|n| match n.as_str() {
                Some("full_attention") => Ok(AttentionKind::Full),
                Some("sliding_attention") => Ok(AttentionKind::Sliding),
                _ => Err(format!("layer type {n} is not 'full_attention' or 'sliding_attention'")),
            })
            .collect()
    }

    /// The fields every family shares, with `defaults` for the ones it may leave out. Attention is full on every
    /// layer, nothing is biased or offset; the family files change what differs.
    pub fn common(&self, model_type: &str, defaults: &Defaults) -> ConfigResult<DecoderSpec> {
        let hidden_size = self.required_int("hidden_size")?;
        let heads = self.required_int("num_attention_heads")?;
        let layers = self.required_int("num_hidden_layers")?;
        let kv_heads = self.int("num_key_value_heads")?.unwrap_or(heads);
        if hidden_size <= 0 || heads <= 0 || layers <= 0 {
            return Err("hidden_size, num_attention_heads and num_hidden_layers must be positive".to_string());
        }
        if kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(format!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"));
        }
        let head_dim = match self.int("head_dim")?.or(defaults.head_dim) {
            Some(dim) => dim,
            None if hidden_size % heads == 0 => hidden_size / heads,
            None => return Err(format!("hidden_size {hidden_size} is not divisible by num_attention_heads {heads}")),
        };
        if head_dim <= 0 || head_dim % 2 != 0 {
            return Err(format!("head_dim {head_dim} must be positive and even (rotary pairs)"));
        }
        if self.float("partial_rotary_factor")?.is_some_and(|f| f != 1.0) {
            return Err("partial_rotary_factor other than 1 is not supported by this adapter".to_string());
        }
        let activation_name = self.string(defaults.activation_field)?.unwrap_or(defaults.activation);
        let activation = Activation::from_name(activation_name).ok_or_else(|| {
            format!("{} '{activation_name}' is not supported ({} are)", defaults.activation_field, Activation::NAMES)
        })?;
        let bias = self.bool("attention_bias")?.unwrap_or(false);
        Ok(DecoderSpec {
            model_type: model_type.to_string(),
            hidden_size,
            intermediate_size: self.required_int("intermediate_size")?,
            layers,
            heads,
            kv_heads,
            head_dim,
            vocab_size: self.required_int("vocab_size")?,
            max_positions: self.int("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: self.float("rms_norm_eps")?.unwrap_or(1e-6),
            activation,
            rope_theta: self.float("rope_theta")?.unwrap_or(defaults.rope_theta),
            rope_scaling: self.rope_scaling()?,
            local_rope_theta: None,
            layer_types: vec![AttentionKind::Full; layers as usize],
            sliding_window: None,
            qkv_bias: bias,
            output_bias: bias,
            mlp_bias: self.bool("mlp_bias")?.unwrap_or(false),
            offset_norms: false,
            scale_embeddings: false,
            qk_norm: false,
            post_norms: false,
            attention_scale: (head_dim as f64).powf(-0.5),
            attention_softcap: None,
            final_softcap: None,
            tie_word_embeddings: self.bool("tie_word_embeddings")?.unwrap_or(defaults.tie_word_embeddings),
        })
    }

    /// `rope_scaling`: none, `linear` or `llama3`; other kinds are refused by name.
    fn rope_scaling(&self) -> ConfigResult<RopeScaling> {
        let Some(scaling) = self.fields.get("rope_scaling").filter(|v| !v.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let scaling = RawConfig::new(scaling.clone()).map_err(|_| "'rope_scaling' must be an object".to_string())?;
        let kind = scaling.string("rope_type")?.or(scaling.string("type")?).unwrap_or("default");
        let number =
            |name: &str| scaling.float(name)?.ok_or_else(|| format!("rope_scaling of type '{kind}' needs '{name}'"));
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear { factor: number("factor")? }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_positions: number("original_max_position_embeddings")?,
            }),
            other => Err(format!("rope_scaling type '{other}' is not supported (default, linear and llama3 are)")),
        }
    }
}
