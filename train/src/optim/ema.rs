//! The teacher's exponential moving average of the student's parameters (not of the BN
//! running statistics, which the teacher computes itself, as in the reference).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::model::Encoder;

struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().detach().flatten(0, D - 1));
    }
}

struct Blend {
    student: std::vec::IntoIter<Tensor<1>>,
    momentum: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let s = self
            .student
            .next()
            .expect("teacher and student have the same parameters");
        param.map(|t| {
            let shape = t.shape();
            (t.detach() * self.momentum + s.reshape(shape) * (1.0 - self.momentum)).detach()
        })
    }
}

/// `teacher ← m·teacher + (1 − m)·student`, parameter by parameter.
pub fn ema_update(teacher: Encoder, student: &Encoder, momentum: f64) -> Encoder {
    let mut collect = Collect(Vec::new());
    student.visit(&mut collect);
    teacher.map(&mut Blend {
        student: collect.0.into_iter(),
        momentum,
    })
}
