//! A module buffer, as PyTorch's `register_buffer` makes: a tensor the forward pass
//! replaces (BatchNorm's running statistics), saved, loaded and mapped like a parameter
//! under its field's name, never trained.
//!
//! Burn's `RunningState` keeps one pending value per thread and averages them on the next
//! read: one division per statistic per forward pass, an ATen call each on LibTorch (184 of
//! a ResNet-18 step's), for the data-parallel threads of Burn's learner, which slotcon does
//! not use (its ranks are processes). A `Buffer` holds its one value and a new one replaces
//! it at once. A clone is a copy: what one forward writes into it, the other does not see.

use std::sync::Mutex;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param, ParamId,
};
use burn::prelude::*;

/// One tensor a module's forward pass may replace.
#[derive(Debug)]
pub struct Buffer<const D: usize> {
    id: ParamId,
    value: Mutex<Tensor<D>>,
}

impl<const D: usize> Buffer<D> {
    /// A buffer holding `value`, under a fresh id.
    pub fn new(value: Tensor<D>) -> Self {
        Buffer::with_id(ParamId::new(), value)
    }

    fn with_id(id: ParamId, value: Tensor<D>) -> Self {
        Buffer {
            id,
            value: Mutex::new(value),
        }
    }

    /// The value now.
    pub fn value(&self) -> Tensor<D> {
        self.lock().clone()
    }

    /// Makes `value` the buffer's value, detached from any graph.
    pub fn set(&self, value: Tensor<D>) {
        *self.lock() = value.detach();
    }

    /// The value; a panic elsewhere while it was held leaves the last value written.
    fn lock(&self) -> std::sync::MutexGuard<'_, Tensor<D>> {
        self.value.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn into_value(self) -> Tensor<D> {
        self.value.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<const D: usize> Clone for Buffer<D> {
    fn clone(&self) -> Self {
        Buffer::with_id(self.id, self.value())
    }
}

impl<const D: usize> Module for Buffer<D> {
    fn collect_devices(&self, mut devices: Devices) -> Devices {
        let device = self.lock().device();
        if !devices.contains(&device) {
            devices.push(device);
        }
        devices
    }

    fn fork(self, device: &Device) -> Self {
        self.to_device(device)
    }

    fn to_device(self, device: &Device) -> Self {
        let id = self.id;
        Buffer::with_id(id, self.into_value().to_device(device))
    }

    fn train(self) -> Self {
        let id = self.id;
        Buffer::with_id(id, self.into_value().autodiff())
    }

    fn valid(&self) -> Self {
        Buffer::with_id(self.id, self.value().without_autodiff())
    }

    fn materialize(self) -> Self {
        self
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        visitor.visit_float(&Param::initialized(self.id, self.value()));
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        let id = self.id;
        let param = mapper.map_float(Param::initialized(id, self.into_value()));
        let (id, value, _) = param.consume();
        // A buffer is not an optimiser's target: whatever a mapper did, it takes no gradient.
        Buffer::with_id(id, value.set_require_grad(false))
    }
}

impl<const D: usize> ModuleDisplayDefault for Buffer<D> {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&"Buffer".to_string()).optional()
    }
}

impl<const D: usize> ModuleDisplay for Buffer<D> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(b: &Buffer<1>) -> f32 {
        b.value().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn a_value_set_is_read_at_once_and_a_clone_is_a_copy() {
        let device = Device::flex();
        let b = Buffer::new(Tensor::<1>::zeros([2], &device));
        let copy = b.clone();
        b.set(Tensor::full([2], 3.0, &device));
        assert_eq!(first(&b), 3.0);
        assert_eq!(first(&copy), 0.0, "the clone saw the original's write");
        let mut ids = Vec::new();
        struct Ids<'a>(&'a mut Vec<ParamId>);
        impl ModuleVisitor for Ids<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.id);
            }
        }
        b.visit(&mut Ids(&mut ids));
        copy.visit(&mut Ids(&mut ids));
        assert_eq!(ids[0], ids[1], "a clone keeps the id a checkpoint names it by");
    }
}
