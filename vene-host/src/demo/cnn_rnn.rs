//! The demo's studies on the real convolutional and recurrent models the set-up installs: EasyOCR's CRNN reading
//! rendered words step by step, EfficientNet-Lite0's causal trace over blocks × regions of two photographs and its
//! "animal" attribute found by DAS against a probe, and Silero VAD's LSTM state at one chunk of synthesised speech. They replace the toy GRU and CNN studies.

use crate::{
    audio,
    error::Result,
    model::LoadedModel,
    plugins::PluginSet,
    real_model,
    studies::{
        cnn_tracing::{self, CnnTraceOptions, Photo},
        image_das::{image_das_study, AttributePhoto, ImageDasOptions},
        ocr_steps::{ocr_step_study, strongest_step, OcrSetup},
        output::StudyOutput,
        vad_state::vad_state_study,
    },
    vision::{load_photo_with_crop, open_rgb, Preprocess},
};

use super::plan::{Finding, Paper};

fn load(plugins: &PluginSet, dir: &std::path::Path) -> Result<LoadedModel> {
    LoadedModel::load(plugins, dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)
}

fn paper(question: &str, claim: &str, table: Vec<Vec<String>>, command: &str) -> Paper {
    let text = str::to_string;
    Paper { question: text(question), claim: text(claim), table, command: text(command), toy: false }
}

/// EasyOCR's CRNN: the BiLSTM state and the CNN column swapped from one word into another at each step.
pub fn ocr_steps(plugins: &PluginSet) -> Result<Finding> {
    let model = load(plugins, &real_model::easyocr_english()?)?;
    let (study, _) = ocr_step_study(model, plugins, &OcrSetup::demo())?;
    let mut table = vec![vec!["words".to_string(), "site".to_string(), "characters losing > 0.5, each at step".into()]];
    for pair in &study.pairs {
        for map in [&pair.lstm, &pair.cnn] {
            let peaks: Vec<String> = pair
                .characters
                .iter()
                .zip(&pair.columns)
                .zip(&map.drop)
                .filter_map(|((c, column), row)| {
                    let (step, drop) = strongest_step(row);
                    (drop > 0.5).then(|| format!("'{c}' (col {column}) @ {step}"))
                })
                .collect();
            let site = if map.site.starts_with("BiLSTM") { "BiLSTM 0 state" } else { "CNN column" };
            table.push(vec![format!("{} <- {}", pair.base, pair.source), site.to_string(), peaks.join(", ")]);
        }
    }
    let paper = paper(
        "On a real recurrent model, does an intervention at time step t act on what is read at t?",
        "pyvene (Wu et al., 2024) intervenes on recurrent models at chosen time steps (its GRU tutorials). Here the \
         model is EasyOCR's English recogniser (CNN + 2 BiLSTMs + CTC, 3.8 M parameters), reading words rendered in \
         DejaVu Sans; a step is one column of the CNN's feature map.",
        table,
        "vene ocr-steps --model easyocr-english-g2 --out ocr_steps",
    );
    let output = StudyOutput::combined(&study, study.figures()?, study.summary())?;
    Ok(Finding {
        heading: "Reading text step by step (EasyOCR CRNN)",
        subdir: "ocr_steps",
        output,
        key: "ocr_steps",
        paper,
    })
}

/// EfficientNet-Lite0: causal tracing over blocks × 7×7 regions of two photographs, and each swapped into the other.
pub fn cnn_trace(plugins: &PluginSet, samples: usize) -> Result<Finding> {
    let dir = real_model::efficientnet_lite0()?;
    let model = load(plugins, &dir)?;
    let preprocess = Preprocess::of_model(&dir)?;
    let mut photos = Vec::new();
    for name in ["chelsea.png", "coffee.png"] {
        let (pixels, crop) = load_photo_with_crop(&real_model::real_asset(&format!("photos/{name}"))?, &preprocess)?;
        photos.push(Photo { name: name.to_string(), pixels, crop });
    }
    let options = CnnTraceOptions { samples, ..Default::default() };
    let labels = cnn_tracing::labels(&dir)?;
    let (study, _) = cnn_tracing::cnn_trace_study(model, plugins, photos, &labels, &options)?;
    let mut table = vec![["photo", "class", "p clean", "p noised", "best restoring block/region", "p restored"]
        .map(String::from)
        .to_vec()];
    for trace in &study.photos {
        let t = &trace.trace;
        table.push(vec![
            trace.photo.clone(),
            t.label.clone(),
            format!("{:.3}", t.clean),
            format!("{:.3}", t.base),
            format!("{} / {}", t.best_block, t.best_region),
            format!("{:.3}", t.restored[t.best_block][t.best_region]),
        ]);
    }
    let paper = paper(
        "Where does a real image classifier keep the class: at which block, and over which part of the photo?",
        "Meng et al. (2022) trace where a transformer stores a fact by restoring one site of a noised run; pyvene \
         intervenes on vision models' feature maps like any module. Here: EfficientNet-Lite0 (ImageNet, 4.7 M \
         parameters) on scikit-image's photographs, the whole photo noised (2 × its std), one 1/49 region of one \
         block's output restored at a time.",
        table,
        "vene cnn-trace --model efficientnet-lite0 --photos chelsea.png,coffee.png --out cnn_trace",
    );
    let output = StudyOutput::combined(&study, study.figures()?, study.summary())?;
    Ok(Finding {
        heading: "Where a CNN keeps the class (EfficientNet-Lite0)",
        subdir: "cnn_trace",
        output,
        key: "cnn_trace",
        paper,
    })
}

/// EfficientNet-Lite0: rank-1 DAS against a linear probe, block by block, for "animal" on random crops of two
/// animal and four other photographs.
pub fn image_das(plugins: &PluginSet, options: &ImageDasOptions) -> Result<Finding> {
    let dir = real_model::efficientnet_lite0()?;
    let model = load(plugins, &dir)?;
    let preprocess = Preprocess::of_model(&dir)?;
    let kinds = [
        ("chelsea.png", true),
        ("horse.png", true),
        ("coffee.png", false),
        ("astronaut.png", false),
        ("rocket.jpg", false),
        ("motorcycle_left.png", false),
    ];
    let mut photos = Vec::new();
    for (name, positive) in kinds {
        let image = open_rgb(&real_model::real_asset(&format!("photos/{name}"))?)?;
        photos.push(AttributePhoto { name: name.to_string(), image, positive });
    }
    let (study, _) = image_das_study(model, plugins, &preprocess, &photos, options, |_, _| {})?;
    let mut table = vec![["block", "rank-1 DAS IIA", "probe accuracy"].map(String::from).to_vec()];
    for (block, (das, probe)) in study.blocks.iter().zip(study.das_iia.iter().zip(&study.probe_accuracy)) {
        table.push(vec![block.to_string(), format!("{das:.2}"), format!("{probe:.2}")]);
    }
    let paper = paper(
        "Is what a probe decodes what the model uses? A binary attribute of photographs, block by block.",
        "The paper contrasts DAS with probing: a probe can read information the model does not use, while DAS finds          a subspace whose interchange changes the output as the variable would. Here: \"animal\" (the model's total          probability of ImageNet classes 0–397) on random crops of chelsea (cat) and horse against coffee,          astronaut, rocket and motorcycle; one channel direction shared by every position of a block's map.",
        table,
        &format!(
            "vene image-das --model efficientnet-lite0 --crops {} --pairs {} --epochs {}{} --out image_das",
            options.crops_per_photo,
            options.pairs,
            options.epochs,
            options.blocks.as_ref().map_or(String::new(), |b| format!(
                " --blocks {}",
                b.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            ))
        ),
    );
    let output = StudyOutput::combined(&study, study.figures()?, study.summary())?;
    Ok(Finding {
        heading: "Decodable or causal: an image attribute (EfficientNet-Lite0)",
        subdir: "image_das",
        output,
        key: "image_das",
        paper,
    })
}

/// Silero VAD: the LSTM state zeroed, or taken from silence, at one chunk inside each of two utterances.
pub fn vad_state(plugins: &PluginSet) -> Result<Finding> {
    let texts = ["one two three four five", "the quick brown fox jumps over the lazy dog"];
    let command = "vene vad-state --model silero-vad --out vad_state";
    let question = "How long does a real stateful model remember what its state says?";
    let claim = "pyvene intervenes on a recurrent model's state at a chosen step. Here: Silero VAD (MIT; STFT conv + \
                 LSTMCell(128), one step per 32 ms chunk) on speech synthesised by espeak-ng, its state (h and c) \
                 zeroed or replaced by its value on silence at one chunk inside each utterance.";
    let audio = match audio::utterances(&texts, 0.6, 16_000, 512) {
        Ok(audio) => audio,
        Err(error) => {
            let summary = format!("skipped: {error}");
            let output = StudyOutput { json_name: None, json: serde_json::Value::Null, figures: Vec::new(), summary };
            let paper = paper(question, claim, Vec::new(), command);
            return Ok(Finding {
                heading: "A stateful model (Silero VAD)",
                subdir: "vad_state",
                output,
                key: "vad_state",
                paper,
            });
        }
    };
    let model = load(plugins, &real_model::silero_vad()?)?;
    let names: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let (study, _) = vad_state_study(model, plugins, &audio, &names, None)?;
    let mut table = vec![["intervention", "p at the chunk", "largest change after", "back within 0.05 after"]
        .map(String::from)
        .to_vec()];
    for i in &study.interventions {
        let t = i.chunk as usize;
        table.push(vec![
            i.name.clone(),
            format!("{:.3} -> {:.3}", study.clean[t], i.probabilities[t]),
            format!("{:.3}", i.largest_change_after),
            i.chunks_to_recover
                .map_or("never".to_string(), |n| format!("{n} chunks ({:.0} ms)", n as f64 * study.chunk_ms)),
        ]);
    }
    let paper = paper(question, claim, table, command);
    let output = StudyOutput::combined(&study, study.figures(), study.summary())?;
    Ok(Finding { heading: "A stateful model (Silero VAD)", subdir: "vad_state", output, key: "vad_state", paper })
}
