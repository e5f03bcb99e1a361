//! Criterion benches of vene's intervention overhead on a GPT-2 with seeded random weights, on the CPU: plain and
//! intervened forwards, one host ↔ plugin call, a DAS training step, greedy generation with an intervention on every
//! step, and a whole causal trace.
//!
//! The model is GPT-2-small shaped (12 layers, 768 wide, 50257 words; batch 8 × 64 tokens) unless
//! `VENE_BENCH_SHAPE=tiny` asks for a 4-layer, 64-wide one (quick runs). It is written once to the temporary directory
//! in Hugging Face layout and loaded through the GPT-2 adapter plugin, so the benches measure the real loading and
//! plugin paths. `VENE_BENCH_SHAPE=gemma3-270m` runs the same workloads (batch 8 × 32 tokens) on the real model, its
//! GGUF through the Llama-family adapter, and times loading it. `VENE_BENCH_SHAPE=gpt2-xl` (and the two Pythia-6.9B
//! shapes, see [`Shape::from_env`]) measure one pass and one DAS step at the paper's sizes.
//! Build the plugins first: `cargo build --workspace --release`, then `cargo bench --bench engine`.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tch::{Device, Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec, Hooks, ModelInputs};
use vene_host::{
    config::IntervenableConfig,
    demo::language_model::{self, LmRecipe},
    engine::IntervenableModel,
    generate::{self, Sampling},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::{PluginSearch, PluginSet},
    studies::tracing::{self, TraceOptions},
};
use vene_nn::{gpt2::Gpt2Body, TokenBatch};

/// GPT-2's context length.
const POSITIONS: i64 = 1024;

/// The traced prompt's length and its subject's positions (pyvene's noise table covers 4 positions).
const TRACE_TOKENS: i64 = 10;
const TRACE_SUBJECT: (usize, usize) = (1, 5);

/// Model and batch sizes of one bench run.
struct Shape {
    name: &'static str,
    layers: i64,
    width: i64,
    heads: i64,
    vocab: i64,
    batch: i64,
    tokens: i64,
    /// The real Gemma 3 270M rather than a random GPT-2.
    real: bool,
    /// A shape of the paper's models, for the cost of one pass and one DAS step only (see [`passes`]).
    paper: bool,
}

impl Shape {
    fn tiny() -> Self {
        Shape {
            name: "tiny",
            layers: 4,
            width: 64,
            heads: 4,
            vocab: 1000,
            batch: 8,
            tokens: 64,
            real: false,
            paper: false,
        }
    }

    fn from_env() -> Self {
        match std::env::var("VENE_BENCH_SHAPE").as_deref() {
            Ok("tiny") => Shape::tiny(),
            Ok("gemma3-270m") => Shape {
                name: "gemma3-270m",
                layers: 18,
                width: 640,
                heads: 4,
                vocab: 262144,
                batch: 8,
                tokens: 32,
                real: true,
                paper: false,
            },
            // GPT-2 XL, the paper's tracing model, at full size; prompts of CounterFact's typical 10 tokens.
            Ok("gpt2-xl") => Shape::paper("gpt2-xl", 48, 1600, 25, 50257, 10),
            // Pythia-6.9B's width, heads and vocabulary in GPT-2 blocks (the same matrix products per layer) at 2 and
            // 4 layers: the whole model does not fit this machine's memory in f32, so BENCHMARKS.md extrapolates
            // its 32 layers from the difference. Prompts of the gender template's 6 tokens.
            Ok("pythia-6.9b-2-layers") => Shape::paper("pythia-6.9b-2-layers", 2, 4096, 32, 50432, 6),
            Ok("pythia-6.9b-4-layers") => Shape::paper("pythia-6.9b-4-layers", 4, 4096, 32, 50432, 6),
            _ => Shape {
                name: "gpt2-small",
                layers: 12,
                width: 768,
                heads: 12,
                vocab: 50257,
                batch: 8,
                tokens: 64,
                real: false,
                paper: false,
            },
        }
    }

    fn paper(name: &'static str, layers: i64, width: i64, heads: i64, vocab: i64, tokens: i64) -> Self {
        Shape { name, layers, width, heads, vocab, batch: 8, tokens, real: false, paper: true }
    }

    /// The adapter plugin that loads this shape's model.
    fn adapter(&self) -> &'static str {
        if self.real {
            "vene_llama"
        } else {
            "vene_gpt2"
        }
    }

    /// The model: the installed GGUF of the real one, else a random GPT-2 written once.
    fn model_path(&self) -> PathBuf {
        if self.real {
            vene_host::real_model::gemma3_270m().unwrap_or_else(|e| panic!("{e}"))
        } else {
            random_gpt2(self)
        }
    }
}

/// `target/release`: the bench binary lives in its `deps/` folder, the plugins beside it.
fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

fn plugins(names: &[&str]) -> PluginSet {
    let mut set = PluginSet::load(&PluginSearch::in_dirs(&[])).expect("empty plugin set");
    for name in names {
        let path = plugin_dir().join(format!("lib{name}.so"));
        set.add_library(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo build --workspace --release`)", path.display()));
    }
    set
}

/// Writes a GPT-2 of `shape` with seeded random weights (once per shape) and returns its directory.
fn random_gpt2(shape: &Shape) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vene-bench-{}", shape.name));
    if !dir.join("model.safetensors").exists() {
        let recipe = LmRecipe {
            layers: shape.layers,
            width: shape.width,
            heads: shape.heads,
            positions: POSITIONS,
            ..LmRecipe::default()
        };
        language_model::write_untrained(&dir, &recipe, shape.vocab).expect("bench model written");
    }
    dir
}

fn token_ids(shape: &Shape, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(shape.vocab, [shape.batch, shape.tokens], (Kind::Int64, Device::Cpu))
}

fn intervenable(dir: &Path, plugins: &PluginSet, config: serde_json::Value) -> IntervenableModel {
    let model = LoadedModel::load(plugins, dir, DeviceSpec::CPU, DTypeSpec::F32).expect("bench model loads");
    let config: IntervenableConfig = serde_json::from_value(config).expect("bench config parses");
    IntervenableModel::new(model, config, plugins, 0).expect("interventions bind")
}

/// Every position of every example, for each of `sites` representations.
fn all_positions(shape: &Shape, sites: usize, with_source: bool) -> UnitLocations {
    locations(shape, (0..shape.tokens).collect(), sites, with_source)
}

/// `positions` of every example, for each of `sites` representations.
fn locations(shape: &Shape, positions: Vec<i64>, sites: usize, with_source: bool) -> UnitLocations {
    let per_site = vec![vec![positions; shape.batch as usize]; sites];
    let value =
        if with_source { json!({"sources->base": [per_site.clone(), per_site]}) } else { json!({"base": per_site}) };
    UnitLocations::parse(Some(&value)).expect("unit locations parse")
}

/// GPT-2's body called directly, with no plugin boundary and no engine.
fn direct_gpt2(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    shape: &Shape,
    dir: &Path,
    ids: &Tensor,
) {
    let mut weights = vene_checkpoint::Weights::load(dir, Device::Cpu, Kind::Float).expect("weights load");
    let config = vene_checkpoint::read_config(dir).expect("config reads");
    let body = Gpt2Body::load(&mut weights, config, 0).expect("GPT-2 body loads");
    group.bench_function("direct_tch", |b| {
        b.iter(|| {
            let inputs = ModelInputs::token_ids(ids);
            let tokens = TokenBatch::from_inputs(&inputs, shape.vocab, POSITIONS, body.layers(), Device::Cpu).unwrap();
            let (hidden, _) = body.forward(&tokens, &mut Hooks::none()).unwrap();
            hidden.matmul(&body.wte().tr())
        })
    });
}

fn forward(c: &mut Criterion) {
    let shape = Shape::from_env();
    if shape.paper {
        return;
    }
    let dir = shape.model_path();
    let plugins = plugins(&[shape.adapter(), "vene_das"]);
    let base = ForwardInputs::from_ids(token_ids(&shape, 1));
    let source = ForwardInputs::from_ids(token_ids(&shape, 2));
    let _no_grad = tch::no_grad_guard();
    let mut group = c.benchmark_group(format!("forward/{}", shape.name));
    group.sample_size(10);

    let ids = base.input_ids.as_ref().expect("token ids").shallow_clone();
    if !shape.real {
        direct_gpt2(&mut group, &shape, &dir, &ids);
    }
    // The adapter's own forward with no site active: the plugin boundary, but not the engine.
    let loaded = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).expect("bench model loads");
    group.bench_function("adapter_forward", |b| b.iter(|| loaded.forward_plain(&base).unwrap().output));
    drop(loaded);

    let mut plain = intervenable(&dir, &plugins, json!({"representations": []}));
    let none = UnitLocations::parse(None).expect("no locations");
    group.bench_function("engine_no_intervention", |b| {
        b.iter(|| plain.run(&base, &[], &none, &Subspaces::None).unwrap().output)
    });

    let vector: Vec<f32> = (0..shape.width).map(|i| (i % 7) as f32 * 0.01).collect();
    let addition = |layer: i64| {
        json!({"layer": layer, "component": "block_output", "intervention": {"type": "addition"},
               "source_representation": vector})
    };
    let mut one_site = intervenable(&dir, &plugins, json!({"representations": [addition(shape.layers / 2)]}));
    let one = all_positions(&shape, 1, false);
    group.bench_function("addition_one_site", |b| {
        b.iter(|| one_site.run(&base, &[], &one, &Subspaces::None).unwrap().output)
    });

    let every: Vec<_> = (0..shape.layers).map(addition).collect();
    let mut every_layer = intervenable(&dir, &plugins, json!({"representations": every}));
    let per_layer = all_positions(&shape, shape.layers as usize, false);
    group.bench_function("addition_every_layer", |b| {
        b.iter(|| every_layer.run(&base, &[], &per_layer, &Subspaces::None).unwrap().output)
    });

    let sources = [Some(source)];
    let one_source = all_positions(&shape, 1, true);
    let mut vanilla = intervenable(
        &dir,
        &plugins,
        json!({"representations": [{"layer": shape.layers / 2, "component": "block_output",
                                    "intervention": {"type": "vanilla"}}]}),
    );
    group.bench_function("vanilla_interchange_with_source_pass", |b| {
        b.iter(|| vanilla.run(&base, &sources, &one_source, &Subspaces::None).unwrap().output)
    });

    let mut das = intervenable(
        &dir,
        &plugins,
        json!({"representations": [{"layer": shape.layers / 2, "component": "block_output", "low_rank_dimension": 1,
                                    "intervention": {"type": "low_rank_rotated_space"}}]}),
    );
    // DAS rotates one position's vector (as pyvene without keep_last_dim): the last token's.
    let last = locations(&shape, vec![shape.tokens - 1], 1, true);
    group.bench_function("das_rank1_last_position_with_source_pass", |b| {
        b.iter(|| das.run(&base, &sources, &last, &Subspaces::None).unwrap().output)
    });

    // One head's value output zeroed at the last position (pyvene's "h.pos" unit; pyvene needs as many heads as
    // positions per example).
    let mut head = intervenable(
        &dir,
        &plugins,
        json!({"representations": [{"layer": shape.layers / 2, "component": "head_attention_value_output",
                                    "unit": "h.pos", "intervention": {"type": "zero"}}]}),
    );
    let rows = shape.batch as usize;
    let heads_and_positions = json!({"base": [[vec![vec![0i64]; rows], vec![vec![shape.tokens - 1]; rows]]]});
    let head_locations = UnitLocations::parse(Some(&heads_and_positions)).expect("head locations parse");
    group.bench_function("zero_one_head_one_site", |b| {
        b.iter(|| head.run(&base, &[], &head_locations, &Subspaces::None).unwrap().output)
    });
    group.finish();
}

/// One training step of a rank-1 DAS rotation at the middle layer's last position: the source and base passes, the
/// cross-entropy of the last token's logits against fixed labels, backward into the rotation, one Adam step.
fn das_training_step(c: &mut Criterion) {
    let shape = Shape::from_env();
    let dir = shape.model_path();
    let plugins = plugins(&[shape.adapter(), "vene_das"]);
    // Only the last position's logits are read, as `vene train` asks of the adapter.
    let base = ForwardInputs::from_ids(token_ids(&shape, 1)).reading_last_position();
    let sources = [Some(ForwardInputs::from_ids(token_ids(&shape, 2)))];
    let labels = token_ids(&shape, 3).select(1, 0);
    let mut das = intervenable(
        &dir,
        &plugins,
        json!({"representations": [{"layer": shape.layers / 2, "component": "block_output", "low_rank_dimension": 1,
                                    "intervention": {"type": "low_rank_rotated_space"}}]}),
    );
    das.set_training(true);
    let last = locations(&shape, vec![shape.tokens - 1], 1, true);
    let mut optimizer = tch::COptimizer::adam(1e-3, 0.9, 0.999, 0.0, 1e-8, false).expect("Adam");
    for (_, parameter) in das.parameters().expect("DAS parameters") {
        optimizer.add_parameters(&parameter, 0).expect("parameter added");
    }
    let mut group = c.benchmark_group(format!("training/{}", shape.name));
    group.sample_size(10);
    group.bench_function("das_rank1_step", |b| {
        b.iter(|| {
            optimizer.zero_grad().unwrap();
            let logits = das.run(&base, &sources, &last, &Subspaces::None).unwrap().output.select(1, -1);
            let loss = logits.cross_entropy_for_logits(&labels);
            loss.backward();
            optimizer.step().unwrap();
            loss.double_value(&[])
        })
    });
    group.finish();
}

/// Greedy decoding of 32 tokens after an 8-token prompt with the key/value cache, adding a vector to every layer's
/// MLP output on the prompt and on every step (ITI-style steering).
fn generation(c: &mut Criterion) {
    let shape = Shape::from_env();
    if shape.paper {
        return;
    }
    let dir = shape.model_path();
    let plugins = plugins(&[shape.adapter()]);
    let vector: Vec<f32> = (0..shape.width).map(|i| (i % 5) as f32 * 0.01).collect();
    let steer: Vec<_> = (0..shape.layers)
        .map(|layer| {
            json!({"layer": layer, "component": "mlp_output", "intervention": {"type": "addition"},
                   "source_representation": vector})
        })
        .collect();
    let mut model = intervenable(&dir, &plugins, json!({"representations": steer}));
    let prompt: Vec<i64> = (0..8).map(|i| (i * 131 + 7) % shape.vocab).collect();
    let everywhere = UnitLocations::parse(None).expect("no locations");
    let sampling = Sampling { max_new_tokens: 32, ..Sampling::default() };
    let _no_grad = tch::no_grad_guard();
    let mut group = c.benchmark_group(format!("generation/{}", shape.name));
    group.sample_size(10);
    group.bench_function("greedy_32_tokens_steered_every_layer", |b| {
        b.iter(|| {
            generate::generate(&mut model, &prompt, &[], &everywhere, &Subspaces::None, &sampling, |_| ()).unwrap()
        })
    });
    group.finish();
}

/// One call into an intervention: the built-in `addition` runs in the host, `steering` in its plugin; both add a
/// vector to a 1 × 8 tensor, so the difference is the cost of crossing the boundary.
fn boundary(c: &mut Criterion) {
    let shape = Shape { batch: 1, tokens: 1, ..Shape::tiny() };
    let dir = random_gpt2(&shape);
    let plugins = plugins(&["vene_gpt2", "vene_steering"]);
    let vector: Vec<f32> = (0..shape.width).map(|i| i as f32).collect();
    let mut builtin = intervenable(
        &dir,
        &plugins,
        json!({"representations": [{"layer": 0, "component": "block_output", "intervention": {"type": "addition"},
                                    "source_representation": vector}]}),
    );
    let mut plugin = intervenable(
        &dir,
        &plugins,
        json!({"representations": [{"layer": 0, "component": "block_output",
                                    "intervention": {"type": "steering", "coefficient": 1.0, "vector": vector}}]}),
    );
    let base = Tensor::ones([1, shape.width], (Kind::Float, Device::Cpu));
    let source = Tensor::from_slice(&vector).view([1, shape.width]);
    let _no_grad = tch::no_grad_guard();
    let mut group = c.benchmark_group("boundary");
    group.bench_function("builtin_apply", |b| {
        b.iter(|| builtin.intervention_mut(0).apply(&base, Some(&source), None).unwrap())
    });
    group.bench_function("plugin_apply", |b| b.iter(|| plugin.intervention_mut(0).apply(&base, None, None).unwrap()));
    group.finish();
}

/// The paper's causal tracing of one 10-token prompt with a 4-token subject: the corrupted run, then the block, MLP
/// (window 10) and attention (window 10) sweeps over every layer × position, one noise sample. On the tiny model
/// only: one trace of the GPT-2-small shape takes about a minute here, ten samples would take ten.
fn tracing(c: &mut Criterion) {
    let shape = Shape::tiny();
    let dir = random_gpt2(&shape);
    let plugins = plugins(&["vene_gpt2"]);
    let tokens: Vec<i64> = (0..TRACE_TOKENS).map(|i| (i * 37 + 11) % shape.vocab).collect();
    let options = TraceOptions { samples: 1, ..TraceOptions::default() };
    let mut slot = Some(LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).expect("bench model loads"));
    let mut group = c.benchmark_group(format!("tracing/{}", shape.name));
    group.sample_size(10);
    group.bench_function("three_sweeps", |b| {
        b.iter(|| {
            let model = slot.take().expect("the model is returned after each trace");
            let (trace, model) =
                tracing::trace(model, &plugins, &tokens, TRACE_SUBJECT, 42, &options, |_, _| ()).expect("traces");
            slot = Some(model);
            trace.clean
        })
    });
    group.finish();
}

/// Loading the real model: reading the GGUF, dequantizing every tensor to f32, building the decoder (only with
/// `VENE_BENCH_SHAPE=gemma3-270m`; scripts/compare_gemma3.py also reports the peak memory of a load).
fn loading(c: &mut Criterion) {
    let shape = Shape::from_env();
    if !shape.real {
        return;
    }
    let path = shape.model_path();
    let plugins = plugins(&[shape.adapter()]);
    let mut group = c.benchmark_group(format!("loading/{}", shape.name));
    group.sample_size(10);
    group.bench_function("gguf_to_f32", |b| {
        b.iter(|| LoadedModel::load(&plugins, &path, DeviceSpec::CPU, DTypeSpec::F32).expect("the model loads"))
    });
    group.finish();
}

/// With a paper shape (`VENE_BENCH_SHAPE=gpt2-xl`, `pythia-6.9b-2-layers`, `pythia-6.9b-4-layers`): the cost of one
/// pass as pyvene's tutorial loop runs it (one prompt per forward) and as vene batches restorations (8 prompts per
/// forward), for BENCHMARKS.md's scale on paper.
fn passes(c: &mut Criterion) {
    let shape = Shape::from_env();
    if !shape.paper {
        return;
    }
    let dir = shape.model_path();
    let plugins = plugins(&[shape.adapter()]);
    let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).expect("bench model loads");
    let batch = ForwardInputs::from_ids(token_ids(&shape, 1)).reading_last_position();
    let one = ForwardInputs::from_ids(token_ids(&Shape { batch: 1, ..shape }, 1)).reading_last_position();
    let _no_grad = tch::no_grad_guard();
    let mut group = c.benchmark_group(format!("passes/{}", shape.name));
    group.sample_size(10);
    group.bench_function("one_prompt", |b| b.iter(|| model.forward_plain(&one).unwrap().output));
    group.bench_function("batch_of_8_prompts", |b| b.iter(|| model.forward_plain(&batch).unwrap().output));
    group.finish();
}

criterion_group!(benches, boundary, forward, das_training_step, generation, tracing, loading, passes);
criterion_main!(benches);
