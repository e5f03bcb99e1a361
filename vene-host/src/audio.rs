//! Speech for the voice-activity studies: text synthesised by Debian's `espeak-ng` (run as a program, its WAV read
//! with `hound`), resampled to the model's rate, with silences between utterances.

use std::{path::Path, process::Command};

use tch::Tensor;

use crate::error::{Result, VeneError};

/// `text` spoken by espeak-ng (US English, 150 words a minute), as samples in [-1, 1] at `rate` Hz.
pub fn speak(text: &str, rate: u32) -> Result<Vec<f32>> {
    let dir = std::env::temp_dir().join(format!("vene-speech-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| VeneError::Io { path: dir.clone(), source })?;
    let wav = dir.join("speech.wav");
    let status = Command::new("espeak-ng").args(["-v", "en-us", "-s", "150", "-w"]).arg(&wav).arg(text).status();
    let result = match status {
        Ok(status) if status.success() => read_wav(&wav, rate),
        Ok(status) => Err(VeneError::Inputs(format!("espeak-ng failed ({status}) on {text:?}"))),
        Err(error) => Err(VeneError::Inputs(format!(
            "cannot run espeak-ng ({error}): the speech studies synthesise their audio with it; install Debian's \
             espeak-ng package (apt-get install espeak-ng)"
        ))),
    };
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// A mono 16-bit WAV file's samples in [-1, 1], resampled to `rate` Hz.
pub fn read_wav(path: &Path, rate: u32) -> Result<Vec<f32>> {
    let invalid = |e: hound::Error| VeneError::Inputs(format!("{} is not a readable WAV file: {e}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(invalid)?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(VeneError::Inputs(format!(
            "{} must be mono 16-bit PCM; it has {} channel(s) of {} bits",
            path.display(),
            spec.channels,
            spec.bits_per_sample
        )));
    }
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.map(|v| f32::from(v) / 32768.0))
        .collect::<std::result::Result<_, _>>()
        .map_err(invalid)?;
    Ok(resample(&samples, spec.sample_rate, rate))
}

/// Linear-interpolation resampling (after a box low-pass when shrinking), enough for voice activity.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let ratio = f64::from(from) / f64::from(to);
    let smoothed: Vec<f32> = if ratio > 1.0 {
        let width = ratio.ceil() as usize;
        (0..samples.len())
            .map(|i| {
                let window = &samples[i.saturating_sub(width / 2)..(i + width / 2 + 1).min(samples.len())];
                window.iter().sum::<f32>() / window.len() as f32
            })
            .collect()
    } else {
        samples.to_vec()
    };
    let count = (samples.len() as f64 / ratio).floor() as usize;
    (0..count)
        .map(|i| {
            let position = i as f64 * ratio;
            let (index, fraction) = (position.floor() as usize, (position - position.floor()) as f32);
            let next = smoothed.get(index + 1).copied().unwrap_or(smoothed[index]);
            smoothed[index] * (1.0 - fraction) + next * fraction
        })
        .collect()
}

/// Utterances separated by `gap` seconds of silence (and `gap` before the first and after the last), padded with
/// silence to a whole number of `chunk`s, as a `(1, samples)` tensor at `rate` Hz.
pub fn utterances(texts: &[&str], gap: f64, rate: u32, chunk: usize) -> Result<Tensor> {
    let silence = vec![0f32; (gap * f64::from(rate)) as usize];
    let mut samples = silence.clone();
    for text in texts {
        samples.extend(speak(text, rate)?);
        samples.extend(&silence);
    }
    samples.resize(samples.len().div_ceil(chunk) * chunk, 0.0);
    Ok(Tensor::from_slice(&samples).unsqueeze(0))
}
