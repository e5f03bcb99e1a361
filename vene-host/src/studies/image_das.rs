//! DAS versus a probe on an image classifier: is a binary attribute of the photo (animal or not) *causal* at a
//! block, or only *decodable* there? Random crops of labelled photographs are the data; the model's own decision
//! for the attribute is the total probability of the attribute's classes (ImageNet's animals are classes 0–397).
//!
//! Per block: a rank-1 DAS subspace of the block's channels, shared by every spatial position, is trained so that
//! swapping it from a source crop into a base crop of the other kind flips the model's decision to the source's
//! (held-out IIA); and a logistic probe reads the attribute from the block's spatially averaged channels
//! (held-out accuracy). Only crops the plain model decides correctly are used, as DAS studies the model's behaviour.

use rand::{seq::SliceRandom, Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{bind, output::Figure, probe::logistic_probe_accuracy};
use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    optim::Adam,
    plugins::PluginSet,
    vision::{photo_pixels, random_crops, Preprocess},
};

/// ImageNet-1k's animal classes (tench … mongoose, then the insects and sea creatures up to 397).
pub const IMAGENET_ANIMALS: std::ops::Range<i64> = 0..398;

/// A photograph and whether it shows the attribute.
pub struct AttributePhoto {
    pub name: String,
    pub image: image::RgbImage,
    pub positive: bool,
}

/// What to study and how much to train.
#[derive(Debug, Clone)]
pub struct ImageDasOptions {
    /// The attribute's name, e.g. "animal".
    pub attribute: String,
    /// The output classes whose total probability is the model's "yes".
    pub positive_classes: Vec<i64>,
    pub crops_per_photo: usize,
    /// Blocks studied (default: every block).
    pub blocks: Option<Vec<usize>>,
    /// Training pairs (base and source of opposite kinds) drawn from the training crops.
    pub pairs: usize,
    pub epochs: usize,
    pub seed: u64,
}

/// How one photograph's crops were used.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoCrops {
    pub name: String,
    pub positive: bool,
    pub drawn: usize,
    /// Crops the plain model decides correctly (the others are dropped).
    pub kept: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageDasStudy {
    pub attribute: String,
    pub photos: Vec<PhotoCrops>,
    pub train_crops: usize,
    pub test_crops: usize,
    pub train_pairs: usize,
    pub eval_pairs: usize,
    /// The probe's test accuracy of always answering the larger kind.
    pub majority_baseline: f64,
    pub blocks: Vec<usize>,
    /// Per studied block.
    pub das_iia: Vec<f64>,
    pub probe_accuracy: Vec<f64>,
    /// A few kept crops with their kind, for the figure.
    #[serde(skip)]
    samples: Vec<(String, image::RgbImage)>,
}

/// The crops the study uses: pixels `(n, 3, h, w)`, kinds, and which are held out; how each photo's crops fared,
/// and one kept crop of each photo for the figure.
struct CropSet {
    pixels: Tensor,
    positive: Vec<bool>,
    test: Vec<bool>,
    photos: Vec<PhotoCrops>,
    samples: Vec<(String, image::RgbImage)>,
}

/// (base, source) crop indices for training and for evaluation.
struct Pairs {
    train: Vec<(i64, i64)>,
    eval: Vec<(i64, i64)>,
}

/// Runs the study over `photos` (at least one of each kind).
pub fn image_das_study(
    model: LoadedModel,
    plugins: &PluginSet,
    preprocess: &Preprocess,
    photos: &[AttributePhoto],
    options: &ImageDasOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<(ImageDasStudy, LoadedModel)> {
    let size = preprocess.crop.ok_or_else(|| VeneError::Config("preprocess needs a crop size for photos".into()))?;
    if !photos.iter().any(|p| p.positive) || photos.iter().all(|p| p.positive) {
        return Err(VeneError::Inputs(format!(
            "DAS on \"{}\" needs photos with and without it (at least one of each)",
            options.attribute
        )));
    }
    let decide = Decision::new(&model, &options.positive_classes, size)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let crops = keep_decided_crops(&model, preprocess, photos, size, &decide, options, &mut rng)?;
    let blocks = studied_blocks(&model, options.blocks.as_deref())?;
    let pairs = crop_pairs(&crops, options.pairs, &mut rng);
    let mut model = model;
    let (mut das_iia, mut probe_accuracy) = (Vec::new(), Vec::new());
    for (done, &block) in blocks.iter().enumerate() {
        // One collecting pass per block: DAS swaps the per-position map, the probe reads its spatial mean.
        let (map, returned) = block_activations(model, plugins, &crops, block)?;
        let accuracy = probe_accuracy_on(&map.mean_dim(1, false, Kind::Float), &crops)?;
        let (iia, returned) = das_at_block(returned, plugins, &crops, (block, &map), &pairs, &decide, options)?;
        model = returned;
        das_iia.push(iia);
        probe_accuracy.push(accuracy);
        progress(done + 1, blocks.len());
    }
    let test_kinds: Vec<bool> = crops.positive.iter().zip(&crops.test).filter(|(_, &t)| t).map(|(&p, _)| p).collect();
    let positives = test_kinds.iter().filter(|&&p| p).count();
    let study = ImageDasStudy {
        attribute: options.attribute.clone(),
        photos: crops.photos.clone(),
        train_crops: crops.test.iter().filter(|&&t| !t).count(),
        test_crops: test_kinds.len(),
        train_pairs: pairs.train.len(),
        eval_pairs: pairs.eval.len(),
        majority_baseline: positives.max(test_kinds.len() - positives) as f64 / test_kinds.len().max(1) as f64,
        blocks,
        das_iia,
        probe_accuracy,
        samples: crops.samples.clone(),
    };
    Ok((study, model))
}

/// The model's yes/no for the attribute as two logits: log total probability of the other classes, of its classes.
struct Decision {
    negative: Tensor,
    positive: Tensor,
}

impl Decision {
    /// Checks the classes against the model's outputs (counted on one blank image of `size` pixels).
    fn new(model: &LoadedModel, positive_classes: &[i64], size: u32) -> Result<Self> {
        let blank = Tensor::zeros([1, 3, i64::from(size), i64::from(size)], (Kind::Float, model.device()));
        let outputs = {
            let _no_grad = tch::no_grad_guard();
            *model.forward_plain(&ForwardInputs::from_features(blank))?.output.size().last().unwrap_or(&0)
        };
        if let Some(bad) = positive_classes.iter().find(|&&c| c < 0 || c >= outputs) {
            return Err(VeneError::Inputs(format!("class {bad} is outside the model's {outputs} outputs")));
        }
        let negative: Vec<i64> = (0..outputs).filter(|c| !positive_classes.contains(c)).collect();
        if positive_classes.is_empty() || negative.is_empty() {
            return Err(VeneError::Inputs("the attribute's classes must be some, not all, of the outputs".into()));
        }
        let device = model.device();
        Ok(Self {
            negative: Tensor::from_slice(&negative).to_device(device),
            positive: Tensor::from_slice(positive_classes).to_device(device),
        })
    }

    fn logits(&self, logits: &Tensor) -> Tensor {
        let logits = logits.to_kind(Kind::Float);
        let side = |classes: &Tensor| logits.index_select(1, classes).logsumexp([1], false);
        Tensor::stack(&[side(&self.negative), side(&self.positive)], 1)
    }
}

/// Draws each photo's crops, keeps those the plain model decides correctly, and holds out every third kept crop.
fn keep_decided_crops(
    model: &LoadedModel,
    preprocess: &Preprocess,
    photos: &[AttributePhoto],
    size: u32,
    decide: &Decision,
    options: &ImageDasOptions,
    rng: &mut impl Rng,
) -> Result<CropSet> {
    let _no_grad = tch::no_grad_guard();
    let (mut pixels, mut positive, mut report, mut samples) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for photo in photos {
        let images = random_crops(&photo.image, options.crops_per_photo, size, rng);
        let batch = Tensor::cat(&images.iter().map(|i| photo_pixels(i, preprocess)).collect::<Result<Vec<_>>>()?, 0);
        let logits = model.forward_plain(&ForwardInputs::from_features(batch.to_device(model.device())))?.output;
        let says_yes = Vec::<i64>::try_from(&decide.logits(&logits).argmax(-1, false))?;
        let kept: Vec<usize> = (0..images.len()).filter(|&i| (says_yes[i] == 1) == photo.positive).collect();
        if let Some(&first) = kept.first() {
            samples.push((photo.name.clone(), images[first].clone()));
        }
        pixels.extend(kept.iter().map(|&i| batch.get(i as i64)));
        positive.extend(kept.iter().map(|_| photo.positive));
        report.push(PhotoCrops {
            name: photo.name.clone(),
            positive: photo.positive,
            drawn: images.len(),
            kept: kept.len(),
        });
    }
    let test: Vec<bool> = (0..positive.len()).map(|i| i % 3 == 2).collect();
    let both_kinds = |held_out: bool| {
        let kinds: Vec<bool> = positive.iter().zip(&test).filter(|(_, &t)| t == held_out).map(|(&p, _)| p).collect();
        kinds.contains(&true) && kinds.contains(&false)
    };
    if !both_kinds(false) || !both_kinds(true) {
        return Err(VeneError::Inputs(format!(
            "too few crops the model decides correctly to train and test on both kinds ({}); draw more crops per \
             photo or use photos the model classifies as they are labelled",
            report.iter().map(|p| format!("{} kept {}/{}", p.name, p.kept, p.drawn)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(CropSet { pixels: Tensor::stack(&pixels, 0), positive, test, photos: report, samples })
}

fn studied_blocks(model: &LoadedModel, asked: Option<&[usize]>) -> Result<Vec<usize>> {
    let component = model.catalog().components.iter().find(|c| c.name.as_str() == "block_output");
    let count = component.map(|c| c.layers as usize).ok_or_else(|| {
        VeneError::Config("DAS on an image attribute needs a model with block_output feature maps".into())
    })?;
    let blocks = asked.map_or_else(|| (0..count).collect(), <[usize]>::to_vec);
    if let Some(bad) = blocks.iter().find(|&&b| b >= count) {
        return Err(VeneError::Inputs(format!("block {bad} does not exist: the model has blocks 0..{count}")));
    }
    Ok(blocks)
}

/// Training pairs from the training crops and evaluation pairs from the held-out ones: (base, source) of opposite
/// kinds; each set every such pair, shuffled, at most `train_pairs` (a third of it for evaluation).
fn crop_pairs(crops: &CropSet, train_pairs: usize, rng: &mut impl Rng) -> Pairs {
    let mut pairs_of = |held_out: bool, limit: usize| {
        let members: Vec<usize> = (0..crops.test.len()).filter(|&i| crops.test[i] == held_out).collect();
        let mut pairs: Vec<(i64, i64)> = members
            .iter()
            .flat_map(|&b| members.iter().map(move |&s| (b, s)))
            .filter(|&(b, s)| crops.positive[b] != crops.positive[s])
            .map(|(b, s)| (b as i64, s as i64))
            .collect();
        pairs.shuffle(rng);
        pairs.truncate(limit);
        pairs
    };
    Pairs { train: pairs_of(false, train_pairs), eval: pairs_of(true, train_pairs.div_ceil(3)) }
}

/// Every spatial position of a block, for each of `batch` examples: the swap covers the whole map.
fn whole_map(batch: usize, positions: i64) -> Result<UnitLocations> {
    let all: Vec<Vec<i64>> = vec![(0..positions).collect(); batch];
    UnitLocations::parse(Some(&json!({"sources->base": [[all], [all]]})))
}

/// Held-out IIA of rank-1 DAS over the channels of `block`'s output.
fn das_at_block(
    model: LoadedModel,
    plugins: &PluginSet,
    crops: &CropSet,
    (block, activations): (usize, &Tensor),
    Pairs { train, eval }: &Pairs,
    decide: &Decision,
    options: &ImageDasOptions,
) -> Result<(f64, LoadedModel)> {
    let positions = activations.size()[1];
    // One channel direction, shared by every position of the map (pyvene's keep_last_dim).
    let mut das = bind(
        model,
        plugins,
        json!({"representations": [{"layer": block, "component": "block_output", "unit": "pos",
            "max_number_of_units": positions, "low_rank_dimension": 1,
            "intervention": {"type": "low_rank_rotated_space", "keep_last_dim": true}}]}),
    )?;
    let device = das.model().device();
    let run = |das: &mut crate::engine::IntervenableModel, pairs: &[(i64, i64)]| -> Result<(Tensor, Tensor)> {
        let (bases, sources): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        let (bases, sources) = (Tensor::from_slice(&bases), Tensor::from_slice(&sources));
        let base = ForwardInputs::from_features(crops.pixels.index_select(0, &bases).to_device(device));
        let source = activations.index_select(0, &sources).to_device(device);
        let locations = whole_map(pairs.len(), positions)?;
        let output = das.run_with_activations(&base, vec![Some(source)], &locations, &Subspaces::None)?.output;
        let wanted: Vec<i64> = pairs.iter().map(|&(_, s)| i64::from(crops.positive[s as usize])).collect();
        Ok((decide.logits(&output), Tensor::from_slice(&wanted).to_device(device)))
    };
    let mut optimizer = Adam::new(das.parameters()?, 0.01, (0.9, 0.999), 1e-8);
    let mut order = train.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed + block as u64);
    das.set_training(true);
    for _ in 0..options.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(8) {
            optimizer.zero_grad();
            let (logits, wanted) = run(&mut das, batch)?;
            logits.cross_entropy_for_logits(&wanted).backward();
            optimizer.step();
        }
    }
    das.set_training(false);
    let _no_grad = tch::no_grad_guard();
    let mut correct = 0i64;
    for batch in eval.chunks(16) {
        let (logits, wanted) = run(&mut das, batch)?;
        correct += logits.argmax(-1, false).eq_tensor(&wanted).sum(Kind::Int64).int64_value(&[]);
    }
    Ok((correct as f64 / eval.len().max(1) as f64, das.into_model()))
}

/// `block`'s output for every crop as DAS reads it: `(n, positions, channels)`.
fn block_activations(
    model: LoadedModel,
    plugins: &PluginSet,
    crops: &CropSet,
    block: usize,
) -> Result<(Tensor, LoadedModel)> {
    let mut collector = bind(
        model,
        plugins,
        json!({"representations": [{"layer": block, "component": "block_output", "intervention": {"type": "collect"}}]}),
    )?;
    let _no_grad = tch::no_grad_guard();
    let device = collector.model().device();
    let mut parts = Vec::new();
    for chunk in crops.pixels.split(16, 0) {
        let inputs = ForwardInputs::from_features(chunk.to_device(device));
        let mut collected = collector.run(&inputs, &[], &UnitLocations::parse(None)?, &Subspaces::None)?.collected;
        let map = collected.remove(0);
        // Unlocated, a feature map comes back as (b, c, h, w); unit "pos" reads it as (b, h·w, c), row-major.
        parts.push(map.flatten(2, 3).transpose(1, 2));
    }
    let activations = Tensor::cat(&parts, 0).to_kind(Kind::Float);
    Ok((activations, collector.into_model()))
}

/// Held-out accuracy of a logistic probe for the attribute on a block's spatially averaged channels `(n, channels)`.
fn probe_accuracy_on(features: &Tensor, crops: &CropSet) -> Result<f64> {
    let features = features.to_device(tch::Device::Cpu);
    let labels = Tensor::from_slice(&crops.positive.iter().map(|&p| i64::from(p)).collect::<Vec<_>>());
    let split = |held_out: bool| {
        let rows: Vec<i64> = (0..crops.test.len() as i64).filter(|&i| crops.test[i as usize] == held_out).collect();
        let rows = Tensor::from_slice(&rows);
        (features.index_select(0, &rows), labels.index_select(0, &rows))
    };
    let ((train_x, train_y), (test_x, test_y)) = (split(false), split(true));
    logistic_probe_accuracy((&train_x, &train_y), (&test_x, &test_y), 2)
}

impl ImageDasStudy {
    pub fn figures(&self) -> Result<Vec<Figure>> {
        let lines = Figure::Lines {
            name: "image_das".to_string(),
            title: format!("\"{}\": rank-1 DAS IIA vs probe accuracy, per block (held out)", self.attribute),
            x_label: format!("block ({})", compact_blocks(&self.blocks)),
            series: vec![
                ("rank-1 DAS IIA".to_string(), self.das_iia.clone()),
                ("linear probe accuracy".to_string(), self.probe_accuracy.clone()),
            ],
        };
        let tiles: Vec<(String, image::RgbImage)> = self
            .samples
            .iter()
            .zip(&self.photos)
            .map(|((name, image), photo)| {
                (format!("{name}: {}", if photo.positive { &self.attribute } else { "not" }), image.clone())
            })
            .collect();
        let title =
            format!("a kept crop of each photo, with its kind ({} crops in all)", self.train_crops + self.test_crops);
        let sheet = super::picture::contact_sheet(&title, &tiles)?;
        Ok(vec![lines, Figure::Picture { name: "image_das_crops".to_string(), picture: sheet }])
    }

    pub fn summary(&self) -> String {
        let cells: Vec<String> = self
            .blocks
            .iter()
            .zip(self.das_iia.iter().zip(&self.probe_accuracy))
            .map(|(b, (das, probe))| format!("block {b}: DAS {das:.2} probe {probe:.2}"))
            .collect();
        format!(
            "\"{}\" on {} training / {} held-out crops ({} / {} pairs; probe majority baseline {:.2})\n{}",
            self.attribute,
            self.train_crops,
            self.test_crops,
            self.train_pairs,
            self.eval_pairs,
            self.majority_baseline,
            cells.join("\n")
        )
    }

    pub fn output(&self, json_name: &str) -> Result<super::output::StudyOutput> {
        super::output::StudyOutput::new(json_name, self, self.figures()?, self.summary())
    }
}

/// "0–15" for consecutive blocks, else the list.
fn compact_blocks(blocks: &[usize]) -> String {
    match (blocks.first(), blocks.last()) {
        (Some(first), Some(last)) if blocks.windows(2).all(|w| w[1] == w[0] + 1) => format!("{first}–{last}"),
        _ => blocks.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
    }
}
