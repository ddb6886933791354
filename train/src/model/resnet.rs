//! torchvision's ResNet-18/34/50 (v1.5: stride on the 3x3 conv), returning C5 with no
//! pooling, with torchvision's parameter layout (see [`torchvision_key_remapping`]) and its
//! initialisation: conv weights N(0, sqrt(2 / (k·k·out))), BN γ = 1 and β = 0, except
//! the last BN of every residual block, whose γ starts at 0.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;

use super::native::{conv2d, relu};
use super::norm::{batch_norm_layer, BatchNorm};
use crate::config::Arch;

/// A 3x3 or 1x1 (or 7x7) convolution without bias, initialised as torchvision does.
fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let std = (2.0 / (k * k * cout) as f64).sqrt();
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    batch_norm_layer(c, 1.0, device)
}

/// A BN whose γ starts at zero (the last of a residual branch).
fn bn_zero(c: usize, device: &Device) -> BatchNorm {
    batch_norm_layer(c, 0.0, device)
}

/// The projection shortcut: 1x1 conv with stride, then BN (torchvision's `downsample`).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Downsample {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        Downsample {
            conv: conv(cin, cout, 1, stride, device),
            bn: bn(cout, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(conv2d(&self.conv, x))
    }
}

/// The residual shortcut: the projection when there is one, else the input itself.
fn shortcut(downsample: &Option<Downsample>, x: Tensor<4>) -> Tensor<4> {
    match downsample {
        Some(d) => d.forward(x),
        None => x,
    }
}

/// ResNet-18/34's block: two 3x3 convs.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// The first 3x3 conv (with the stride), `cin → planes`.
    pub conv1: Conv2d,
    pub(crate) bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(cin: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || cin != planes).then(|| Downsample::new(cin, planes, stride, device));
        BasicBlock {
            conv1: conv(cin, planes, 3, stride, device),
            bn1: bn(planes, device),
            conv2: conv(planes, planes, 3, 1, device),
            bn2: bn_zero(planes, device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = shortcut(&self.downsample, x.clone());
        let out = relu(self.bn1.forward(conv2d(&self.conv1, x)));
        let out = self.bn2.forward(conv2d(&self.conv2, out));
        relu(out + identity)
    }
}

/// ResNet-50's block: 1x1, 3x3 (with the stride), 1x1 with 4x expansion.
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// The first 1x1 conv, `cin → planes`.
    pub conv1: Conv2d,
    pub(crate) bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// The last 1x1 conv, `planes → 4 * planes`.
    pub conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    fn new(cin: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let cout = planes * 4;
        let downsample = (stride != 1 || cin != cout).then(|| Downsample::new(cin, cout, stride, device));
        Bottleneck {
            conv1: conv(cin, planes, 1, 1, device),
            bn1: bn(planes, device),
            conv2: conv(planes, planes, 3, stride, device),
            bn2: bn(planes, device),
            conv3: conv(planes, cout, 1, 1, device),
            bn3: bn_zero(cout, device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = shortcut(&self.downsample, x.clone());
        let out = relu(self.bn1.forward(conv2d(&self.conv1, x)));
        let out = relu(self.bn2.forward(conv2d(&self.conv2, out)));
        let out = self.bn3.forward(conv2d(&self.conv3, out));
        relu(out + identity)
    }
}

/// A residual block of either kind.
#[allow(clippy::large_enum_variant)] // 8 to 16 blocks per model, built once
#[derive(Module, Debug)]
pub enum Block {
    /// ResNet-18/34.
    Basic(BasicBlock),
    /// ResNet-50.
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Block::Basic(b) => b.forward(x),
            Block::Bottleneck(b) => b.forward(x),
        }
    }
}

/// The backbone up to C5: `[n, 3, s, s]` to `[n, c5, s/32, s/32]`.
#[derive(Module, Debug)]
pub struct ResNet {
    /// The stem: a 7x7 conv, stride 2, from RGB to 64 channels.
    pub conv1: Conv2d,
    pub(crate) bn1: BatchNorm,
    maxpool: MaxPool2d,
    layer1: Vec<Block>,
    layer2: Vec<Block>,
    layer3: Vec<Block>,
    layer4: Vec<Block>,
}

impl ResNet {
    /// A freshly initialised backbone.
    pub fn new(arch: Arch, device: &Device) -> Self {
        let (blocks, bottleneck) = match arch {
            Arch::Resnet18 => ([2, 2, 2, 2], false),
            Arch::Resnet34 => ([3, 4, 6, 3], false),
            Arch::Resnet50 => ([3, 4, 6, 3], true),
        };
        let maxpool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let mut cin = 64;
        let mut layers = [64, 128, 256, 512]
            .iter()
            .zip(blocks)
            .enumerate()
            .map(|(i, (&planes, n))| {
                let stride = if i == 0 { 1 } else { 2 };
                (0..n)
                    .map(|b| {
                        let s = if b == 0 { stride } else { 1 };
                        let block = if bottleneck {
                            Block::Bottleneck(Bottleneck::new(cin, planes, s, device))
                        } else {
                            Block::Basic(BasicBlock::new(cin, planes, s, device))
                        };
                        cin = if bottleneck { planes * 4 } else { planes };
                        block
                    })
                    .collect::<Vec<_>>()
            });
        let (l1, l2, l3, l4) = (
            layers.next().unwrap(),
            layers.next().unwrap(),
            layers.next().unwrap(),
            layers.next().unwrap(),
        );
        ResNet {
            conv1: conv(3, 64, 7, 2, device),
            bn1: bn(64, device),
            maxpool,
            layer1: l1,
            layer2: l2,
            layer3: l3,
            layer4: l4,
        }
    }

    /// C5 features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.maxpool.forward(relu(self.bn1.forward(conv2d(&self.conv1, x))));
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .fold(x, |x, layer| layer.iter().fold(x, |x, block| block.forward(x)))
    }
}

/// Regex pairs that turn torchvision's names into this module's (for loading) — the
/// shortcut's `downsample.0`/`downsample.1` are `downsample.conv`/`downsample.bn` here.
pub fn torchvision_key_remapping() -> [(&'static str, &'static str); 2] {
    [
        (r"downsample\.0\.", "downsample.conv."),
        (r"downsample\.1\.", "downsample.bn."),
    ]
}
