//! Figures that show the inputs themselves: rendered words with the model's time steps marked under them, and a
//! photograph with a causal-effect grid laid over it. Drawn into an RGB buffer, written as PNG and as an SVG that
//! embeds the same PNG (a photograph as SVG rectangles would be megabytes).

use std::path::Path;

use base64::Engine;
use image::{GrayImage, RgbImage};
use plotters::prelude::*;

use super::plot::{ensure_font, write_figure};
use crate::error::{Result, VeneError};

/// An RGB picture, `width × height`.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

fn draw_error(error: impl std::fmt::Display) -> VeneError {
    VeneError::Config(format!("cannot draw a picture: {error}"))
}

const SCALE: u32 = 2;
const LABEL_WIDTH: u32 = 110;

/// Word strips (each `(label, image)`) stacked, drawn at twice their size, with a tick under every one of the
/// model's `steps` columns (numbered every fifth) so a reader can find step t on the word.
pub fn strips(title: &str, rows: &[(String, GrayImage)], steps: usize) -> Result<Picture> {
    ensure_font();
    let widest = rows.iter().map(|(_, image)| image.width()).max().unwrap_or(1);
    let strip_height = rows.first().map_or(1, |(_, image)| image.height()) * SCALE;
    let row_height = strip_height + 26;
    let (width, height) = (LABEL_WIDTH + widest * SCALE + 16, 34 + row_height * rows.len() as u32);
    let width = width.max(16 + 8 * title.chars().count() as u32);
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (row, (_, strip)) in rows.iter().enumerate() {
        let top = 34 + row as u32 * row_height;
        let (w, h) = (strip.width() * SCALE, strip.height() * SCALE);
        let scaled = image::imageops::resize(strip, w, h, image::imageops::FilterType::Nearest);
        let rgb = image::DynamicImage::ImageLuma8(scaled).to_rgb8();
        image::imageops::overlay(&mut canvas, &rgb, i64::from(LABEL_WIDTH), i64::from(top));
    }
    let mut rgb = canvas.into_raw();
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        area.draw(&Text::new(title.to_string(), (8, 8), ("sans-serif", 16).into_font())).map_err(draw_error)?;
        for (row, (label, image)) in rows.iter().enumerate() {
            let top = 34 + row as u32 * row_height;
            let font = ("sans-serif", 13).into_font();
            area.draw(&Text::new(label.clone(), (8, (top + strip_height / 2) as i32 - 6), font)).map_err(draw_error)?;
            // Column t of the CNN's output covers about image.width() / steps input pixels.
            let per_step = image.width() as f64 / steps.max(1) as f64;
            for step in 0..steps {
                let x = (LABEL_WIDTH as f64 + (step as f64 + 0.5) * per_step * SCALE as f64) as i32;
                let y = (top + strip_height) as i32;
                let tick = if step % 5 == 0 { 8 } else { 4 };
                area.draw(&PathElement::new(vec![(x, y + 1), (x, y + tick)], BLACK)).map_err(draw_error)?;
                if step % 5 == 0 {
                    let font = ("sans-serif", 10).into_font();
                    area.draw(&Text::new(step.to_string(), (x - 3, y + 10), font)).map_err(draw_error)?;
                }
            }
        }
        area.present().map_err(draw_error)?;
    }
    Ok(Picture { width, height, rgb })
}

/// `photo` drawn at twice its size with `heat[row][column]` (a coarse grid over the whole photo, in `[0, max]`) laid
/// over it in translucent red, the strongest cell outlined.
pub fn overlay(title: &str, photo: &RgbImage, heat: &[Vec<f64>], max: f64) -> Result<Picture> {
    ensure_font();
    let (pw, ph) = (photo.width() * SCALE, photo.height() * SCALE);
    let (width, height) = ((pw + 16).max(16 + 8 * title.chars().count() as u32), ph + 42);
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let scaled = image::imageops::resize(photo, pw, ph, image::imageops::FilterType::Nearest);
    image::imageops::overlay(&mut canvas, &scaled, 8, 34);
    let mut rgb = canvas.into_raw();
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        area.draw(&Text::new(title.to_string(), (8, 8), ("sans-serif", 16).into_font())).map_err(draw_error)?;
        let rows = heat.len().max(1);
        let columns = heat.first().map_or(1, Vec::len).max(1);
        let (cw, ch) = (pw as f64 / columns as f64, ph as f64 / rows as f64);
        let mut strongest = (0, 0, f64::MIN);
        for (r, line) in heat.iter().enumerate() {
            for (c, &value) in line.iter().enumerate() {
                if value > strongest.2 {
                    strongest = (r, c, value);
                }
                let alpha = (value / max.max(1e-12)).clamp(0.0, 1.0) * 0.6;
                let (x0, y0) = (8 + (c as f64 * cw) as i32, 34 + (r as f64 * ch) as i32);
                let (x1, y1) = (8 + ((c + 1) as f64 * cw) as i32, 34 + ((r + 1) as f64 * ch) as i32);
                let colour = RGBAColor(230, 20, 60, alpha).filled();
                area.draw(&Rectangle::new([(x0, y0), (x1, y1)], colour)).map_err(draw_error)?;
            }
        }
        let (r, c, _) = strongest;
        let (x0, y0) = (8 + (c as f64 * cw) as i32, 34 + (r as f64 * ch) as i32);
        let (x1, y1) = (8 + ((c + 1) as f64 * cw) as i32, 34 + ((r + 1) as f64 * ch) as i32);
        area.draw(&Rectangle::new([(x0, y0), (x1, y1)], YELLOW.stroke_width(2))).map_err(draw_error)?;
        area.present().map_err(draw_error)?;
    }
    Ok(Picture { width, height, rgb })
}

/// Labelled thumbnails (each `(label, image)`, drawn 112 pixels wide) in one row.
pub fn contact_sheet(title: &str, tiles: &[(String, RgbImage)]) -> Result<Picture> {
    ensure_font();
    const TILE: u32 = 112;
    const GAP: u32 = 12;
    let tiles_width = tiles.len() as u32 * (TILE + GAP);
    let width = (8 + tiles_width).max(16 + 8 * title.chars().count() as u32);
    let height = 34 + TILE + 24;
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (index, (_, image)) in tiles.iter().enumerate() {
        let thumbnail = image::imageops::resize(image, TILE, TILE, image::imageops::FilterType::Triangle);
        image::imageops::overlay(&mut canvas, &thumbnail, i64::from(8 + index as u32 * (TILE + GAP)), 34);
    }
    let mut rgb = canvas.into_raw();
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        area.draw(&Text::new(title.to_string(), (8, 8), ("sans-serif", 16).into_font())).map_err(draw_error)?;
        for (index, (label, _)) in tiles.iter().enumerate() {
            let x = 8 + (index as u32 * (TILE + GAP)) as i32;
            let font = ("sans-serif", 11).into_font();
            area.draw(&Text::new(label.clone(), (x, (34 + TILE + 6) as i32), font)).map_err(draw_error)?;
        }
        area.present().map_err(draw_error)?;
    }
    Ok(Picture { width, height, rgb })
}

/// Writes `stem.png` and `stem.svg` (the PNG embedded) in `dir`.
pub fn write(dir: &Path, stem: &str, picture: &Picture) -> Result<()> {
    let image = RgbImage::from_raw(picture.width, picture.height, picture.rgb.clone())
        .ok_or_else(|| VeneError::Config("a picture's pixels do not match its size".into()))?;
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageOutputFormat::Png).map_err(draw_error)?;
    write_figure(&dir.join(format!("{stem}.png")), |to| Ok(std::fs::write(to, &png)?))?;
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <image width=\"{w}\" height=\"{h}\" href=\"data:image/png;base64,{}\"/></svg>\n",
        base64::engine::general_purpose::STANDARD.encode(&png),
        w = picture.width,
        h = picture.height
    );
    write_figure(&dir.join(format!("{stem}.svg")), |to| Ok(std::fs::write(to, svg.as_bytes())?))
}
