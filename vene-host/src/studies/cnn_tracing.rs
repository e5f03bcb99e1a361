//! Where a CNN keeps the class: causal tracing on an image classifier (EfficientNet-Lite0) over blocks × spatial
//! regions. The photograph is corrupted with Gaussian noise; then one region of one block's output is restored
//! from the clean run and the clean class's probability measured (Meng et al.'s tracing, with image regions for
//! token positions). The same restoration with another photograph as the source is an interchange between photos:
//! how much of the class each region of each block carries.
//!
//! Every block's output is cut into a `grid × grid` array of regions (EfficientNet's maps are 112…7 pixels wide, so a
//! grid of 7 gives whole positions); the `grid²` restorations of a block run as one batch whose clean source is one
//! example serving all of them.

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{
    output::{Figure, StudyOutput},
    picture,
};
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
};

/// How to trace.
#[derive(Debug, Clone)]
pub struct CnnTraceOptions {
    /// Regions per side of every block's output.
    pub grid: i64,
    /// Noise standard deviation in units of the normalised photo's own standard deviation.
    pub noise_scale: f64,
    /// Noise draws averaged.
    pub samples: usize,
    pub seed: i64,
}

impl Default for CnnTraceOptions {
    fn default() -> Self {
        Self { grid: 7, noise_scale: 2.0, samples: 2, seed: 0 }
    }
}

/// A photograph, prepared for the model, with its name and the raw crop for figures.
pub struct Photo {
    pub name: String,
    /// `(1, 3, h, w)`, normalised.
    pub pixels: Tensor,
    pub crop: image::RgbImage,
}

/// The blocks × regions map of one restoration sweep.
#[derive(Debug, Clone, Serialize)]
pub struct RegionMap {
    /// The class whose probability is measured, and its name.
    pub class: i64,
    pub label: String,
    /// p(class) on the clean photo and on the base the restorations start from.
    pub clean: f64,
    pub base: f64,
    /// `[block][region]`: p(class) with that region of that block taken from the source; regions row-major.
    pub restored: Vec<Vec<f64>>,
    /// The block whose best region restores the most, and that region.
    pub best_block: usize,
    pub best_region: usize,
}

/// Causal tracing of one photo, and interchanges of each other photo into it.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoTrace {
    pub photo: String,
    pub trace: RegionMap,
    /// The source photo's name and the map of p(base class) with its regions swapped in.
    pub interchange: Option<(String, RegionMap)>,
    #[serde(skip)]
    crop: Option<image::RgbImage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CnnTraceStudy {
    pub grid: i64,
    pub noise_scale: f64,
    pub samples: usize,
    pub photos: Vec<PhotoTrace>,
}

/// Traces each photo; with two or more, the next photo (cyclically) is also swapped into each one.
pub fn cnn_trace_study(
    mut model: LoadedModel,
    plugins: &PluginSet,
    photos: Vec<Photo>,
    labels: &[String],
    options: &CnnTraceOptions,
) -> Result<(CnnTraceStudy, LoadedModel)> {
    if !model.catalog().components.iter().any(|c| c.name.as_str() == "block_output") {
        return Err(VeneError::Config("cnn tracing needs a model with block_output feature maps".into()));
    }
    let _no_grad = tch::no_grad_guard();
    let mut traces = Vec::new();
    for (index, photo) in photos.iter().enumerate() {
        let clean = probabilities(&model, &photo.pixels)?;
        let class = clean.argmax(-1, false).int64_value(&[0]);
        let label = labels.get(class as usize).cloned().unwrap_or_else(|| class.to_string());
        let mut sums: Option<Vec<Vec<f64>>> = None;
        let mut corrupted_p = 0.0;
        for sample in 0..options.samples {
            tch::manual_seed(options.seed + sample as i64);
            let scale = options.noise_scale * photo.pixels.std(true).double_value(&[]);
            let corrupted = &photo.pixels + Tensor::randn_like(&photo.pixels) * scale;
            corrupted_p += probabilities(&model, &corrupted)?.double_value(&[0, class]) / options.samples as f64;
            let (map, returned) = restore_map(model, plugins, &corrupted, &photo.pixels, class, options.grid)?;
            model = returned;
            sums = Some(match sums {
                None => map,
                Some(total) => add(total, &map),
            });
        }
        let restored = scale(sums.unwrap_or_default(), 1.0 / options.samples as f64);
        let trace = region_map(class, &label, clean.double_value(&[0, class]), corrupted_p, restored);
        let interchange = if photos.len() > 1 {
            let source = &photos[(index + 1) % photos.len()];
            let (map, returned) = restore_map(model, plugins, &photo.pixels, &source.pixels, class, options.grid)?;
            model = returned;
            let p = clean.double_value(&[0, class]);
            Some((source.name.clone(), region_map_lowest(class, &label, p, p, map)))
        } else {
            None
        };
        traces.push(PhotoTrace { photo: photo.name.clone(), trace, interchange, crop: Some(photo.crop.clone()) });
    }
    let study = CnnTraceStudy {
        grid: options.grid,
        noise_scale: options.noise_scale,
        samples: options.samples,
        photos: traces,
    };
    Ok((study, model))
}

fn probabilities(model: &LoadedModel, pixels: &Tensor) -> Result<Tensor> {
    Ok(model.forward_plain(&ForwardInputs::from_features(pixels.shallow_clone()))?.output.softmax(-1, Kind::Float))
}

fn add(total: Vec<Vec<f64>>, map: &[Vec<f64>]) -> Vec<Vec<f64>> {
    total.into_iter().zip(map).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect()).collect()
}

fn scale(map: Vec<Vec<f64>>, factor: f64) -> Vec<Vec<f64>> {
    map.into_iter().map(|row| row.into_iter().map(|v| v * factor).collect()).collect()
}

/// A tracing map: the best cell is the one that restores the most.
fn region_map(class: i64, label: &str, clean: f64, base: f64, restored: Vec<Vec<f64>>) -> RegionMap {
    let (best_block, best_region) = best_cell(&restored, |v| v);
    RegionMap { class, label: label.to_string(), clean, base, restored, best_block, best_region }
}

/// An interchange map: the best cell is the one whose swap costs the class the most.
fn region_map_lowest(class: i64, label: &str, clean: f64, base: f64, restored: Vec<Vec<f64>>) -> RegionMap {
    let (best_block, best_region) = best_cell(&restored, |v| -v);
    RegionMap { class, label: label.to_string(), clean, base, restored, best_block, best_region }
}

fn best_cell(map: &[Vec<f64>], key: impl Fn(f64) -> f64) -> (usize, usize) {
    let mut best = (0, 0, f64::MIN);
    for (block, row) in map.iter().enumerate() {
        for (region, &value) in row.iter().enumerate() {
            if key(value) > best.2 {
                best = (block, region, key(value));
            }
        }
    }
    (best.0, best.1)
}

/// `[block][region]`: p(`class`) on `base` with one region of one block's output taken from `source`.
fn restore_map(
    mut model: LoadedModel,
    plugins: &PluginSet,
    base: &Tensor,
    source: &Tensor,
    class: i64,
    grid: i64,
) -> Result<(Vec<Vec<f64>>, LoadedModel)> {
    let (sides, returned) = block_sides(model, plugins, base)?;
    model = returned;
    let mut map = Vec::new();
    for (block, &side) in sides.iter().enumerate() {
        if side % grid != 0 {
            return Err(VeneError::Config(format!(
                "block {block}'s output is {side} wide, which a grid of {grid} does not divide (use a grid that \
                 divides every block's width, e.g. 7 for 224-pixel inputs)"
            )));
        }
        let cell = side / grid;
        let regions: Vec<Vec<i64>> = (0..grid * grid)
            .map(|region| {
                let (row, column) = (region / grid, region % grid);
                (0..cell * cell).map(|i| (row * cell + i / cell) * side + column * cell + i % cell).collect()
            })
            .collect();
        let representation = json!({"layer": block, "component": "block_output", "unit": "pos",
                                    "max_number_of_units": cell * cell, "intervention": {"type": "vanilla"}});
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": [representation]}))
            .map_err(|e| VeneError::Config(e.to_string()))?;
        let mut intervenable = IntervenableModel::new(model, config, plugins, 0)?;
        let mut row = Vec::new();
        // A few regions per pass: a block's whole grid at once would hold grid² copies of the early feature maps.
        for chunk in regions.chunks(grid as usize) {
            let locations = UnitLocations::parse(Some(&json!({"sources->base": [[chunk], [chunk]]})))?;
            let output = intervenable.run(
                &ForwardInputs::from_features(base.repeat([chunk.len() as i64, 1, 1, 1])),
                &[Some(ForwardInputs::from_features(source.shallow_clone()))],
                &locations,
                &Subspaces::None,
            )?;
            let p = output.output.softmax(-1, Kind::Float).select(1, class).to_kind(Kind::Double);
            row.extend(Vec::<f64>::try_from(&p)?);
        }
        map.push(row);
        model = intervenable.into_model();
    }
    Ok((map, model))
}

/// The width of every block's output on `pixels` (square maps), from one collecting pass.
fn block_sides(model: LoadedModel, plugins: &PluginSet, pixels: &Tensor) -> Result<(Vec<i64>, LoadedModel)> {
    let blocks = model.catalog().components.iter().find(|c| c.name.as_str() == "block_output").map_or(0, |c| c.layers);
    let representations: Vec<_> = (0..blocks)
        .map(|b| json!({"layer": b, "component": "block_output", "intervention": {"type": "collect"}}))
        .collect();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
        .map_err(|e| VeneError::Config(e.to_string()))?;
    let mut intervenable = IntervenableModel::new(model, config, plugins, 0)?;
    let output = intervenable.run(
        &ForwardInputs::from_features(pixels.shallow_clone()),
        &[],
        &UnitLocations::parse(None)?,
        &Subspaces::None,
    )?;
    let sides = output.collected.iter().map(|map| map.size()[3]).collect();
    Ok((sides, intervenable.into_model()))
}

impl CnnTraceStudy {
    /// Per photo: the blocks × regions map, the best block's regions over the photo, and the interchange's.
    pub fn figures(&self) -> Result<Vec<Figure>> {
        let mut figures = Vec::new();
        for trace in &self.photos {
            let stem = trace.photo.trim_end_matches(".png").trim_end_matches(".jpg").to_string();
            let row_labels: Vec<String> = (0..trace.trace.restored.len()).map(|b| format!("block {b}")).collect();
            let t = &trace.trace;
            let gain = (t.clean - t.base).max(1e-6);
            figures.push(Figure::Heatmap {
                name: format!("{stem}_trace"),
                title: format!(
                    "{}: p({}) restored by one region of one block (clean {:.2}, noised {:.2})",
                    trace.photo, t.label, t.clean, t.base
                ),
                row_labels: row_labels.clone(),
                column_label: format!("region (row-major, {0}x{0} over the photo)", self.grid),
                scale_label: "p restored - p noised".to_string(),
                values: t.restored.iter().map(|row| row.iter().map(|p| p - t.base).collect()).collect(),
                max: gain,
            });
            if let Some(crop) = &trace.crop {
                let block = t.best_block;
                let heat =
                    grid_rows(&t.restored[block].iter().map(|p| (p - t.base).max(0.0)).collect::<Vec<_>>(), self.grid);
                let top = heat.iter().flatten().copied().fold(1e-6, f64::max);
                let title = format!(
                    "{}: block {block}, p({}) each region restores (strongest +{top:.3}, boxed)",
                    trace.photo, t.label
                );
                let max = top;
                figures.push(Figure::Picture {
                    name: format!("{stem}_trace_photo"),
                    picture: picture::overlay(&title, crop, &heat, max)?,
                });
                if let Some((source, map)) = &trace.interchange {
                    let block = map.best_block;
                    let lost: Vec<f64> = map.restored[block].iter().map(|p| (map.clean - p).max(0.0)).collect();
                    let heat = grid_rows(&lost, self.grid);
                    let title =
                        format!("{} with regions of {source} at block {block}: p({}) lost", trace.photo, map.label);
                    figures.push(Figure::Picture {
                        name: format!("{stem}_swap_photo"),
                        picture: picture::overlay(&title, crop, &heat, map.clean.max(1e-6))?,
                    });
                }
            }
        }
        Ok(figures)
    }

    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        for trace in &self.photos {
            let t = &trace.trace;
            let best = t.restored[t.best_block][t.best_region];
            let per_block: Vec<String> =
                t.restored.iter().map(|row| format!("{:.2}", row.iter().copied().fold(f64::MIN, f64::max))).collect();
            lines.push(format!(
                "{}: {} p {:.3}, noised {:.3}; best restoration block {} region {} -> {:.3}; best per block [{}]",
                trace.photo,
                t.label,
                t.clean,
                t.base,
                t.best_block,
                t.best_region,
                best,
                per_block.join(", ")
            ));
            if let Some((source, map)) = &trace.interchange {
                let worst = map.restored[map.best_block][map.best_region];
                lines.push(format!(
                    "  regions of {source} swapped in: p({}) falls most at block {} region {} ({:.3} -> {:.3})",
                    map.label, map.best_block, map.best_region, map.clean, worst
                ));
            }
        }
        lines.join("\n")
    }

    pub fn output(&self, json_name: &str) -> Result<StudyOutput> {
        StudyOutput::new(json_name, self, self.figures()?, self.summary())
    }
}

/// A row-major list of `grid²` values as `grid` rows.
fn grid_rows(values: &[f64], grid: i64) -> Vec<Vec<f64>> {
    values.chunks(grid as usize).map(<[f64]>::to_vec).collect()
}

/// The class names of `dir/config.json`'s `id2label`, by index (empty when it has none).
pub fn labels(dir: &std::path::Path) -> Result<Vec<String>> {
    let config = crate::vision::model_config(dir)?;
    let Some(map) = config.get("id2label").and_then(|m| m.as_object()) else {
        return Ok(Vec::new());
    };
    let mut labels = vec![String::new(); map.len()];
    for (key, value) in map {
        if let (Ok(index), Some(name)) = (key.parse::<usize>(), value.as_str()) {
            if index < labels.len() {
                labels[index] = name.to_string();
            }
        }
    }
    Ok(labels)
}
