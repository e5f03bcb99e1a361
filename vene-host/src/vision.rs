//! Images in and text out for the real vision and OCR models: photographs decoded, resized, centre-cropped and
//! normalised as a model's config.json `preprocess` says; words rendered (with the bundled DejaVu Sans) into the
//! grayscale strips a CRNN reads; and greedy CTC decoding of a CRNN's per-column scores back into text.

use std::path::Path;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{imageops::FilterType, GrayImage, Luma, RgbImage};
use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::error::{Result, VeneError};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// How a model wants its pixels: config.json's `preprocess`.
#[derive(Debug, Clone, Deserialize)]
pub struct Preprocess {
    /// One channel (a CRNN) instead of RGB.
    #[serde(default)]
    pub grayscale: bool,
    /// A text strip's height in pixels.
    #[serde(default)]
    pub height: Option<u32>,
    /// Photographs: the shorter side is resized to this, then the centre `crop` × `crop` is taken.
    #[serde(default)]
    pub resize_shorter: Option<u32>,
    #[serde(default)]
    pub crop: Option<u32>,
    /// Per channel, on pixels scaled to [0, 1]: `(x - mean) / std`.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// A model directory's `config.json`, for the entries beyond what the adapter reads (preprocessing, class names,
/// a CRNN's characters).
pub fn model_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| VeneError::Io { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| VeneError::Json { path, what: "model config", source })
}

impl Preprocess {
    /// The `preprocess` entry of `dir/config.json`.
    pub fn of_model(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let config = model_config(dir)?;
        let preprocess = config.get("preprocess").ok_or_else(|| {
            VeneError::Config(format!("{} has no \"preprocess\" entry saying how to prepare images", path.display()))
        })?;
        serde_json::from_value(preprocess.clone())
            .map_err(|e| VeneError::Config(format!("{}: preprocess: {e}", path.display())))
    }

    /// `(channels, h, w)` bytes → `(1, channels, h, w)` normalised floats.
    fn normalise(&self, bytes: Vec<u8>, channels: i64, height: i64, width: i64) -> Result<Tensor> {
        if self.mean.len() != channels as usize || self.std.len() != channels as usize {
            return Err(VeneError::Config(format!(
                "preprocess gives {} means and {} stds for {channels}-channel images",
                self.mean.len(),
                self.std.len()
            )));
        }
        let hwc = Tensor::from_slice(&bytes).view([height, width, channels]).to_kind(Kind::Float) / 255.0;
        let mean = Tensor::from_slice(&self.mean).to_kind(Kind::Float);
        let std = Tensor::from_slice(&self.std).to_kind(Kind::Float);
        Ok(((hwc - mean) / std).permute([2, 0, 1]).unsqueeze(0).contiguous())
    }
}

/// A photograph as `(1, 3, crop, crop)`: shorter side resized (bilinear), centre crop, normalised.
pub fn load_photo(path: &Path, preprocess: &Preprocess) -> Result<Tensor> {
    load_photo_with_crop(path, preprocess).map(|(pixels, _)| pixels)
}

/// [`load_photo`], with the crop the model sees as an image.
pub fn load_photo_with_crop(path: &Path, preprocess: &Preprocess) -> Result<(Tensor, RgbImage)> {
    let image = open_rgb(path)?;
    let (Some(shorter), Some(crop)) = (preprocess.resize_shorter, preprocess.crop) else {
        return Err(VeneError::Config("preprocess needs resize_shorter and crop for photographs".into()));
    };
    let cropped = centre_crop(&resize_shorter(&image, shorter), crop);
    Ok((photo_pixels(&cropped, preprocess)?, cropped))
}

/// A PNG or JPEG file as RGB (grayscale files too).
pub fn open_rgb(path: &Path) -> Result<RgbImage> {
    Ok(image::open(path)
        .map_err(|e| VeneError::Inputs(format!("{} is not a readable PNG or JPEG image: {e}", path.display())))?
        .to_rgb8())
}

/// An RGB image already at the model's size as `(1, 3, h, w)`, normalised.
pub fn photo_pixels(image: &RgbImage, preprocess: &Preprocess) -> Result<Tensor> {
    preprocess.normalise(image.as_raw().clone(), 3, i64::from(image.height()), i64::from(image.width()))
}

/// `count` random square crops of `image` (a side of half to all of its shorter side, anywhere in it, mirrored
/// half the time), each resized to `size` × `size`: the usual augmentation, giving many views of one photograph.
pub fn random_crops(image: &RgbImage, count: usize, size: u32, rng: &mut impl rand::Rng) -> Vec<RgbImage> {
    let (w, h) = image.dimensions();
    (0..count)
        .map(|_| {
            let side = ((f64::from(w.min(h)) * rng.gen_range(0.5..=1.0)).round() as u32).max(1);
            let (left, top) = (rng.gen_range(0..=w - side), rng.gen_range(0..=h - side));
            let crop = image::imageops::crop_imm(image, left, top, side, side).to_image();
            let resized = image::imageops::resize(&crop, size, size, FilterType::Triangle);
            if rng.gen_bool(0.5) {
                image::imageops::flip_horizontal(&resized)
            } else {
                resized
            }
        })
        .collect()
}

/// The `crop` × `crop` centre of `image` (exactly `(w - crop) / 2` from the left, as torchvision rounds).
pub fn centre_crop(image: &RgbImage, crop: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let (left, top) = ((w.saturating_sub(crop)) / 2, (h.saturating_sub(crop)) / 2);
    image::imageops::crop_imm(image, left, top, crop.min(w), crop.min(h)).to_image()
}

/// The RGB bytes of a crop as a tensor, normalised (for pixels prepared elsewhere).
pub fn rgb_pixels(bytes: &Tensor, preprocess: &Preprocess) -> Result<Tensor> {
    let size = bytes.size();
    if size.len() != 3 || size[2] != 3 {
        return Err(VeneError::Config(format!("RGB pixels must be (h, w, 3) bytes, got {size:?}")));
    }
    let data = Vec::<u8>::try_from(&bytes.to_kind(Kind::Uint8).flatten(0, -1))
        .map_err(|e| VeneError::Config(format!("pixels: {e}")))?;
    preprocess.normalise(data, 3, size[0], size[1])
}

fn resize_shorter(image: &RgbImage, shorter: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let scale = f64::from(shorter) / f64::from(w.min(h));
    let (nw, nh) = ((f64::from(w) * scale).round() as u32, (f64::from(h) * scale).round() as u32);
    image::imageops::resize(image, nw, nh, FilterType::Triangle)
}

/// `text` in black on white, `height` pixels tall, with a margin of an eighth of the height at each end.
pub fn render_text(text: &str, height: u32) -> GrayImage {
    let font = FontRef::try_from_slice(FONT).expect("the bundled DejaVu Sans parses");
    let scale = PxScale::from(height as f32 * 0.75);
    let scaled = font.as_scaled(scale);
    // EasyOCR reads tight crops: a wider white margin reads as a stray "~".
    let margin = height as f32 / 8.0;
    let mut glyphs = Vec::new();
    let mut x = margin;
    let baseline = (height as f32 + scaled.ascent() + scaled.descent()) / 2.0;
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(previous) = previous {
            x += scaled.kern(previous, id);
        }
        glyphs.push(id.with_scale_and_position(scale, ab_glyph::point(x, baseline)));
        x += scaled.h_advance(id);
        previous = Some(id);
    }
    let width = (x + margin).ceil().max(8.0) as u32;
    let mut image = GrayImage::from_pixel(width, height, Luma([255]));
    for glyph in glyphs {
        if let Some(outlined) = font.outline_glyph(glyph) {
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, coverage| {
                let (px, py) = (bounds.min.x as i64 + gx as i64, bounds.min.y as i64 + gy as i64);
                if px >= 0 && py >= 0 && (px as u32) < width && (py as u32) < height {
                    let ink = (255.0 * (1.0 - coverage.clamp(0.0, 1.0))) as u8;
                    let pixel = image.get_pixel_mut(px as u32, py as u32);
                    pixel.0[0] = pixel.0[0].min(ink);
                }
            });
        }
    }
    image
}

/// Words rendered at the model's strip height, right-padded to a common width by repeating each strip's last
/// column (EasyOCR's `NormalizePAD`), as `(words, 1, height, width)`, with the padded images.
pub fn text_batch(words: &[&str], preprocess: &Preprocess) -> Result<(Tensor, Vec<GrayImage>)> {
    let height = preprocess.height.ok_or_else(|| VeneError::Config("preprocess needs a height for text".into()))?;
    let rendered: Vec<GrayImage> = words.iter().map(|w| render_text(w, height)).collect();
    let width = rendered.iter().map(|i| i.width()).max().unwrap_or(8);
    let images: Vec<GrayImage> = rendered
        .iter()
        .map(|image| GrayImage::from_fn(width, height, |x, y| *image.get_pixel(x.min(image.width() - 1), y)))
        .collect();
    let strips = images
        .iter()
        .map(|image| preprocess.normalise(image.as_raw().clone(), 1, height as i64, width as i64))
        .collect::<Result<Vec<_>>>()?;
    Ok((Tensor::cat(&strips, 0), images))
}

/// Greedy CTC decoding: the best class per column, repeats merged, blanks (class 0) dropped; class `i` is the
/// `i`-th character of `characters`, counting from 1.
pub fn ctc_greedy(logits: &Tensor, characters: &str) -> Vec<String> {
    let characters: Vec<char> = characters.chars().collect();
    let best = logits.argmax(-1, false);
    (0..best.size()[0])
        .map(|row| {
            let classes = Vec::<i64>::try_from(&best.get(row)).unwrap_or_default();
            let mut text = String::new();
            let mut previous = 0;
            for class in classes {
                if class != previous && class > 0 {
                    if let Some(&c) = characters.get(class as usize - 1) {
                        text.push(c);
                    }
                }
                previous = class;
            }
            text
        })
        .collect()
}
