//! `vene._native.Model`: a model loaded through an adapter plugin, its hook-site catalog, plain forward passes
//! and its tokenizer.

use std::{cell::RefCell, path::PathBuf, rc::Rc};

use pyo3::{
    prelude::*,
    types::{PyDict, PyList},
};
use tch::Tensor;
use vene_host::{
    hub,
    model::{parse_device, parse_dtype, ForwardInputs, LoadedModel},
    plugins::{PluginSearch, PluginSet},
    text::TextTokenizer,
};

use crate::{
    errors::{guard, raise, released, OrRaise},
    tensor,
};

thread_local! {
    /// Plugin sets by search directories: a library is loaded once per process and never unloaded.
    static PLUGIN_SETS: RefCell<Vec<(Vec<PathBuf>, Rc<PluginSet>)>> = const { RefCell::new(Vec::new()) };
}

/// The plugins found in `dirs` (loaded on first use, then shared).
pub fn plugin_set(dirs: Vec<PathBuf>) -> PyResult<Rc<PluginSet>> {
    if let Some(found) = PLUGIN_SETS.with(|sets| sets.borrow().iter().find(|(d, _)| *d == dirs).map(|(_, s)| s.clone()))
    {
        return Ok(found);
    }
    let set = Rc::new(PluginSet::load(&PluginSearch::in_dirs(&dirs)).or_raise()?);
    PLUGIN_SETS.with(|sets| sets.borrow_mut().push((dirs, set.clone())));
    Ok(set)
}

/// A loaded model with the plugins that serve it.
#[pyclass(unsendable, module = "vene._native")]
pub struct Model {
    pub model: LoadedModel,
    pub plugins: Rc<PluginSet>,
    pub tokenizer: Option<Rc<TextTokenizer>>,
}

/// Forward inputs from optional tensors (sharing their storage).
pub fn forward_inputs(
    input_ids: Option<&Bound<'_, PyAny>>,
    attention_mask: Option<&Bound<'_, PyAny>>,
    features: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<ForwardInputs> {
    let input_ids = tensor::optional(input_ids, &format!("{what}['input_ids']"))?;
    let features = tensor::optional(features, &format!("{what}['inputs_embeds']"))?;
    if input_ids.is_none() == features.is_none() {
        return Err(raise(format!(
            "invalid inputs: {what} needs exactly one of 'input_ids' (token ids) and 'inputs_embeds' / 'inputs' \
             (float features)"
        )));
    }
    Ok(ForwardInputs {
        input_ids,
        features,
        attention_mask: tensor::optional(attention_mask, &format!("{what}['attention_mask']"))?,
        past: Vec::new(),
        use_cache: false,
        output_positions: None,
    })
}

#[pymethods]
impl Model {
    /// Loads a Hugging Face directory, a GGUF file or a hub repo id with the plugins found in `plugin_dirs`.
    #[staticmethod]
    fn load(path: &str, device: &str, dtype: &str, plugin_dirs: Vec<PathBuf>) -> PyResult<Self> {
        guard("loading the model", || {
            let device = parse_device(device).or_raise()?;
            let dtype = parse_dtype(dtype).or_raise()?;
            let plugins = plugin_set(plugin_dirs)?;
            let location = hub::resolve_model(path).or_raise()?;
            vene_host::real_model::note_terms_on_first_use(&location);
            let model = LoadedModel::load(&plugins, &location, device, dtype).or_raise()?;
            let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type).or_raise()?.map(Rc::new);
            Ok(Self { model, plugins, tokenizer })
        })
    }

    /// Where the model was loaded from.
    #[getter]
    fn path(&self) -> String {
        self.model.dir().display().to_string()
    }

    #[getter]
    fn device(&self) -> String {
        match self.model.device() {
            tch::Device::Cuda(index) => format!("cuda:{index}"),
            _ => "cpu".to_string(),
        }
    }

    /// The hook-site catalog: model type, sizes and every component with its layout, width, layers and units.
    fn catalog<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let catalog = self.model.catalog();
        let dict = PyDict::new(py);
        dict.set_item("model_type", catalog.model_type.as_str())?;
        dict.set_item("num_layers", catalog.num_layers)?;
        dict.set_item("num_heads", catalog.num_heads)?;
        dict.set_item("hidden_size", catalog.hidden_size)?;
        dict.set_item("vocab_size", catalog.vocab_size)?;
        dict.set_item("max_positions", catalog.max_positions)?;
        let components = PyList::empty(py);
        for component in catalog.components.iter() {
            let entry = PyDict::new(py);
            entry.set_item("name", component.name.as_str())?;
            entry.set_item("layout", format!("{:?}", component.layout))?;
            entry.set_item("dim", component.dim)?;
            entry.set_item("layers", component.layers)?;
            entry.set_item("units", component.layout.units().to_vec())?;
            let paths: Vec<&str> = component.module_paths.iter().map(|p| p.as_str()).collect();
            entry.set_item("module_paths", paths)?;
            components.append(entry)?;
        }
        dict.set_item("components", components)?;
        Ok(dict)
    }

    /// One forward pass with no intervention; returns the model's output (logits).
    #[pyo3(signature = (input_ids=None, attention_mask=None, features=None))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        input_ids: Option<&Bound<'py, PyAny>>,
        attention_mask: Option<&Bound<'py, PyAny>>,
        features: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inputs = forward_inputs(input_ids, attention_mask, features, "the inputs")?;
        let output = released(py, "the forward pass", || self.model.forward_plain(&inputs).or_raise())?;
        tensor::to_py(py, output.output)
    }

    /// Token ids of `text` as the model reads a prompt (with its BOS when it uses one), or without special tokens.
    #[pyo3(signature = (text, special_tokens=true))]
    fn encode(&self, text: &str, special_tokens: bool) -> PyResult<Vec<i64>> {
        let tokenizer = self.tokenizer()?;
        if special_tokens {
            tokenizer.encode(text).or_raise()
        } else {
            tokenizer.encode_plain(text).or_raise()
        }
    }

    fn decode(&self, ids: Vec<i64>) -> PyResult<String> {
        Ok(self.tokenizer()?.decode(&ids))
    }

    /// `texts` tokenized and right-padded: `(input_ids, attention_mask)`.
    fn tokenize<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        if texts.is_empty() {
            return Err(raise("invalid inputs: no texts to tokenize (give at least one)"));
        }
        let (ids, mask): (Tensor, Tensor) = self.tokenizer()?.encode_batch(&texts).or_raise()?;
        let device = self.model.device();
        Ok((tensor::to_py(py, ids.to_device(device))?, tensor::to_py(py, mask.to_device(device))?))
    }
}

impl Model {
    pub fn tokenizer(&self) -> PyResult<&TextTokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| {
            raise(format!(
                "{} has no tokenizer (no tokenizer.json, not a GGUF with a vocabulary, not GPT-2 style): pass input_ids",
                self.model.dir().display()
            ))
        })
    }
}
