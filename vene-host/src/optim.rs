//! Adam whose state is plain tensors, so a training checkpoint can save it and a resumed run continue exactly where
//! the interrupted one stopped. The update is torch's Adam (no weight decay, no AMSGrad); `tch::COptimizer` runs the
//! same update but gives no access to its moments.

use tch::Tensor;

use crate::error::{Result, VeneError};

pub struct Adam {
    learning_rate: f64,
    betas: (f64, f64),
    eps: f64,
    /// Updates done so far (the bias correction's exponent).
    steps: i64,
    parameters: Vec<(String, Tensor)>,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
}

impl Adam {
    pub fn new(parameters: Vec<(String, Tensor)>, learning_rate: f64, betas: (f64, f64), eps: f64) -> Self {
        let zeros = |parameters: &[(String, Tensor)]| parameters.iter().map(|(_, p)| p.zeros_like()).collect();
        Self {
            learning_rate,
            betas,
            eps,
            steps: 0,
            first_moments: zeros(&parameters),
            second_moments: zeros(&parameters),
            parameters,
        }
    }

    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    pub fn zero_grad(&mut self) {
        for (_, parameter) in &mut self.parameters {
            parameter.zero_grad();
        }
    }

    pub fn step(&mut self) {
        let _no_grad = tch::no_grad_guard();
        self.steps += 1;
        let (beta1, beta2) = self.betas;
        let bias_correction1 = 1.0 - beta1.powi(self.steps as i32);
        let bias_correction2 = 1.0 - beta2.powi(self.steps as i32);
        for (((_, parameter), first), second) in
            self.parameters.iter_mut().zip(&mut self.first_moments).zip(&mut self.second_moments)
        {
            let grad = parameter.grad();
            if !grad.defined() {
                continue;
            }
            let _ = first.g_mul_scalar_(beta1).g_add_(&(&grad * (1.0 - beta1)));
            let _ = second.g_mul_scalar_(beta2).addcmul_(&grad, &(&grad * (1.0 - beta2)));
            let denominator = (second.sqrt() / bias_correction2.sqrt()) + self.eps;
            let step_size = self.learning_rate / bias_correction1;
            let _ = parameter.addcdiv_(&(&*first * -step_size), &denominator);
        }
    }

    /// The moments and the step count, by name, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("adam.steps".to_string(), Tensor::from(self.steps))];
        for (((name, _), first), second) in self.parameters.iter().zip(&self.first_moments).zip(&self.second_moments) {
            state.push((format!("adam.first_moment.{name}"), first.shallow_clone()));
            state.push((format!("adam.second_moment.{name}"), second.shallow_clone()));
        }
        state
    }

    /// Restores what [`Adam::state`] saved; every parameter's moments must be there with its shape.
    pub fn load_state(&mut self, find: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        let missing = |name: &str| VeneError::Config(format!("the checkpoint has no {name}"));
        self.steps = find("adam.steps").ok_or_else(|| missing("adam.steps"))?.int64_value(&[]);
        let _no_grad = tch::no_grad_guard();
        for (((name, parameter), first), second) in
            self.parameters.iter().zip(&mut self.first_moments).zip(&mut self.second_moments)
        {
            for (slot, key) in [(first, "first_moment"), (second, "second_moment")] {
                let key = format!("adam.{key}.{name}");
                let saved = find(&key).ok_or_else(|| missing(&key))?;
                if saved.size() != parameter.size() {
                    return Err(VeneError::Config(format!(
                        "the checkpoint's {key} has shape {:?}, the parameter {:?}",
                        saved.size(),
                        parameter.size()
                    )));
                }
                slot.copy_(&saved);
            }
        }
        Ok(())
    }
}
