//! vene model adapter for Backpack GPT-2 (pyvene's `BackpackGPT2LMHeadModel`, checkpoints such as
//! `stanfordnlp/backpack-gpt2`). Chosen by `architectures` ("BackpackGPT2LMHeadModel") or `model_type`
//! ("backpack-gpt2"), since pyvene's own saved configs say `model_type` "gpt2".
//!
//! Each token gets `num_senses` sense vectors from a small network over its word embedding alone; a GPT-2 over the
//! context produces weights that mix the senses of all earlier tokens. Sites: `sense_network_output`
//! `(b, senses, s, d)` with units `sense` and `sense.pos`, then every GPT-2 site of the inner transformer.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{
    component,
    gpt2::{components, Gpt2Body, Gpt2Config},
    Activation, LayerNorm, Linear, TokenBatch,
};

vene_api::export_plugin! {
    adapters: [BackpackAdapter],
    interventions: [],
}

/// Loads Backpack GPT-2 checkpoints.
pub struct BackpackAdapter;

impl ModelAdapter for BackpackAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["backpack-gpt2".to_string(), "BackpackGPT2LMHeadModel".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let load = || -> Result<Backpack, Box<dyn std::error::Error>> {
            let gpt2: Gpt2Config = vene_checkpoint::read_config(dir)?;
            let senses: SenseConfig = vene_checkpoint::read_config(dir)?;
            Backpack::load(dir, gpt2, senses, request)
        };
        Ok(Box::new(load().map_err(|e| PluginError::load(e.to_string()))?))
    }
}

/// The Backpack fields of the config, beside the GPT-2 ones.
#[derive(Debug, Clone, Deserialize)]
pub struct SenseConfig {
    #[serde(default = "default_senses")]
    pub num_senses: i64,
    #[serde(default = "default_scale")]
    pub sense_intermediate_scale: i64,
}

fn default_senses() -> i64 {
    16
}

fn default_scale() -> i64 {
    4
}

/// Site number of the sense network's output; the GPT-2 body's sites follow it.
const SENSE_NETWORK_OUTPUT: u32 = 0;

struct BackpackMlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl BackpackMlp {
    fn load(weights: &mut Weights, prefix: &str, dims: [i64; 3]) -> vene_checkpoint::Result<Self> {
        Ok(Self {
            c_fc: Linear::load_conv1d(weights, &format!("{prefix}.c_fc"), dims[0], dims[1])?,
            c_proj: Linear::load_conv1d(weights, &format!("{prefix}.c_proj"), dims[1], dims[2])?,
        })
    }

    fn forward(&self, activation: Activation, x: &Tensor) -> Tensor {
        self.c_proj.forward(&activation.forward(&self.c_fc.forward(x)))
    }
}

/// A loaded Backpack language model.
pub struct Backpack {
    body: Gpt2Body,
    senses: i64,
    activation: Activation,
    sense_ln: LayerNorm,
    block_ln_1: LayerNorm,
    block_ln_2: LayerNorm,
    block_mlp: BackpackMlp,
    final_mlp: BackpackMlp,
    weight_net: Linear,
    catalog: ModelCatalog,
}

impl Backpack {
    fn load(
        dir: &Path,
        config: Gpt2Config,
        sense: SenseConfig,
        request: &LoadRequest<'_>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let activation = Activation::from_name(&config.activation_function).ok_or_else(|| {
            format!("activation_function '{}' is not supported ({} are)", config.activation_function, Activation::NAMES)
        })?;
        let (d, eps, senses) = (config.n_embd, config.layer_norm_epsilon, sense.num_senses);
        if senses <= 0 || d % senses != 0 {
            return Err(format!("n_embd {d} is not divisible by num_senses {senses}").into());
        }
        let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
        weights.strip_prefixes(&["backpack."]);
        let mut catalog_components = vec![component(
            "sense_network_output",
            SiteLayout::Senses,
            d as u32,
            1,
            None,
            &["backpack.sense_network.output", "sense_network.output"],
        )];
        catalog_components.extend(components(&config, "backpack.gpt2_model."));
        let catalog = ModelCatalog {
            model_type: "backpack-gpt2".into(),
            num_layers: config.n_layer as u32,
            num_heads: config.n_head as u32,
            hidden_size: d as u32,
            vocab_size: config.vocab_size as u32,
            input: InputKind::TokenIds,
            components: catalog_components.into(),
        };
        let sense_ln = LayerNorm::load(&mut weights, "sense_network.ln", d, eps)?;
        let block_ln_1 = LayerNorm::load(&mut weights, "sense_network.block.ln_1", d, eps)?;
        let block_ln_2 = LayerNorm::load(&mut weights, "sense_network.block.ln_2", d, eps)?;
        let block_mlp = BackpackMlp::load(&mut weights, "sense_network.block.mlp", [d, 4 * d, d])?;
        let final_mlp = BackpackMlp::load(
            &mut weights,
            "sense_network.final_mlp",
            [d, sense.sense_intermediate_scale * d, senses * d],
        )?;
        let weight_net = Linear::load(&mut weights, "sense_weight_net.c_attn", d, 2 * d, true)?;
        let mut body_weights = weights;
        body_weights.strip_prefixes(&["gpt2_model."]);
        let body = Gpt2Body::load(&mut body_weights, config, SENSE_NETWORK_OUTPUT + 1)?;
        Ok(Self {
            body,
            senses,
            activation,
            sense_ln,
            block_ln_1,
            block_ln_2,
            block_mlp,
            final_mlp,
            weight_net,
            catalog,
        })
    }

    /// `(b, s)` ids → sense vectors `(b, senses, s, d)`.
    fn sense_network(&self, ids: &Tensor) -> Tensor {
        let embeddings = Tensor::embedding(self.body.wte(), ids, -1, false, false);
        let hidden = self.sense_ln.forward(&embeddings);
        let residual = &hidden + &embeddings;
        let hidden = self.block_ln_1.forward(&residual);
        let residual = self.block_mlp.forward(self.activation, &hidden) + residual;
        let hidden = self.block_ln_2.forward(&residual);
        let senses = self.final_mlp.forward(self.activation, &hidden);
        let (b, s, _) = senses.size3().expect("(b, s, senses·d)");
        senses.reshape([b, s, self.senses, -1]).transpose(1, 2)
    }

    /// Contextualisation weights `(b, senses, s, past + s)` from the GPT-2 hidden states, and every position's keys
    /// `(b, senses, past + s, d / senses)` (cached for the next step).
    fn contextualization(&self, hidden: &Tensor, past_keys: Option<&Tensor>) -> (Tensor, Tensor) {
        let (b, s, _) = hidden.size3().expect("(b, s, d)");
        let qk = self.weight_net.forward(hidden).reshape([b, s, 2, self.senses, -1]);
        let (q, k) = (qk.select(2, 0).permute([0, 2, 1, 3]), qk.select(2, 1).permute([0, 2, 1, 3]));
        let keys = match past_keys {
            Some(past) => Tensor::cat(&[past, &k], 2),
            None => k,
        };
        let past_len = keys.size()[2] - s;
        let scale = 1.0 / (q.size()[3] as f64).sqrt();
        let scores = q.matmul(&(&keys * scale).transpose(-1, -2));
        let causal = Tensor::full([s, past_len + s], -10000.0, (scores.kind(), scores.device())).triu(past_len + 1);
        ((scores + causal).softmax(-1, q.kind()), keys)
    }
}

impl Model for Backpack {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let config = &self.body.config;
        // The cache: the GPT-2 body's keys and values, then every position's senses and contextualisation keys.
        let tokens = TokenBatch::from_inputs_with_extra(
            inputs,
            config.vocab_size,
            config.n_positions,
            self.body.layers(),
            2,
            self.body.wte().device(),
        )?;
        hooks.set_position_offset(tokens.past_len as u32);
        let senses = hooks.site(SENSE_NETWORK_OUTPUT, 0, self.sense_network(&tokens.ids))?;
        let (hidden, mut present) = self.body.forward(&tokens, hooks)?;
        let all_senses = match tokens.extra.first() {
            Some(past) => Tensor::cat(&[past, &senses], 2),
            None => senses,
        };
        let (weights, keys) = self.contextualization(&hidden, tokens.extra.get(1));
        let mixed = weights.matmul(&all_senses).sum_dim_intlist(1, false, None::<Kind>);
        if inputs.use_cache {
            present.push(all_senses);
            present.push(keys);
        } else {
            present.clear();
        }
        Ok(ModelOutput { output: mixed.matmul(&self.body.wte().tr()), present })
    }
}
