//! The teacher's exponential moving average of the student's parameters. BatchNorm
//! running statistics are not parameters: the teacher computes its own in its forward
//! passes (it runs in train mode), as in the reference, whose momentum update walks
//! `parameters()` only.

use burn::backend::tensor::FloatTensor;
use burn::backend::Dispatch;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use super::native::NativeUpdate;

use crate::model::Encoder;

/// Whether a dotted module path ends at a BatchNorm running statistic.
fn is_running_stat(path: &str) -> bool {
    path.ends_with(".running_mean") || path.ends_with(".running_var")
}

struct Blend {
    path: Vec<String>,
    student: std::vec::IntoIter<FloatTensor<Dispatch>>,
    momentum: f64,
}

impl ModuleMapper for Blend {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if is_running_stat(&self.path.join(".")) {
            return param;
        }
        let s = self
            .student
            .next()
            .expect("teacher and student have the same parameters");
        param.map(|t| {
            let tracked = t.device().is_autodiff();
            let t = t.without_autodiff().into_dispatch();
            let next = Tensor::<D>::from_dispatch(<Dispatch as NativeUpdate>::ema_native(t, s, self.momentum));
            if tracked {
                next.autodiff()
            } else {
                next
            }
        })
    }
}

/// `teacher ← m·teacher + (1 − m)·student`, parameter by parameter ([`NativeUpdate`]:
/// two ATen calls each on LibTorch, as the reference's `mul_(m).add_(s, alpha=1 − m)`);
/// the teacher's BatchNorm running statistics stay its own.
pub fn ema_update(teacher: Encoder, student: &Encoder, momentum: f64) -> Encoder {
    struct Collect(Vec<FloatTensor<Dispatch>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().without_autodiff().into_dispatch());
        }
    }
    let mut params = Collect(Vec::new());
    visit_parameters(student, &mut params);
    teacher.map(&mut Blend {
        path: Vec::new(),
        student: params.0.into_iter(),
        momentum,
    })
}

/// Visits `module`'s parameters with `inner`, not its BatchNorm running statistics
/// (buffers, which Burn's visitors reach as they reach parameters).
pub(crate) fn visit_parameters<M: Module, V: ModuleVisitor>(module: &M, inner: &mut V) {
    struct Parameters<'a, V> {
        path: Vec<String>,
        inner: &'a mut V,
    }
    impl<V: ModuleVisitor> ModuleVisitor for Parameters<'_, V> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !is_running_stat(&self.path.join(".")) {
                self.inner.visit_float(param);
            }
        }
    }
    module.visit(&mut Parameters {
        path: Vec::new(),
        inner,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainConfig;

    fn first(t: Tensor<1>) -> f32 {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn parameters_move_and_running_statistics_stay() {
        let device = Device::flex();
        let cfg = TrainConfig::tiny();
        let student = Encoder::new(&cfg.model, &device);
        let teacher = Encoder::new(&cfg.model, &device);
        let stat = |e: &Encoder| first(e.backbone.bn1.running_var.value());
        let param = |e: &Encoder| first(e.backbone.conv1.weight.val().flatten(0, 3));
        let (t0, s0) = (param(&teacher), param(&student));
        // Make the student's statistics differ from the teacher's.
        student.backbone.bn1.running_var.set(Tensor::full([64], 7.0, &device));
        let teacher = ema_update(teacher, &student, 0.5);
        assert_eq!(stat(&teacher), 1.0, "the teacher's running variance moved");
        assert!((param(&teacher) - (0.5 * t0 + 0.5 * s0)).abs() < 1e-6);
    }
}
