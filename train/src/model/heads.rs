//! The heads on top of the backbone: the projector (1x1 convs), the semantic grouping
//! (prototypes, soft assignments, attentive pooling into slots) and the slot predictor.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};

use super::native::conv2d;
use super::norm::{batch_norm_layer, BatchNorm};
use crate::amp;

/// DINO-style weight init: N(0, 0.02) (PyTorch's `trunc_normal_(std=.02)` truncates at
/// ±2, a hundred standard deviations out), biases 0.
fn head_init() -> Initializer {
    Initializer::Normal { mean: 0.0, std: 0.02 }
}

fn conv1x1(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [1, 1])
        .with_initializer(head_init())
        .init(device)
        .zero_bias()
}

fn linear(cin: usize, cout: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(cin, cout).with_initializer(head_init()).init(device);
    if let Some(b) = &l.bias {
        l.bias = Some(burn::module::Param::from_tensor(b.val().zeros_like()));
    }
    l
}

/// `layer.forward(x)` in the autocast precision when one is set ([`amp::autocast`]: input,
/// weight and bias cast down, the output left in that precision).
fn dense(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    let weight = amp::down_param(&layer.weight);
    let out = burn::tensor::module::linear(amp::down(x), weight, None);
    match &layer.bias {
        Some(bias) => out + amp::down_param(bias).unsqueeze_dim(0),
        None => out,
    }
}

trait ZeroBias {
    fn zero_bias(self) -> Self;
}

impl ZeroBias for Conv2d {
    fn zero_bias(mut self) -> Self {
        if let Some(b) = &self.bias {
            self.bias = Some(burn::module::Param::from_tensor(b.val().zeros_like()));
        }
        self
    }
}

/// `DINOHead2d`: 1x1 conv → BN → GELU → 1x1 conv → BN → GELU → 1x1 conv.
#[derive(Module, Debug)]
pub struct Projector {
    /// The first 1x1 conv, `cin → hidden`.
    pub conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// The last 1x1 conv, `hidden → out`.
    pub conv3: Conv2d,
}

impl Projector {
    /// `cin → hidden → hidden → out`.
    pub fn new(cin: usize, hidden: usize, out: usize, device: &Device) -> Self {
        Projector {
            conv1: conv1x1(cin, hidden, device),
            bn1: batch_norm_layer(hidden, 1.0, device),
            conv2: conv1x1(hidden, hidden, device),
            bn2: batch_norm_layer(hidden, 1.0, device),
            conv3: conv1x1(hidden, out, device),
        }
    }

    /// `[n, cin, h, w]` to `[n, out, h, w]`, in f32 (under autocast the layers compute in
    /// its precision and the output comes back to f32 for the grouping).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = gelu(self.bn1.forward(conv2d(&self.conv1, x)));
        let x = gelu(self.bn2.forward(conv2d(&self.conv2, x)));
        amp::up(conv2d(&self.conv3, x))
    }
}

/// `DINOHead` with three layers: linear → BN1d → GELU → linear → BN1d → GELU → linear.
#[derive(Module, Debug)]
pub struct Predictor {
    fc1: Linear,
    bn1: BatchNorm,
    fc2: Linear,
    bn2: BatchNorm,
    /// The last linear layer, `hidden → dim`.
    pub fc3: Linear,
}

impl Predictor {
    /// `dim → hidden → hidden → dim`.
    pub fn new(dim: usize, hidden: usize, device: &Device) -> Self {
        Predictor {
            fc1: linear(dim, hidden, device),
            bn1: batch_norm_layer(hidden, 1.0, device),
            fc2: linear(hidden, hidden, device),
            bn2: batch_norm_layer(hidden, 1.0, device),
            fc3: linear(hidden, dim, device),
        }
    }

    /// `[n, dim]` to `[n, dim]`, in f32 (as [`Projector::forward`]).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = gelu(self.bn1.forward(dense(&self.fc1, x)));
        let x = gelu(self.bn2.forward(dense(&self.fc2, x)));
        amp::up(dense(&self.fc3, x))
    }
}

/// Semantic grouping: K learnable prototypes (N(0, 1)), cosine scores against every
/// pixel, a softmax over prototypes at `temp` (+1e-6), and attentive pooling into slots.
#[derive(Module, Debug)]
pub struct Grouping {
    /// The K prototypes, one row of `dim` features each.
    pub slot_embed: Embedding,
    temp: f64,
}

/// L2-normalises along `dim` like `F.normalize` (`x / max(‖x‖, 1e-12)`).
pub fn l2_normalize<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let norm = x.clone().powi_scalar(2).sum_dim(dim).sqrt().clamp_min(1e-12);
    x / norm
}

impl Grouping {
    /// `k` prototypes of `dim` features, softmax temperature `temp`.
    pub fn new(k: usize, dim: usize, temp: f64, device: &Device) -> Self {
        Grouping {
            slot_embed: EmbeddingConfig::new(k, dim).init(device),
            temp,
        }
    }

    /// The softmax temperature of the scores.
    pub fn temp(&self) -> f64 {
        self.temp
    }

    /// The prototypes, `[k, dim]`.
    pub fn prototypes(&self) -> Tensor<2> {
        self.slot_embed.weight.val()
    }

    /// `x: [n, dim, h, w]` to (slots `[n, k, dim]`, scores `[n, k, h, w]`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<3>, Tensor<4>) {
        let [n, d, h, w] = x.dims();
        let protos = l2_normalize(self.prototypes(), 1);
        let k = protos.dims()[0];
        let flat = x.reshape([n, d, h * w]); // [n, d, hw]
        let dots = protos
            .unsqueeze_dim::<3>(0)
            .expand([n, k, d])
            .matmul(l2_normalize(flat.clone(), 1)); // [n, k, hw]
        let attn = softmax(dots.clone() / self.temp, 1) + 1e-6;
        let attn = attn.clone() / attn.sum_dim(2);
        let slots = attn.matmul(flat.swap_dims(1, 2)); // [n, k, d]
        (slots, dots.reshape([n, k, h, w]))
    }
}
