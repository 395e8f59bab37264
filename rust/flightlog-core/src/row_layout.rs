//! How one row of a schema is packed into ring words (values, then validity).

use crate::schema::{DType, Schema};

/// How a row of a schema is packed into ring words.
///
/// Constant columns (filled in by the recorder, like `run_id`) are not stored
/// in the ring. Every other field takes one word (f64/f32 bits, i64, bool as
/// 0/1, dictionary code); nullable schemas add validity words (bit set = value
/// present) after the values.
#[derive(Debug, Clone)]
pub struct RowLayout {
    /// Field index of each stored slot, in schema order.
    stored: Vec<usize>,
    /// Slot of each field (`None` for constant fields).
    slot_of: Vec<Option<usize>>,
    validity_words: usize,
}

impl RowLayout {
    /// The layout of `schema` when the fields in `constant` are not stored.
    pub fn new(schema: &Schema, constant: &[usize]) -> Self {
        let mut stored = Vec::new();
        let mut slot_of = vec![None; schema.fields.len()];
        for (i, _) in schema.fields.iter().enumerate() {
            if !constant.contains(&i) {
                slot_of[i] = Some(stored.len());
                stored.push(i);
            }
        }
        let any_nullable = stored.iter().any(|&i| schema.fields[i].nullable);
        let validity_words = if any_nullable {
            stored.len().div_ceil(64)
        } else {
            0
        };
        RowLayout {
            stored,
            slot_of,
            validity_words,
        }
    }

    /// Words per row in the ring (at least 1).
    pub fn width(&self) -> usize {
        (self.stored.len() + self.validity_words).max(1)
    }

    /// Number of stored (non-constant) fields: what `record()` takes.
    pub fn stored_len(&self) -> usize {
        self.stored.len()
    }

    /// Field index of stored slot `slot`.
    pub fn field_of_slot(&self, slot: usize) -> usize {
        self.stored[slot]
    }

    /// Stored slot of field `field`, if it is not constant.
    pub fn slot_of_field(&self, field: usize) -> Option<usize> {
        self.slot_of[field]
    }

    /// True when rows carry validity words.
    pub fn has_validity(&self) -> bool {
        self.validity_words > 0
    }

    /// A fresh row: zero values, every slot valid.
    pub fn new_row(&self) -> Vec<u64> {
        let mut row = vec![0u64; self.width()];
        for w in &mut row[self.stored.len()..self.stored.len() + self.validity_words] {
            *w = u64::MAX;
        }
        row
    }

    /// Resets `row` to the state of [`RowLayout::new_row`].
    pub fn reset_row(&self, row: &mut [u64]) {
        let n = self.stored.len();
        row[..n].fill(0);
        row[n..n + self.validity_words].fill(u64::MAX);
    }

    /// Marks stored slot `slot` of `row` as null.
    #[inline]
    pub fn set_null(&self, row: &mut [u64], slot: usize) {
        debug_assert!(self.has_validity(), "null in a layout without validity");
        let word = self.stored.len() + slot / 64;
        row[word] &= !(1u64 << (slot % 64));
    }

    /// Where slot `slot`'s validity bit lives: its word in the row and the
    /// bit's mask; `None` when rows carry no validity (every slot is valid).
    #[inline]
    pub fn validity_of(&self, slot: usize) -> Option<(usize, u64)> {
        (self.validity_words > 0).then(|| (self.stored.len() + slot / 64, 1u64 << (slot % 64)))
    }

    /// True when stored slot `slot` of `row` holds a value.
    #[inline]
    pub fn is_valid(&self, row: &[u64], slot: usize) -> bool {
        if self.validity_words == 0 {
            return true;
        }
        row[self.stored.len() + slot / 64] & (1u64 << (slot % 64)) != 0
    }
}

/// Packs an f64 into a ring word.
#[inline]
pub fn f64_word(v: f64) -> u64 {
    v.to_bits()
}

/// Packs an f32 into a ring word.
#[inline]
pub fn f32_word(v: f32) -> u64 {
    v.to_bits() as u64
}

/// Packs an i64 into a ring word.
#[inline]
pub fn i64_word(v: i64) -> u64 {
    v as u64
}

/// True when `dtype` values are packed as f64 bits (used by converters).
pub fn is_float(dtype: &DType) -> bool {
    matches!(dtype, DType::F64 | DType::F32)
}
