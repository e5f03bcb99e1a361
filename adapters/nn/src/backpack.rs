//! Backpack GPT-2 (pyvene's `BackpackGPT2LMHeadModel`): per-token sense vectors from the word embedding alone,
//! mixed by weights that a GPT-2 computes over the context. Used by the Backpack adapter and, to train the demo's
//! Backpack, by the host.

use serde::Deserialize;
use tch::{Kind, Tensor};
use vene_api::{ComponentInfo, Hooks, ModelInputs, PluginResult, SiteLayout};
use vene_checkpoint::Weights;

use crate::{
    component,
    gpt2::{components as gpt2_components, Gpt2Body, Gpt2Config},
    Activation, LayerNorm, Linear, TokenBatch,
};

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
pub const SENSE_NETWORK_OUTPUT: u32 = 0;

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

/// The whole Backpack language model.
pub struct BackpackModel {
    body: Gpt2Body,
    senses: i64,
    activation: Activation,
    sense_ln: LayerNorm,
    block_ln_1: LayerNorm,
    block_ln_2: LayerNorm,
    block_mlp: BackpackMlp,
    final_mlp: BackpackMlp,
    weight_net: Linear,
}

/// The catalog: `sense_network_output`, then the GPT-2 body's sites.
pub fn components(config: &Gpt2Config) -> Vec<ComponentInfo> {
    let mut all = vec![component(
        "sense_network_output",
        SiteLayout::Senses,
        config.n_embd as u32,
        1,
        None,
        &["backpack.sense_network.output", "sense_network.output"],
    )];
    all.extend(gpt2_components(config, "backpack.gpt2_model."));
    all
}

impl BackpackModel {
    /// Loads from `weights` named from the model's root (`gpt2_model.…`, `sense_network.…`, `sense_weight_net.…`).
    pub fn load(weights: Weights, config: Gpt2Config, sense: SenseConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let mut weights = weights;
        let activation = Activation::from_name(&config.activation_function).ok_or_else(|| {
            format!("activation_function '{}' is not supported ({} are)", config.activation_function, Activation::NAMES)
        })?;
        let (d, eps, senses) = (config.n_embd, config.layer_norm_epsilon, sense.num_senses);
        if senses <= 0 || d % senses != 0 {
            return Err(format!("n_embd {d} is not divisible by num_senses {senses}").into());
        }
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
        weights.strip_prefixes(&["gpt2_model."]);
        let body = Gpt2Body::load(&mut weights, config, SENSE_NETWORK_OUTPUT + 1)?;
        Ok(Self { body, senses, activation, sense_ln, block_ln_1, block_ln_2, block_mlp, final_mlp, weight_net })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.body.config
    }

    pub fn wte(&self) -> &Tensor {
        self.body.wte()
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

    /// Next-token logits and the cache (the body's keys and values, then every position's senses and
    /// contextualisation keys); `inputs.past` continues from a previous call's cache.
    pub fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<(Tensor, Vec<Tensor>)> {
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
        present.push(all_senses);
        present.push(keys);
        Ok((crate::at_output_positions(&mixed, inputs)?.matmul(&self.body.wte().tr()), present))
    }
}
