//! The `vene` command line: list plugins, show a model's hook sites, run, train and evaluate interventions,
//! generate, run the paper's studies on any model, and the demo. One module per command (or family of commands),
//! each with its clap `Args` beside the code that runs it; this file parses, dispatches and prints errors.

mod causal_model;
mod common;
mod demo;
mod generate;
mod inspect;
mod merge;
mod new_model;
mod run;
mod slurm;
mod studies;
mod train;
mod vector;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use studies::{
    attribute, channels, circuit, cnn_trace, das_probe, erase, image_das, interchange, interchange_search, ocr_steps,
    path_patch, scrub, senses, steer, steer_sentiment, timesteps, trace, vad_state,
};

#[derive(Parser)]
#[command(name = "vene", version, about = "Interventions on neural model internals (pyvene semantics, native plugins)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the loaded plugins with their versions and the types they provide.
    Plugins(inspect::PluginsArgs),
    /// Show a model's hook-site catalog.
    Sites(inspect::SitesArgs),
    /// Train the config's interventions on counterfactual data and save them; with --train-model, the model's own
    /// weights too (interchange intervention training).
    Train(train::TrainArgs),
    /// Interchange intervention accuracy of saved interventions on counterfactual data.
    Eval(train::EvalArgs),
    /// Write a steering vector (safetensors, key "vector"): a token's embedding, or mean(positive) - mean(negative)
    /// activations at the prompts' last token.
    Vector(vector::VectorArgs),
    /// Generate text with interventions on the prompt, on every decoding step, or both.
    Generate(generate::GenerateArgs),
    /// Multi-source interchange: tokens from several sources replace the base's at their positions (parallel), or
    /// pass along the chain of sources into the base (serial, one --hop per source); prints and saves the top-5 next
    /// tokens.
    Interchange(interchange::InterchangeArgs),
    /// The multi-source interchange searched over wordings and layers (parallel, and serial over layer pairs), every
    /// combination's top 5 recorded.
    InterchangeSearch(interchange_search::InterchangeSearchArgs),
    /// Steering during generation (ITI): a word's embedding × coefficient added to a component of every layer at
    /// every step; the steered and unsteered continuations side by side.
    Steer(steer::SteerArgs),
    /// Story openings steered towards words at every layer and step, a coefficient sweep, and the positive and
    /// negative word lists' probability along each continuation.
    SteerSentiment(steer_sentiment::SteerSentimentArgs),
    /// DAS versus a linear probe per layer × position, for a template with a {name} slot and classes of names.
    DasProbe(das_probe::DasProbeArgs),
    /// Recurrent models: zero a timestep, swap it from a source, and swap it across time, plotting the per-step
    /// effect on the last layer's hidden state.
    Timesteps(timesteps::TimestepsArgs),
    /// CRNN text recognisers: swap one rendered word's BiLSTM state (or CNN column) into another's at each time step
    /// and map which characters each step carries.
    OcrSteps(ocr_steps::OcrStepsArgs),
    /// Voice-activity models (Silero VAD): zero the LSTM state at a chunk of synthesised speech, or take it from
    /// silence, and plot the speech probability after it against the clean run.
    VadState(vad_state::VadStateArgs),
    /// Backpack models: scale each sense vector of a word and watch a target word's probability.
    Senses(senses::SensesArgs),
    /// Image classifiers: causal tracing over blocks × spatial regions of noised photographs, and each photo's
    /// regions swapped into the next; heatmaps and the regions drawn over the photos.
    CnnTrace(cnn_trace::CnnTraceArgs),
    /// Attribution patching: every node (component × layer × position, heads too) scored from one clean and one
    /// corrupted pass and a backward (AtP, or integrated gradients), the top nodes re-patched exactly.
    Attribute(attribute::AttributeArgs),
    /// Circuits: every edge between attention layers, MLPs and the logits scored by edge attribution (EAP or
    /// EAP-IG), the top edges patched alone exactly, and circuits of the top n edges run with every other edge
    /// patched from the corrupted prompts: a faithfulness curve and the circuit drawn.
    Circuit(circuit::CircuitArgs),
    /// Image classifiers: rank-1 DAS versus a linear probe, block by block, for a binary attribute of photographs
    /// (animal or not): where the attribute is causal, and where it is only decodable.
    ImageDas(image_das::ImageDasArgs),
    /// CNNs on Fashion-MNIST: zero each channel of a feature map and measure the true class's probability.
    Channels(channels::ChannelsArgs),
    /// The paper's studies on the real models (Gemma 3 270M; EasyOCR's CRNN, EfficientNet-Lite0, Silero VAD) and,
    /// on a toy Backpack built once and cached, the sense-vector study; writes a paper-style HTML report.
    Demo(demo::DemoArgs),
    /// Causal tracing: corrupt the subject, restore each site, and plot how much of the target comes back.
    Trace(trace::TraceArgs),
    /// A high-level causal model (JSON): check and show it, and write the factual and counterfactual data it
    /// generates as `vene train` lines.
    CausalModel(causal_model::CausalModelArgs),
    /// A freshly initialised model (pyvene's MLP) to train on a causal model's task.
    NewModel(new_model::NewModelArgs),
    /// Path patching (IOI-style): each sender head's effect along the direct path to the logits, or to later heads'
    /// query / key / value inputs, from clean and corrupted prompt pairs; heatmaps and the strongest heads.
    PathPatch(path_patch::PathPatchArgs),
    /// Amnesic probing: a class erased from one site (LEACE or INLP, fitted on training names), and what a fresh
    /// probe and the model itself still get right on held-out names.
    Erase(erase::EraseArgs),
    /// Causal scrubbing: a hypothesis's kept heads and MLPs resampled from same-class inputs, every other node from
    /// random ones; the loss it recovers against random hypotheses of its size.
    Scrub(scrub::ScrubArgs),
    /// Run an intervened forward pass and save its outputs.
    Run(run::RunArgs),
    /// Write the result of a sharded sweep (`--shard I/N` runs into one --out) once every shard is done: the same
    /// files as one process would write.
    Merge(merge::MergeArgs),
    /// Run a sweep as a Slurm job array, one task per shard, with the merge as a job after it; `vene slurm status
    /// OUT` shows the shards' progress.
    Slurm(slurm::SlurmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    common::configure_threads()?;
    match command {
        Command::Plugins(args) => inspect::plugins(args),
        Command::Sites(args) => inspect::sites(args),
        Command::Train(args) => train::train(args),
        Command::Eval(args) => train::eval(args),
        Command::Vector(args) => vector::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Interchange(args) => interchange::run(args),
        Command::InterchangeSearch(args) => interchange_search::run(args),
        Command::Steer(args) => steer::run(args),
        Command::SteerSentiment(args) => steer_sentiment::run(args),
        Command::DasProbe(args) => das_probe::run(args),
        Command::Timesteps(args) => timesteps::run(args),
        Command::OcrSteps(args) => ocr_steps::run(args),
        Command::VadState(args) => vad_state::run(args),
        Command::Senses(args) => senses::run(args),
        Command::Channels(args) => channels::run(args),
        Command::CnnTrace(args) => cnn_trace::run(args),
        Command::Attribute(args) => attribute::run(args),
        Command::Circuit(args) => circuit::run(args),
        Command::ImageDas(args) => image_das::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Trace(args) => trace::run(args),
        Command::CausalModel(args) => causal_model::run(args),
        Command::NewModel(args) => new_model::run(args),
        Command::PathPatch(args) => path_patch::run(args),
        Command::Scrub(args) => scrub::run(args),
        Command::Erase(args) => erase::run(args),
        Command::Run(args) => run::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Slurm(args) => slurm::run(args),
    }
}

/// The error and its causes on one line; a cause whose text the message already quotes is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}
