//! High-level causal models (pyvene's `CausalModel`) declared in JSON, and the factual and counterfactual datasets
//! they generate as `vene train` data lines.
//!
//! ```json
//! {"variables": [
//!    {"name": "W", "values": {"entities": 1000}}, {"name": "X", "values": {"entities": 1000}},
//!    {"name": "WX", "function": "W == X"}, …, {"name": "O", "function": "WX == YZ"}],
//!  "output": "O",
//!  "sampling": {"patterns": [["a", "b", "c", "d"], ["a", "a", "b", "b"]]},
//!  "encoding": {"vectors": {"dim": 4, "seed": 0}}}
//! ```
//! Variables with `values` are inputs, sampled independently and uniformly unless `sampling.patterns` ties them
//! (equal letters take one value, different letters distinct values). Variables with a `function` (see [`expr`])
//! read variables declared before them. The output becomes a label: `labels` maps its value (as text) to a class id
//! or a text; without it booleans are 0/1, integers themselves, strings the text whose first token is the target.
//! The `encoding` turns input values into the neural model's inputs: `vectors` (one seeded random vector per
//! entity, concatenated; pyvene's tutorial inputs) or `text` (a template such as `"{A} + {B} ="`).

pub mod expr;
mod sampling;

use std::{collections::BTreeMap, path::Path};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value as Json};

pub use expr::{Expr, Value};
pub use sampling::{Counterfactual, Interventions};

use crate::error::{Result, VeneError};

/// The values an input variable takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Domain {
    /// Entities `0 … n-1` (objects compared by identity).
    Entities(i64),
    /// Integers `lo ..= hi`.
    Range([i64; 2]),
    /// An explicit list.
    OneOf(Vec<Value>),
}

impl Domain {
    fn size(&self) -> i64 {
        match self {
            Domain::Entities(n) => *n,
            Domain::Range([lo, hi]) => hi - lo + 1,
            Domain::OneOf(values) => values.len() as i64,
        }
    }

    fn value(&self, index: i64) -> Value {
        match self {
            Domain::Entities(_) => Value::Int(index),
            Domain::Range([lo, _]) => Value::Int(lo + index),
            Domain::OneOf(values) => values[index as usize].clone(),
        }
    }

    fn sample(&self, rng: &mut StdRng) -> Value {
        self.value(rng.gen_range(0..self.size()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableJson {
    name: String,
    #[serde(default)]
    values: Option<Domain>,
    #[serde(default)]
    function: Option<String>,
}

/// How input values become the neural model's inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Encoding {
    /// Each entity a random vector (uniform in `[low, high]`, rounded to 2 decimals as in pyvene's tutorial), the
    /// inputs' vectors concatenated into float inputs `(1, 1, inputs × dim)`.
    Vectors {
        dim: usize,
        #[serde(default = "minus_one")]
        low: f64,
        #[serde(default = "one")]
        high: f64,
        #[serde(default)]
        seed: u64,
    },
    /// A text with `{Name}` replaced by each input's value.
    Text(String),
}

fn minus_one() -> f64 {
    -1.0
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplingJson {
    #[serde(default)]
    patterns: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CausalModelJson {
    variables: Vec<VariableJson>,
    output: String,
    #[serde(default)]
    sampling: SamplingJson,
    encoding: Encoding,
    #[serde(default)]
    labels: Option<BTreeMap<String, Json>>,
}

/// One variable: an input with its domain, or a function (its source text, parsed) of earlier variables.
#[derive(Debug, Clone)]
pub enum Mechanism {
    Input(Domain),
    Function { source: String, expr: Expr, parents: Vec<usize> },
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub mechanism: Mechanism,
}

/// A parsed, checked causal model.
#[derive(Debug, Clone)]
pub struct CausalModel {
    pub variables: Vec<Variable>,
    /// Indices of the input variables, in declaration order.
    pub inputs: Vec<usize>,
    pub output: usize,
    patterns: Vec<Vec<String>>,
    encoding: Encoding,
    labels: Option<BTreeMap<String, Json>>,
    /// The entity vectors of the `vectors` encoding, `entities × dim`.
    vectors: Vec<Vec<f64>>,
}

/// A full assignment: one value per variable, in declaration order.
pub type Setting = Vec<Value>;

fn invalid(origin: &str, message: String) -> VeneError {
    VeneError::Config(format!("{origin}: {message}"))
}

impl CausalModel {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and checks a model; errors name `origin` and what is wrong.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let json: CausalModelJson =
            serde_json::from_str(text).map_err(|e| invalid(origin, format!("not a causal model: {e}")))?;
        let mut variables: Vec<Variable> = Vec::new();
        for declared in json.variables {
            let position = |name: &str| variables.iter().position(|v| v.name == name);
            if position(&declared.name).is_some() {
                return Err(invalid(origin, format!("variable '{}' is declared twice", declared.name)));
            }
            let mechanism = match (declared.values, declared.function) {
                (Some(domain), None) if domain.size() > 0 => Mechanism::Input(domain),
                (Some(_), None) => return Err(invalid(origin, format!("input '{}' has no values", declared.name))),
                (None, Some(source)) => {
                    let expr = Expr::parse(&source)
                        .map_err(|e| invalid(origin, format!("the function of '{}' ({source}): {e}", declared.name)))?;
                    let parents = expr
                        .variables()
                        .iter()
                        .map(|parent| {
                            position(parent).ok_or_else(|| {
                                invalid(
                                    origin,
                                    format!(
                                        "the function of '{}' reads '{parent}', which is not declared before it",
                                        declared.name
                                    ),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Mechanism::Function { source, expr, parents }
                }
                _ => {
                    return Err(invalid(
                        origin,
                        format!("variable '{}' needs exactly one of \"values\" and \"function\"", declared.name),
                    ))
                }
            };
            variables.push(Variable { name: declared.name, mechanism });
        }
        let inputs: Vec<usize> =
            (0..variables.len()).filter(|&i| matches!(variables[i].mechanism, Mechanism::Input(_))).collect();
        let names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
        let output = names.iter().position(|n| *n == json.output).ok_or_else(|| {
            invalid(origin, format!("the output '{}' is not a variable (variables: {})", json.output, names.join(", ")))
        })?;
        if inputs.is_empty() {
            return Err(invalid(origin, "no variable has \"values\": the model has no inputs".to_string()));
        }
        for pattern in &json.sampling.patterns {
            if pattern.len() != inputs.len() {
                return Err(invalid(
                    origin,
                    format!("the pattern {pattern:?} gives {} letters for {} inputs", pattern.len(), inputs.len()),
                ));
            }
        }
        let mut model = Self {
            variables,
            inputs,
            output,
            patterns: json.sampling.patterns,
            encoding: json.encoding,
            labels: json.labels,
            vectors: Vec::new(),
        };
        model.vectors = model.entity_vectors(origin)?;
        Ok(model)
    }

    fn entity_vectors(&self, origin: &str) -> Result<Vec<Vec<f64>>> {
        let Encoding::Vectors { dim, low, high, seed } = self.encoding else { return Ok(Vec::new()) };
        let mut entities = 0;
        for &input in &self.inputs {
            match &self.variables[input].mechanism {
                Mechanism::Input(Domain::Entities(n)) => entities = entities.max(*n),
                _ => {
                    return Err(invalid(
                        origin,
                        format!("the vectors encoding needs entity inputs; '{}' is not", self.variables[input].name),
                    ))
                }
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Ok((0..entities).map(|_| (0..dim).map(|_| round(rng.gen_range(low..=high))).collect()).collect())
    }

    pub fn index(&self, name: &str) -> Result<usize> {
        self.variables.iter().position(|v| v.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.variables.iter().map(|v| v.name.as_str()).collect();
            VeneError::Config(format!("'{name}' is not a variable of the causal model ({})", names.join(", ")))
        })
    }

    /// Runs the model on `inputs` (one value per input), with `fixed` variables held at the given values.
    pub fn run(&self, inputs: &[Value], fixed: &[(usize, Value)]) -> Result<Setting> {
        let mut setting: Setting = Vec::with_capacity(self.variables.len());
        let mut next_input = inputs.iter();
        for (index, variable) in self.variables.iter().enumerate() {
            let computed = match &variable.mechanism {
                Mechanism::Input(_) => next_input.next().cloned().ok_or_else(|| {
                    VeneError::Inputs(format!("{} input values for {} inputs", inputs.len(), self.inputs.len()))
                })?,
                Mechanism::Function { expr, .. } => {
                    let lookup = |name: &str| self.index(name).ok().map(|i| setting[i].clone());
                    expr.eval(&lookup)
                        .map_err(|e| VeneError::Inputs(format!("computing '{}' from {inputs:?}: {e}", variable.name)))?
                }
            };
            let value = fixed.iter().find(|(i, _)| *i == index).map_or(computed, |(_, v)| v.clone());
            setting.push(value);
        }
        Ok(setting)
    }

    /// pyvene's `run_interchange`: each `(variable, source inputs)` fixes the variable at its value on the source,
    /// then the base runs with all of them fixed.
    pub fn interchange(&self, base: &[Value], sources: &[(usize, Vec<Value>)]) -> Result<Setting> {
        let fixed = sources
            .iter()
            .map(|(variable, source)| Ok((*variable, self.run(source, &[])?[*variable].clone())))
            .collect::<Result<Vec<_>>>()?;
        self.run(base, &fixed)
    }

    /// The data-line form of a set of input values (`{"inputs": …}` or `{"text": […]}`).
    pub fn encode(&self, inputs: &[Value]) -> Json {
        match &self.encoding {
            Encoding::Vectors { .. } => {
                let features: Vec<f64> = inputs
                    .iter()
                    .flat_map(|v| match v {
                        Value::Int(entity) => self.vectors[*entity as usize].clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                json!({"inputs": [[features]]})
            }
            Encoding::Text(template) => {
                let mut text = template.clone();
                for (&input, value) in self.inputs.iter().zip(inputs) {
                    text = text.replace(&format!("{{{}}}", self.variables[input].name), &value.to_string());
                }
                json!({"text": [text]})
            }
        }
    }

    /// The label an output value becomes.
    pub fn label(&self, output: &Value) -> Result<Json> {
        if let Some(labels) = &self.labels {
            return labels.get(&output.to_string()).cloned().ok_or_else(|| {
                let known: Vec<&String> = labels.keys().collect();
                VeneError::Config(format!("the output value {output} has no entry in \"labels\" ({known:?})"))
            });
        }
        Ok(match output {
            Value::Bool(b) => json!(i64::from(*b)),
            Value::Int(i) => json!(i),
            Value::Str(s) => json!(s),
        })
    }
}
