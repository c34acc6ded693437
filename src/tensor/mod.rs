//! The tensor type: reference-counted storage viewed through a [`Layout`].
//!
//! A `Tensor` is a cheap handle (`Arc`) to an immutable node: the storage it views,
//! the view's layout, and, when it was computed from tensors that require gradients,
//! the [`Op`] that produced it. Views (reshape of contiguous data, permute, broadcast,
//! narrow) share storage; everything else allocates a new contiguous buffer.

mod layout;

pub use crate::kernels::Element;
pub use layout::{
    broadcast_shapes, contiguous_strides, for_each_run_zip, normalize_axes, normalize_axis, Layout,
};

use crate::autograd::{is_grad_enabled, Op};
use crate::error::{Result, TensorError};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Unique identity of a tensor node; gradients are stored under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl TensorId {
    /// No tensor's id: stands for a missing one in keys.
    pub(crate) const NONE: TensorId = TensorId(0);

    fn fresh() -> Self {
        TensorId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The id the next tensor made will get: tensors made between two readings have ids
    /// in between (what [`crate::autograd::scope`] attributes nodes to layers by).
    pub(crate) fn next() -> Self {
        TensorId(NEXT_ID.load(Ordering::Relaxed))
    }
}

/// The slot holding the op that computed a node, shared by the node and its graph handles.
pub(crate) type OpSlot<T> = Arc<Mutex<Option<Op<T>>>>;

pub(crate) struct Node<T: Element> {
    id: TensorId,
    storage: Arc<Vec<T>>,
    layout: Layout,
    requires_grad: bool,
    /// How this node was computed; `None` for leaves and after backward freed the graph.
    op: OpSlot<T>,
    /// True for nodes created without an op (leaves); kept after the op is freed.
    is_leaf: bool,
    /// A graph handle: the node's identity, shape and op, without its values.
    is_handle: bool,
    /// How many times [`Tensor::update_data`] changed the values in place: with the id,
    /// it names the values (what a cache of values derived from them is keyed by).
    version: u64,
}

impl<T: Element> Drop for Node<T> {
    /// The last holder of a storage gives its buffer back for reuse ([`crate::memory`]).
    fn drop(&mut self) {
        if let Some(data) = Arc::get_mut(&mut self.storage) {
            crate::memory::give(std::mem::take(data));
        }
    }
}

/// An n-dimensional array of `T` that records the operations applied to it for autodiff.
pub struct Tensor<T: Element> {
    node: Arc<Node<T>>,
}

impl<T: Element> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor {
            node: Arc::clone(&self.node),
        }
    }
}

impl<T: Element> Tensor<T> {
    // ---------------------------------------------------------------- construction

    /// A leaf over `storage` viewed through `layout`, which must address only `storage`
    /// (the [`Layout`] invariant).
    pub(crate) fn from_storage(storage: Arc<Vec<T>>, layout: Layout) -> Self {
        debug_assert!(layout.storage_extent() <= storage.len());
        Tensor {
            node: Arc::new(Node {
                id: TensorId::fresh(),
                storage,
                layout,
                requires_grad: false,
                op: Arc::new(Mutex::new(None)),
                is_leaf: true,
                is_handle: false,
                version: 0,
            }),
        }
    }

    /// A contiguous leaf owning `data` of shape `shape` (length already checked).
    pub(crate) fn from_contiguous(data: Vec<T>, shape: &[usize]) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Self::from_storage(Arc::new(data), Layout::contiguous(shape))
    }

    /// The result of an op: records `op` when grad mode is on and an input requires grad.
    pub(crate) fn from_op(storage: Arc<Vec<T>>, layout: Layout, op: Op<T>) -> Self {
        debug_assert!(layout.storage_extent() <= storage.len());
        let requires_grad = is_grad_enabled() && op.inputs().iter().any(|t| t.requires_grad());
        Tensor {
            node: Arc::new(Node {
                id: TensorId::fresh(),
                storage,
                layout,
                requires_grad,
                op: Arc::new(Mutex::new(if requires_grad { Some(op) } else { None })),
                is_leaf: !requires_grad,
                is_handle: false,
                version: 0,
            }),
        }
    }

    /// Contiguous result of an op.
    pub(crate) fn from_op_vec(data: Vec<T>, shape: &[usize], op: Op<T>) -> Self {
        Self::from_op(Arc::new(data), Layout::contiguous(shape), op)
    }

    /// The output of a [`CustomOp`](crate::autograd::CustomOp) with row-major `data`.
    pub fn from_custom_op(
        data: Vec<T>,
        shape: &[usize],
        op: Box<dyn crate::autograd::CustomOp<T>>,
    ) -> Result<Self> {
        Self::from_custom_op_storage(Arc::new(data), shape, op)
    }

    /// [`Tensor::from_custom_op`] over storage the op may share (to keep the output's
    /// values for its derivative without a copy).
    pub(crate) fn from_custom_op_storage(
        data: Arc<Vec<T>>,
        shape: &[usize],
        op: Box<dyn crate::autograd::CustomOp<T>>,
    ) -> Result<Self> {
        let expected = shape.iter().product::<usize>();
        if data.len() != expected {
            return Err(TensorError::LengthMismatch {
                op: "from_custom_op",
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        Ok(Self::from_op(
            data,
            Layout::contiguous(shape),
            Op::Custom(op),
        ))
    }

    /// A tensor of `shape` from row-major `data`; errors if the lengths disagree.
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let t = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!((t.shape(), t.numel()), (&[2, 3][..], 6));
    /// // Views share storage: the transpose is not a copy, and reads through its strides.
    /// assert_eq!(t.transpose(0, 1)?.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// assert_eq!(Tensor::<f64>::zeros(&[2, 2]).to_vec(), vec![0.0; 4]);
    /// assert!(Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3]).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let expected = shape.iter().product::<usize>();
        if data.len() != expected {
            return Err(TensorError::LengthMismatch {
                op: "from_vec",
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        Ok(Self::from_contiguous(data, shape))
    }

    /// A tensor of `shape` from `f64` values converted to `T`.
    pub fn from_f64s(data: &[f64], shape: &[usize]) -> Result<Self> {
        Self::from_vec(data.iter().map(|&x| T::from_f64(x)).collect(), shape)
    }

    /// A 0-dimensional tensor holding `value`.
    pub fn scalar(value: T) -> Self {
        Self::from_contiguous(vec![value], &[])
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        let n = shape.iter().product();
        let mut data = crate::memory::take(n);
        data.resize(n, value);
        Self::from_contiguous(data, shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::zero())
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::one())
    }

    /// `[0, 1, …, n-1]` as a 1-D tensor.
    pub fn arange(n: usize) -> Self {
        Self::from_contiguous((0..n).map(|i| T::from_f64(i as f64)).collect(), &[n])
    }

    /// Independent draws from `U[low, high)` using `rng`.
    pub fn uniform(shape: &[usize], low: f64, high: f64, rng: &mut impl Rng) -> Self {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| T::from_f64(low + (high - low) * rng.random::<f64>()))
            .collect();
        Self::from_contiguous(data, shape)
    }

    /// Independent draws from `N(mean, std²)` using `rng`.
    pub fn normal(shape: &[usize], mean: f64, std: f64, rng: &mut impl Rng) -> Self {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                T::from_f64(mean + std * z)
            })
            .collect();
        Self::from_contiguous(data, shape)
    }

    /// This tensor as a leaf that requires gradients (shares storage, new identity).
    pub fn with_grad(self) -> Self {
        Tensor {
            node: Arc::new(Node {
                id: TensorId::fresh(),
                storage: Arc::clone(&self.node.storage),
                layout: self.node.layout.clone(),
                requires_grad: true,
                op: Arc::new(Mutex::new(None)),
                is_leaf: true,
                is_handle: false,
                version: 0,
            }),
        }
    }

    /// A leaf sharing this tensor's storage that is cut off from the graph.
    pub fn detach(&self) -> Self {
        Self::from_storage(Arc::clone(&self.node.storage), self.node.layout.clone())
    }

    /// The same values converted to another element type (a new leaf).
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        let data = self
            .values()
            .iter()
            .map(|&x| U::from_f64(x.as_f64()))
            .collect();
        Tensor::from_contiguous(data, self.shape())
    }

    /// Overwrites the values of a contiguous tensor in place (optimizer updates, running
    /// statistics). The node keeps its identity when nothing else holds it or its storage;
    /// otherwise the values are copied into a new node first, so no other view changes.
    pub fn update_data(&mut self, f: impl FnOnce(&mut [T])) {
        if !self.owns_its_values() {
            let fresh = Tensor::from_contiguous(self.to_vec(), self.shape());
            *self = if self.requires_grad() {
                fresh.with_grad()
            } else {
                fresh
            };
        }
        let node = Arc::get_mut(&mut self.node).expect("uniquely owned after the copy");
        node.version += 1;
        f(Arc::get_mut(&mut node.storage).expect("uniquely owned after the copy"));
    }

    /// Whether the values could change in place without any other tensor, view or op
    /// record seeing it: a contiguous tensor over all of its storage, and nothing else
    /// holding its node or its storage.
    pub(crate) fn owns_its_values(&mut self) -> bool {
        self.is_contiguous()
            && self.node.layout.offset() == 0
            && self.numel() == self.node.storage.len()
            && Arc::get_mut(&mut self.node).is_some_and(|n| Arc::get_mut(&mut n.storage).is_some())
    }

    // ---------------------------------------------------------------- inspection

    /// The node's identity (keys gradients).
    pub fn id(&self) -> TensorId {
        self.node.id
    }

    /// The node's identity and how many times its values were changed in place: equal
    /// for two readings exactly when the values are the same ones.
    pub(crate) fn values_key(&self) -> (TensorId, u64) {
        (self.node.id, self.node.version)
    }

    /// Size of every dimension.
    pub fn shape(&self) -> &[usize] {
        self.node.layout.shape()
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.node.layout.shape().len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.node.layout.numel()
    }

    /// The view's layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.node.layout
    }

    /// The whole underlying storage (which a view may only partly cover).
    pub(crate) fn storage(&self) -> &Arc<Vec<T>> {
        &self.node.storage
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.node.requires_grad
    }

    /// Whether this tensor was created directly rather than computed by a recorded op.
    pub fn is_leaf(&self) -> bool {
        self.node.is_leaf
    }

    /// Whether the elements lie densely in row-major order in storage.
    pub fn is_contiguous(&self) -> bool {
        self.node.layout.is_contiguous()
    }

    /// Name of the recorded op that produced this tensor (PyTorch's `grad_fn`); `None` for
    /// leaves, tensors computed without grad, and after backward has freed the graph.
    pub fn grad_fn(&self) -> Option<&'static str> {
        self.node
            .op
            .lock()
            .expect("op lock poisoned")
            .as_ref()
            .map(|op| op.name())
    }

    pub(crate) fn op_slot(&self) -> &Mutex<Option<Op<T>>> {
        &self.node.op
    }

    /// What an op record keeps of an input whose values its derivative does not read: the
    /// same node (id, shape, requires_grad, and the op that made it, so backward can walk
    /// through it) without a reference to its storage, which is then freed as soon as
    /// nothing else needs it. Under `no_grad` nothing is recorded, so this is a clone.
    pub(crate) fn graph_handle(&self) -> Tensor<T> {
        if !crate::autograd::is_grad_enabled() || self.node.is_handle {
            return self.clone();
        }
        Tensor {
            node: Arc::new(Node {
                id: self.node.id,
                storage: Arc::new(Vec::new()),
                layout: self.node.layout.clone(),
                requires_grad: self.node.requires_grad,
                op: Arc::clone(&self.node.op),
                is_leaf: self.node.is_leaf,
                is_handle: true,
                version: self.node.version,
            }),
        }
    }

    /// What an op record keeps of this input: the tensor when its derivative rule reads
    /// the values (`needed`), else its graph handle.
    pub(crate) fn kept_if(&self, needed: bool) -> Tensor<T> {
        if needed {
            self.clone()
        } else {
            self.graph_handle()
        }
    }

    /// Whether this is a graph handle (no values; see `graph_handle`).
    pub(crate) fn is_graph_handle(&self) -> bool {
        self.node.is_handle
    }

    /// Bytes of storage this tensor keeps alive (0 for a graph handle).
    pub(crate) fn storage_bytes(&self) -> usize {
        self.node.storage.len() * std::mem::size_of::<T>()
    }

    /// The logical elements in row-major order, borrowed when the view is contiguous.
    pub fn values(&self) -> Cow<'_, [T]> {
        // Only the engine makes handles, and its rules never read their values.
        assert!(
            !self.node.is_handle,
            "internal error: values of a graph handle were read"
        );
        let l = &self.node.layout;
        if l.is_contiguous() {
            Cow::Borrowed(&self.node.storage[l.offset()..l.offset() + l.numel()])
        } else {
            Cow::Owned(gather_strided(&self.node.storage, l))
        }
    }

    /// The logical elements in row-major order.
    pub fn to_vec(&self) -> Vec<T> {
        self.values().into_owned()
    }

    /// The logical elements converted to `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.values().iter().map(|x| x.as_f64()).collect()
    }

    /// The single element of a one-element tensor.
    ///
    /// # Panics
    /// If the tensor does not have exactly one element.
    pub fn item(&self) -> T {
        assert_eq!(
            self.numel(),
            1,
            "item(): tensor of shape {:?} does not hold exactly one element",
            self.shape()
        );
        self.values()[0]
    }
}

/// Copies the elements of a strided view into a new row-major buffer.
pub(crate) fn gather_strided<T: Copy + Default + 'static>(
    storage: &[T],
    layout: &Layout,
) -> Vec<T> {
    if let ([rows, cols], [1, stride]) = (layout.shape(), layout.strides()) {
        // A transposed matrix (the gradient of `Linear`'s weight, every step): copied in
        // blocks, not one strided element at a time.
        let (rows, cols, stride) = (*rows, *cols, *stride);
        if rows > 1 && cols > 1 && stride >= rows {
            let mut out = vec![T::default(); rows * cols];
            crate::kernels::transpose::copy_transposed(
                &storage[layout.offset()..],
                (cols, rows, stride),
                &mut out,
                cols,
            );
            return out;
        }
    }
    let mut out = Vec::with_capacity(layout.numel());
    layout.for_each_run(|start, stride, run| {
        if stride == 1 {
            out.extend_from_slice(&storage[start..start + run]);
        } else {
            out.extend((0..run).map(|j| storage[start + j * stride]));
        }
    });
    out
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        let v = self.values();
        write!(
            f,
            "Tensor<{}>(shape={:?}, requires_grad={}, data={:?}",
            T::DTYPE,
            self.shape(),
            self.requires_grad(),
            &v[..v.len().min(SHOWN)]
        )?;
        if v.len() > SHOWN {
            write!(f, " … {} more", v.len() - SHOWN)?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn transposed_views_copy_blockwise_as_element_by_element() {
        // Sides that are and are not multiples of the 8×8 blocks, with and without an
        // offset into the storage (a narrowed view).
        for (r, c) in [(19, 13), (16, 8), (8, 24), (3, 9)] {
            let m = Tensor::<f32>::arange(r * c).reshape(&[r, c]).unwrap();
            let t = m.transpose(0, 1).unwrap();
            let want: Vec<f32> = (0..c)
                .flat_map(|j| (0..r).map(move |i| (i * c + j) as f32))
                .collect();
            assert_eq!(t.to_vec(), want, "{r}×{c}");
            let tail = m.narrow(0, 1, r - 1).unwrap().transpose(0, 1).unwrap();
            let want: Vec<f32> = (0..c)
                .flat_map(|j| (1..r).map(move |i| (i * c + j) as f32))
                .collect();
            assert_eq!(tail.to_vec(), want, "{r}×{c} from row 1");
        }
    }

    #[test]
    fn from_vec_checks_length() {
        let e = Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
        assert!(e.to_string().contains("[2, 3]"), "{e}");
        assert!(Tensor::<f32>::from_vec(vec![1.0; 6], &[2, 3]).is_ok());
    }

    #[test]
    fn seeded_random_is_reproducible() {
        let mut r1 = rand::rngs::StdRng::seed_from_u64(7);
        let mut r2 = rand::rngs::StdRng::seed_from_u64(7);
        let a = Tensor::<f64>::normal(&[100], 0.0, 1.0, &mut r1);
        let b = Tensor::<f64>::normal(&[100], 0.0, 1.0, &mut r2);
        assert_eq!(a.to_vec(), b.to_vec());
        let mean = a.to_vec().iter().sum::<f64>() / 100.0;
        assert!(mean.abs() < 0.35, "mean {mean}");
        let u = Tensor::<f32>::uniform(&[1000], -2.0, 3.0, &mut r1).to_vec();
        assert!(u.iter().all(|&x| (-2.0..3.0).contains(&x)));
    }

    #[test]
    fn a_dropped_tensor_gives_its_buffer_to_the_next_of_its_size() {
        // A size no other test uses, so that no concurrent test takes the buffer between.
        let n = 123_457;
        let t = Tensor::<f64>::full(&[n], 2.0);
        let address = t.values().as_ptr();
        let view = t.reshape(&[1, n]).unwrap();
        drop(t);
        // Still referenced by the view: not given back.
        let u = Tensor::<f64>::zeros(&[n]);
        assert_ne!(u.values().as_ptr(), address);
        assert!(view.to_vec().iter().all(|&x| x == 2.0));
        drop(view);
        let w = Tensor::<f64>::full(&[n], 3.0);
        assert_eq!(w.values().as_ptr(), address, "the freed buffer is reused");
        assert!(w.to_vec().iter().all(|&x| x == 3.0), "and filled anew");
        drop(u);
    }

    #[test]
    fn update_data_is_in_place_only_when_unshared() {
        let mut a = Tensor::<f64>::zeros(&[3]).with_grad();
        let id = a.id();
        a.update_data(|v| v[1] = 2.0);
        assert_eq!((a.id(), a.to_vec()), (id, vec![0.0, 2.0, 0.0]));
        assert!(a.requires_grad());
        let view = a.clone();
        a.update_data(|v| v[0] = 5.0);
        assert_ne!(a.id(), id);
        assert_eq!(
            view.to_vec(),
            vec![0.0, 2.0, 0.0],
            "other holders keep their values"
        );
        assert_eq!(a.to_vec(), vec![5.0, 2.0, 0.0]);
    }

    #[test]
    fn constructors() {
        assert_eq!(Tensor::<f32>::arange(4).to_vec(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(Tensor::<f64>::full(&[2, 2], 3.5).to_vec(), vec![3.5; 4]);
        assert_eq!(Tensor::<f64>::zeros(&[0, 3]).numel(), 0);
        assert_eq!(Tensor::<f64>::scalar(2.0).item(), 2.0);
    }
}
