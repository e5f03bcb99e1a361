//! `vene plugins` and `vene sites`: what is loaded, and a model's hook-site catalog.

use anyhow::Result;
use clap::Args;
use vene_host::{interventions::builtin_types, model::LoadedModel, plugins::PluginSet};

use crate::common::{ModelArgs, PluginArgs};

#[derive(Args)]
pub struct PluginsArgs {
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct SitesArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn plugins(args: PluginsArgs) -> Result<()> {
    list_plugins(&args.plugins.load()?)
}

pub fn sites(args: SitesArgs) -> Result<()> {
    show_sites(&args.model.load(&args.plugins.load()?)?)
}

fn list_plugins(plugins: &PluginSet) -> Result<()> {
    if plugins.plugins().is_empty() {
        println!("no plugins found (searched the executable's directory, VENE_PLUGIN_PATH and --plugin-dir)");
    }
    for plugin in plugins.plugins() {
        let build = &plugin.build;
        println!("{} {}  ({})", build.plugin_name, build.plugin_version, plugin.path.display());
        println!("  built against vene-api {}, tch {}, libtorch {}", build.vene_api, build.tch, build.libtorch);
        if !plugin.model_types.is_empty() {
            println!("  model types: {}", plugin.model_types.join(", "));
        }
        if !plugin.intervention_types.is_empty() {
            println!("  intervention types: {}", plugin.intervention_types.join(", "));
        }
    }
    if !plugins.skipped().is_empty() {
        println!("skipped:");
        for skipped in plugins.skipped() {
            println!("  {}: {}", skipped.path.display(), skipped.reason);
        }
    }
    println!("built-in intervention types:");
    for builtin in builtin_types() {
        println!("  {:<12} {}", builtin.name, builtin.summary);
    }
    Ok(())
}

fn show_sites(model: &LoadedModel) -> Result<()> {
    let catalog = model.catalog();
    println!(
        "{}: {} layers, {} heads, hidden size {}{}  (plugin {})",
        catalog.model_type,
        catalog.num_layers,
        catalog.num_heads,
        catalog.hidden_size,
        if catalog.vocab_size > 0 { format!(", vocabulary {}", catalog.vocab_size) } else { String::new() },
        model.plugin_path().display()
    );
    println!("{:<30} {:<18} {:>6} {:>6}  {:<12} module paths", "component", "layout", "dim", "layers", "units");
    for component in catalog.components.iter() {
        let paths: Vec<&str> = component.module_paths.iter().map(|p| p.as_str()).collect();
        println!(
            "{:<30} {:<18} {:>6} {:>6}  {:<12} {}",
            component.name.as_str(),
            format!("{:?}", component.layout),
            component.dim,
            component.layers,
            component.layout.units().join(","),
            paths.join(" ")
        );
    }
    Ok(())
}
