//! [`KvCache`]: preallocated keys and values for incremental decoding.
//!
//! Every layer keeps one buffer for keys and one for values, `[batch, kv_heads, capacity,
//! head_dim]`, allocated once (at the capacity asked for, or the first call's length) and
//! written in place: a decode step copies only its own new keys and values, not the whole
//! history (concatenating a growing cache copies `O(length)` per step and layer, which on CPU
//! cost more than the attention itself at large batches). Attention reads the whole buffer
//! and the decoder hides the positions not yet written with the attention mask, which is
//! exact: a hidden position contributes `exp(-inf) = 0`.
//!
//! The buffers grow (doubling) when a call needs more room than allocated, and finished
//! batch rows can be dropped with [`KvCache::retain_rows`].

use burn::tensor::{Int, Tensor, TensorData};

/// Keys and values of one layer, `[batch, kv_heads, capacity, head_dim]` each.
#[derive(Debug, Clone)]
pub(crate) struct LayerKv {
    keys: Tensor<4>,
    values: Tensor<4>,
}

/// Cached keys and values of every layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// Positions written so far (the same in every layer after a full forward pass).
    len: usize,
    /// Positions to allocate room for when the buffers are created or grown.
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers; the buffers are sized by the first call and grow
    /// by doubling.
    pub fn new(num_layers: usize) -> Self {
        Self::with_capacity(num_layers, 0)
    }

    /// An empty cache that allocates room for `capacity` positions up front (prompt plus new
    /// tokens), so decoding never reallocates.
    pub fn with_capacity(num_layers: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
            capacity,
        }
    }

    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold (allocated or about to be).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Batch rows currently cached (`None` before the first call).
    pub fn batch(&self) -> Option<usize> {
        self.layers
            .iter()
            .flatten()
            .next()
            .map(|l| l.keys.dims()[0])
    }

    /// Keeps only the batch rows `rows` (in that order), e.g. to drop finished sequences from
    /// a generation batch. Costs one copy of the cache.
    ///
    /// # Panics
    /// When a row index is out of range (a caller bug).
    pub fn retain_rows(&mut self, rows: &[usize]) {
        let Some(batch) = self.batch() else {
            return;
        };
        assert!(
            rows.iter().all(|&r| r < batch),
            "retain_rows: expected row indices below {batch}, found {rows:?}"
        );
        for layer in self.layers.iter_mut().flatten() {
            let device = layer.keys.device();
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(
                    rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                    [rows.len()],
                ),
                &device,
            );
            layer.keys = layer.keys.clone().select(0, idx.clone());
            layer.values = layer.values.clone().select(0, idx);
        }
    }

    /// Joins caches of the same length and capacity along the batch axis (rows of `parts[0]`
    /// first), e.g. after prefilling a large batch in several passes.
    ///
    /// # Panics
    /// When the parts differ in layers, length or capacity (a caller bug).
    pub fn concat_rows(parts: Vec<KvCache>) -> KvCache {
        let mut parts = parts.into_iter();
        let Some(mut joined) = parts.next() else {
            return KvCache::default();
        };
        let rest: Vec<KvCache> = parts.collect();
        for p in &rest {
            assert!(
                p.layers.len() == joined.layers.len()
                    && p.len == joined.len
                    && p.capacity == joined.capacity,
                "concat_rows: expected caches of {} layers, {} positions, capacity {}; found {}, {}, {}",
                joined.layers.len(),
                joined.len,
                joined.capacity,
                p.layers.len(),
                p.len,
                p.capacity
            );
        }
        for (i, layer) in joined.layers.iter_mut().enumerate() {
            let Some(first) = layer.take() else {
                continue;
            };
            let others: Vec<&LayerKv> = rest.iter().filter_map(|p| p.layers[i].as_ref()).collect();
            let keys = std::iter::once(first.keys)
                .chain(others.iter().map(|l| l.keys.clone()))
                .collect();
            let values = std::iter::once(first.values)
                .chain(others.iter().map(|l| l.values.clone()))
                .collect();
            *layer = Some(LayerKv {
                keys: Tensor::cat(keys, 0),
                values: Tensor::cat(values, 0),
            });
        }
        joined
    }

    /// Makes room for `total` positions: records the capacity for buffers not yet allocated
    /// and grows the allocated ones (at least doubling) when they are too small.
    pub(crate) fn reserve(&mut self, total: usize) {
        if total <= self.capacity {
            return;
        }
        let new_capacity = if self.layers.iter().any(Option::is_some) {
            total.max(2 * self.capacity)
        } else {
            total
        };
        for layer in self.layers.iter_mut().flatten() {
            layer.keys = grow(layer.keys.clone(), new_capacity);
            layer.values = grow(layer.values.clone(), new_capacity);
        }
        self.capacity = new_capacity;
    }

    /// Writes one layer's new keys and values at positions `len..len + s` and returns the
    /// whole buffers (`[batch, kv_heads, capacity, head_dim]`). Call [`Self::reserve`] first.
    ///
    /// # Shapes
    /// - `keys`, `values`: `[batch, kv_heads, s, head_dim]`
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: Tensor<4>,
        values: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, h, s, d] = keys.dims();
        let start = self.len;
        assert!(
            start + s <= self.capacity,
            "KvCache::append: reserve({}) was not called",
            start + s
        );
        let slot = &mut self.layers[layer];
        let mut kv = match slot.take() {
            Some(kv) => kv,
            None => {
                let device = keys.device();
                LayerKv {
                    keys: Tensor::zeros([b, h, self.capacity, d], (&device, keys.dtype())),
                    values: Tensor::zeros([b, h, self.capacity, d], (&device, values.dtype())),
                }
            }
        };
        // The buffers are uniquely owned here, so burn writes them in place.
        kv.keys = kv
            .keys
            .slice_assign([0..b, 0..h, start..start + s, 0..d], keys);
        kv.values = kv
            .values
            .slice_assign([0..b, 0..h, start..start + s, 0..d], values);
        let out = (kv.keys.clone(), kv.values.clone());
        *slot = Some(kv);
        out
    }

    /// Marks `s` more positions as written (after every layer appended them).
    pub(crate) fn advance(&mut self, s: usize) {
        self.len += s;
    }
}

/// `buffer` with its position axis (dim 2) extended to `capacity` by zeros.
///
/// # Shapes
/// - `buffer`: `[batch, heads, old, d]` -> `[batch, heads, capacity, d]`
fn grow(buffer: Tensor<4>, capacity: usize) -> Tensor<4> {
    let [b, h, old, d] = buffer.dims();
    if capacity <= old {
        return buffer;
    }
    let zeros = Tensor::zeros(
        [b, h, capacity - old, d],
        (&buffer.device(), buffer.dtype()),
    );
    Tensor::cat(vec![buffer, zeros], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn appends_in_place_and_grows_by_doubling() {
        let device = crate::device::device_from_name("cpu").unwrap();
        let mut cache = KvCache::new(1);
        let step = |v: f32| Tensor::<4>::full([1, 1, 1, 2], v, &device);
        cache.reserve(1);
        let (k, _) = cache.append(0, step(1.0), step(-1.0));
        cache.advance(1);
        assert_eq!(k.dims(), [1, 1, 1, 2]);
        cache.reserve(2);
        assert_eq!(cache.capacity(), 2);
        cache.append(0, step(2.0), step(-2.0));
        cache.advance(1);
        cache.reserve(3);
        assert_eq!(cache.capacity(), 4, "grows at least by doubling");
        let (k, v) = cache.append(0, step(3.0), step(-3.0));
        cache.advance(1);
        assert_eq!(values(k), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 0.0, 0.0]);
        assert_eq!(values(v)[..6], [-1.0, -1.0, -2.0, -2.0, -3.0, -3.0]);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn concat_rows_stacks_batches() {
        let device = crate::device::device_from_name("cpu").unwrap();
        let part = |v: f32| {
            let mut c = KvCache::with_capacity(1, 2);
            c.reserve(1);
            let t = Tensor::<4>::full([1, 1, 1, 1], v, &device);
            c.append(0, t.clone(), t);
            c.advance(1);
            c
        };
        let mut joined = KvCache::concat_rows(vec![part(1.0), part(2.0)]);
        assert_eq!(
            (joined.batch(), joined.len(), joined.capacity()),
            (Some(2), 1, 2)
        );
        joined.reserve(2);
        let t = Tensor::<4>::full([2, 1, 1, 1], 9.0, &device);
        let (k, _) = joined.append(0, t.clone(), t);
        assert_eq!(values(k), vec![1.0, 9.0, 2.0, 9.0]);
    }

    #[test]
    fn retain_rows_keeps_the_chosen_rows_in_order() {
        let device = crate::device::device_from_name("cpu").unwrap();
        let mut cache = KvCache::with_capacity(2, 4);
        let rows = Tensor::<4>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0], [3, 1, 1, 1]),
            &device,
        );
        cache.reserve(1);
        for layer in 0..2 {
            cache.append(layer, rows.clone(), rows.clone() * 10.0);
        }
        cache.advance(1);
        cache.retain_rows(&[2, 0]);
        assert_eq!(cache.batch(), Some(2));
        cache.reserve(2);
        let (k, v) = cache.append(1, rows.clone().narrow(0, 0, 2), rows.narrow(0, 0, 2));
        let k = values(k);
        assert_eq!((k[0], k[4]), (2.0, 0.0));
        assert_eq!((k[1], k[5]), (0.0, 1.0));
        assert_eq!(values(v)[0], 20.0);
    }
}
