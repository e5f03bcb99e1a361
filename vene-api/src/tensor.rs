//! Tensor handles that cross the plugin boundary.
//!
//! Both sides link the same libtorch, so a tensor crosses as its libtorch handle: shallow (storage, autograd history
//! and device are shared), about a microsecond per crossing, no copy.

use std::{ffi::c_void, marker::PhantomData, mem};

use abi_stable::{std_types::RString, StableAbi};
use tch::Tensor;

/// A borrowed tensor, valid while the lender keeps its [`Tensor`] alive.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct TensorRef<'a> {
    handle: *mut c_void,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> TensorRef<'a> {
    pub fn new(tensor: &'a Tensor) -> Self {
        Self { handle: tensor.as_ptr() as *mut c_void, _borrow: PhantomData }
    }

    /// A new handle to the same tensor (refcount + 1), usable after the borrow ends.
    pub fn to_tensor(self) -> Tensor {
        // SAFETY: the handle came from a live `Tensor` of the same libtorch (the handshake guarantees that).
        unsafe { Tensor::clone_from_ptr(self.handle as _) }
    }
}

/// A tensor whose ownership moves to the receiver.
#[repr(transparent)]
#[derive(StableAbi)]
pub struct OwnedTensor {
    handle: *mut c_void,
}

// SAFETY: libtorch tensor handles are reference counted atomically and may move between threads.
unsafe impl Send for OwnedTensor {}

impl OwnedTensor {
    pub fn new(mut tensor: Tensor) -> Self {
        let handle = tensor.as_mut_ptr() as *mut c_void;
        mem::forget(tensor);
        Self { handle }
    }

    pub fn into_tensor(self) -> Tensor {
        let handle = self.handle;
        mem::forget(self);
        // SAFETY: `handle` was produced by `OwnedTensor::new` and is released exactly once.
        unsafe { Tensor::from_ptr(handle as _) }
    }
}

impl Drop for OwnedTensor {
    fn drop(&mut self) {
        // SAFETY: as in `into_tensor`; dropping the rebuilt `Tensor` releases the handle.
        drop(unsafe { Tensor::from_ptr(self.handle as _) });
    }
}

impl From<Tensor> for OwnedTensor {
    fn from(tensor: Tensor) -> Self {
        Self::new(tensor)
    }
}

/// A named tensor: an intervention parameter or a saved state entry.
#[repr(C)]
#[derive(StableAbi)]
pub struct NamedTensor {
    pub name: RString,
    pub tensor: OwnedTensor,
}

impl NamedTensor {
    pub fn new(name: impl Into<RString>, tensor: Tensor) -> Self {
        Self { name: name.into(), tensor: OwnedTensor::new(tensor) }
    }

    pub fn into_pair(self) -> (String, Tensor) {
        (self.name.into_string(), self.tensor.into_tensor())
    }
}
