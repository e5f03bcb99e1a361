//! `vene image-das`: rank-1 DAS versus a linear probe, block by block, for a binary attribute of photographs
//! (animal or not, by default) on an image classifier.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use vene_host::{
    outputs, real_model,
    studies::image_das::{image_das_study, AttributePhoto, ImageDasOptions, IMAGENET_ANIMALS},
    vision::{open_rgb, Preprocess},
};

use crate::common::{advance, finish_study, load_model, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct ImageDasArgs {
    /// An image classifier with block_output feature maps, e.g. efficientnet-lite0 (installed by the set-up).
    #[command(flatten)]
    model: ModelArgs,
    /// Photographs showing the attribute, comma-separated: image files or installed names (chelsea.png, horse.png).
    #[arg(long, default_value = "chelsea.png,horse.png")]
    positive: String,
    /// Photographs without it (installed: coffee.png, astronaut.png, rocket.jpg, motorcycle_left.png).
    #[arg(long, default_value = "coffee.png,astronaut.png,rocket.jpg,motorcycle_left.png")]
    negative: String,
    /// The attribute's name in the figures.
    #[arg(long, default_value = "animal")]
    attribute: String,
    /// The output classes whose total probability is the model's "yes", as FIRST-LAST ranges and ids,
    /// comma-separated (default: ImageNet's animals, 0-397).
    #[arg(long)]
    classes: Option<String>,
    /// Random crops drawn from each photograph.
    #[arg(long, default_value_t = 24)]
    crops: usize,
    /// Blocks to study, e.g. 0,4,8,15 (default: every block).
    #[arg(long, value_delimiter = ',')]
    blocks: Option<Vec<usize>>,
    /// DAS training pairs (a third as many are held out for evaluation).
    #[arg(long, default_value_t = 96)]
    pairs: usize,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// "0-397,400" → the ids.
fn parse_classes(text: &str) -> Result<Vec<i64>> {
    let mut classes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number =
            |s: &str| s.trim().parse::<i64>().map_err(|_| anyhow!("--classes: {part:?} is not ID or FIRST-LAST"));
        match part.split_once('-') {
            Some((first, last)) => classes.extend(number(first)?..=number(last)?),
            None => classes.push(number(part)?),
        }
    }
    Ok(classes)
}

fn photos(list: &str, positive: bool) -> Result<Vec<AttributePhoto>> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let path = real_model::photo(name)?;
            Ok(AttributePhoto { name: name.to_string(), image: open_rgb(&path)?, positive })
        })
        .collect()
}

pub fn run(args: ImageDasArgs) -> Result<()> {
    if args.crops == 0 || args.pairs == 0 || args.epochs == 0 {
        bail!("--crops, --pairs and --epochs must be at least 1");
    }
    outputs::prepare_dir(&args.out)?;
    let positive_classes = match &args.classes {
        Some(text) => parse_classes(text)?,
        None => IMAGENET_ANIMALS.collect(),
    };
    let mut all = photos(&args.positive, true)?;
    all.extend(photos(&args.negative, false)?);
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let preprocess = Preprocess::of_model(model.dir())?;
    let options = ImageDasOptions {
        attribute: args.attribute.clone(),
        positive_classes,
        crops_per_photo: args.crops,
        blocks: args.blocks.clone(),
        pairs: args.pairs,
        epochs: args.epochs,
        seed: args.seed,
    };
    let bar = progress_bar("DAS and probe {bar:40} {pos}/{len} blocks  [{elapsed} < {eta}]");
    let (study, _) = image_das_study(model, &plugins, &preprocess, &all, &options, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&study.output("image_das.json")?, &args.out)
}
