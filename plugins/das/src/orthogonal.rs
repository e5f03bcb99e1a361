//! torch's orthogonal parametrisation (`torch.nn.utils.parametrizations.orthogonal` with trivialisation): the weight
//! is `base @ Q(original)`, `Q` the matrix exponential of the skew part for square matrices and a product of
//! Householder reflectors for tall ones. Training updates `original`; `base` is fixed.

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};
use vene_api::{PluginError, PluginResult};

use vene_intervention_kit::load_named;

const ORIGINAL: &str = "rotate_layer.parametrizations.weight.original";
const BASE: &str = "rotate_layer.parametrizations.weight.0.base";
/// The widest rotation: its `n × n` base is then 1 GiB in f32 (and its QR draw takes a while).
const MAX_WIDTH: i64 = 16384;

pub struct Orthogonal {
    /// `(n, k)`, trained.
    original: Tensor,
    /// `(n, n)` orthogonal.
    base: Tensor,
}

impl Orthogonal {
    /// A random orthogonal `n × k` weight (as `torch.nn.init.orthogonal_` draws it), seeded; refused when the
    /// `n × n` base torch's parametrisation keeps would not be reasonable to hold.
    pub fn new(n: i64, k: i64, seed: u64, kind: Kind, device: Device) -> PluginResult<Self> {
        if n > MAX_WIDTH {
            return Err(PluginError::invalid_config(format!(
                "a rotation of width {n} would keep a {n} × {n} base ({:.1} GiB); the widest allowed is {MAX_WIDTH} \
                 (select fewer units, or give the intervention \"keep_last_dim\": true to rotate each unit's own \
                 vector with one shared rotation)",
                (n as f64).powi(2) * 4.0 / f64::from(1u32 << 30)
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let samples: Vec<f32> = (0..n * n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let (q, r) = Tensor::linalg_qr(&Tensor::from_slice(&samples).view([n, n]), "reduced");
        // Fix the signs so the draw is uniform over orthogonal matrices.
        let base = q * r.diagonal(0, -2, -1).sign().unsqueeze(0);
        // -I: with the trivialisation, Q(original) is then the identity and the weight starts at base[:, :k].
        let original = -Tensor::eye_m(n, k, (kind, Device::Cpu));
        Ok(Self {
            original: original.to_device(device).set_requires_grad(true),
            base: base.to_kind(kind).to_device(device),
        })
    }

    /// The effective `(n, k)` weight.
    pub fn weight(&self) -> Tensor {
        let (n, k) = self.original.size2().expect("a matrix");
        let q = if n == k {
            let lower = self.original.tril(0);
            (&lower - lower.tr()).linalg_matrix_exp()
        } else {
            let reflectors = self.original.tril(-1);
            let tau = 2.0 / (1.0 + (&reflectors * &reflectors).sum_dim_intlist(-2, false, None::<Kind>));
            let q = reflectors.linalg_householder_product(&tau);
            // The diagonal of `original` holds ±1 signs; it is not differentiated through.
            q * self
                .original
                .diagonal(0, -2, -1)
                .detach()
                .to_kind(Kind::Int)
                .to_kind(self.original.kind())
                .unsqueeze(-2)
        };
        self.base.matmul(&q)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![(ORIGINAL.to_string(), self.original.shallow_clone())]
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![(ORIGINAL.to_string(), self.original.detach().copy()), (BASE.to_string(), self.base.copy())]
    }

    /// Loads the rotation's entries and `extra` named slots from a saved state dict.
    pub fn load_state(
        &mut self,
        name: &str,
        state: Vec<(String, Tensor)>,
        extra: &mut [(&str, &mut Tensor)],
    ) -> PluginResult<()> {
        let mut slots: Vec<(&str, &mut Tensor)> = vec![(ORIGINAL, &mut self.original), (BASE, &mut self.base)];
        for (slot_name, tensor) in extra.iter_mut() {
            slots.push((*slot_name, &mut **tensor));
        }
        load_named(name, &mut slots, state)
    }
}
