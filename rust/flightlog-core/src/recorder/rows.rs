//! The record-path policy of a recorder whose schema is known: which fields a
//! row may omit, what fills them (a stamped `t_wall_ms`, a null) and the
//! errors naming the field otherwise. A binding converts values into row
//! words and asks these rules for everything else, so every binding fills
//! rows the same way.

use crate::error::{CoreError, Result};
use crate::row_layout::{f64_word, RowLayout};
use crate::schema::{DType, Schema};

use super::Recorder;

/// The per-schema rules, computed once when the recorder starts.
#[derive(Debug, Clone)]
pub(crate) struct RowRules {
    /// Stored slot of an f64 `t_wall_ms` field, stamped when a row omits it.
    t_wall_slot: Option<usize>,
    /// `record()` may omit trailing fields that are nullable (or a stamped
    /// `t_wall_ms`): it needs at least this many values.
    min_record_values: usize,
}

impl RowRules {
    pub(crate) fn new(schema: &Schema, layout: &RowLayout) -> RowRules {
        let t_wall_slot = schema
            .index_of("t_wall_ms")
            .filter(|&i| schema.fields[i].dtype == DType::F64)
            .and_then(|i| layout.slot_of_field(i));
        let min_record_values = (0..layout.stored_len())
            .rev()
            .find(|&slot| {
                let f = &schema.fields[layout.field_of_slot(slot)];
                !f.nullable && Some(slot) != t_wall_slot
            })
            .map_or(0, |slot| slot + 1);
        RowRules {
            t_wall_slot,
            min_record_values,
        }
    }
}

/// Which call a row with missing fields came from (it words the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCall {
    /// `log(**fields)`: one row by keyword.
    Log,
    /// `extend(**columns)`: many rows by column.
    Extend,
}

impl Recorder {
    /// The stored slot the recorder stamps with [`Recorder::now_ms`] when a
    /// row leaves it out: an f64 field named `t_wall_ms`.
    pub fn stamp_slot(&self) -> Option<usize> {
        self.shared.rules.t_wall_slot
    }

    /// The fewest values a positional row (values in slot order) may have:
    /// trailing nullable fields and a stamped `t_wall_ms` may be omitted.
    pub fn min_record_values(&self) -> usize {
        self.shared.rules.min_record_values
    }

    /// Checks the number of values of a positional row; the error lists the
    /// fields in order.
    #[inline]
    pub fn check_record_arity(&self, given: usize) -> Result<()> {
        let layout = self.row_layout();
        if given > layout.stored_len() || given < self.min_record_values() {
            return Err(self.record_arity_error(given));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn record_arity_error(&self, got: usize) -> CoreError {
        let layout = self.row_layout();
        let names: Vec<&str> = (0..layout.stored_len())
            .map(|s| self.schema().fields[layout.field_of_slot(s)].name.as_str())
            .collect();
        let min = self.min_record_values();
        let (count, note) = if min == names.len() {
            (format!("{}", names.len()), "")
        } else {
            (
                format!("{} to {}", min, names.len()),
                "; trailing nullable fields may be omitted",
            )
        };
        CoreError::Schema(format!(
            "record() takes {count} values in schema order ({}), got {got}{note}",
            names.join(", ")
        ))
    }

    /// Fills the slots a positional row of `given` values (already checked by
    /// [`Recorder::check_record_arity`]) omits: the stamped time or a null.
    #[inline]
    pub fn fill_omitted(&self, row: &mut [u64], given: usize) {
        let layout = self.row_layout();
        for slot in given..layout.stored_len() {
            if Some(slot) == self.stamp_slot() {
                row[slot] = f64_word(self.now_ms());
            } else {
                layout.set_null(row, slot);
            }
        }
    }

    /// A missing value (`None`) given for slot `slot`: a null when the field
    /// is nullable, else an error naming it. With `stamp`, the stamped
    /// `t_wall_ms` slot gets the time instead (as a positional row defines it).
    pub fn put_none(&self, row: &mut [u64], slot: usize, stamp: bool) -> Result<()> {
        if stamp && Some(slot) == self.stamp_slot() {
            row[slot] = f64_word(self.now_ms());
            return Ok(());
        }
        let layout = self.row_layout();
        let f = &self.schema().fields[layout.field_of_slot(slot)];
        if !f.nullable {
            return Err(CoreError::WrongType(format!(
                "field '{}' is not nullable, got None",
                f.name
            )));
        }
        layout.set_null(row, slot);
        Ok(())
    }

    /// The stored slot of field `field` as a caller names it: an error for a
    /// constant column, which the recorder fills in.
    #[inline]
    pub fn slot_given(&self, field: usize) -> Result<usize> {
        self.row_layout()
            .slot_of_field(field)
            .ok_or_else(|| filled_in(&self.schema().fields[field].name))
    }

    /// Fills the slots of fields not in `seen` (indexed by field): the stamped
    /// time, a null, or an error naming a missing non-nullable field.
    pub fn fill_missing(&self, row: &mut [u64], seen: &[bool], call: RowCall) -> Result<()> {
        let layout = self.row_layout();
        for slot in 0..layout.stored_len() {
            let field = layout.field_of_slot(slot);
            if seen[field] {
                continue;
            }
            if Some(slot) == self.stamp_slot() {
                row[slot] = f64_word(self.now_ms());
            } else if self.schema().fields[field].nullable {
                layout.set_null(row, slot);
            } else {
                let prefix = match call {
                    RowCall::Log => "missing",
                    RowCall::Extend => "extend() is missing",
                };
                return Err(CoreError::Schema(format!(
                    "{prefix} non-nullable field '{}'; the schema is {}",
                    self.schema().fields[field].name,
                    self.schema().describe()
                )));
            }
        }
        Ok(())
    }
}

/// The error for a row that names a constant column.
pub(crate) fn filled_in(name: &str) -> CoreError {
    CoreError::Schema(format!(
        "field '{name}' is filled in by the recorder; do not pass it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::RecorderConfig;
    use crate::row_layout::i64_word;
    use crate::schema::{Field, Value};
    use crate::OutputLayout;

    fn recorder(dir: &std::path::Path, fields: Vec<Field>, constants: &[&str]) -> Recorder {
        let schema = Schema::new(fields, 1).unwrap();
        let mut config = RecorderConfig::new(OutputLayout::run_folder(dir));
        for c in constants {
            config
                .constants
                .push((c.to_string(), Value::Str("x".into())));
        }
        Recorder::new(schema, config).unwrap()
    }

    #[test]
    fn positional_rows_may_omit_trailing_nullable_and_stamped_fields() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recorder(
            dir.path(),
            vec![
                Field::new("iter", DType::I64),
                Field::new("t_wall_ms", DType::F64),
                Field::new("E", DType::F64).nullable(),
            ],
            &[],
        );
        assert_eq!(rec.stamp_slot(), Some(1));
        assert_eq!(rec.min_record_values(), 1);
        rec.check_record_arity(1).unwrap();
        rec.check_record_arity(3).unwrap();
        let err = rec.check_record_arity(0).unwrap_err().to_string();
        assert_eq!(
            err,
            "record() takes 1 to 3 values in schema order (iter, t_wall_ms, E), got 0; \
             trailing nullable fields may be omitted"
        );
        assert!(rec.check_record_arity(4).is_err());
        let mut row = rec.row_layout().new_row();
        row[0] = i64_word(7);
        rec.fill_omitted(&mut row, 1);
        assert!(f64::from_bits(row[1]) >= 0.0);
        assert!(rec.row_layout().is_valid(&row, 1));
        assert!(!rec.row_layout().is_valid(&row, 2));
        rec.close().unwrap();
    }

    #[test]
    fn none_missing_and_constant_fields() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recorder(
            dir.path(),
            vec![
                Field::new("host", DType::Str),
                Field::new("iter", DType::I64),
                Field::new("t_wall_ms", DType::F64),
                Field::new("E", DType::F64).nullable(),
            ],
            &["host"],
        );
        assert_eq!(
            rec.slot_given(0).unwrap_err().to_string(),
            "field 'host' is filled in by the recorder; do not pass it"
        );
        let iter = rec.slot_given(1).unwrap();
        let t = rec.slot_given(2).unwrap();
        let e = rec.slot_given(3).unwrap();
        let mut row = rec.row_layout().new_row();
        let err = rec.put_none(&mut row, iter, true).unwrap_err();
        assert!(matches!(err, CoreError::WrongType(_)));
        assert_eq!(err.to_string(), "field 'iter' is not nullable, got None");
        rec.put_none(&mut row, t, true).unwrap();
        assert!(rec.row_layout().is_valid(&row, t));
        assert!(rec.put_none(&mut row, t, false).is_err());
        rec.put_none(&mut row, e, false).unwrap();
        assert!(!rec.row_layout().is_valid(&row, e));

        let mut row = rec.row_layout().new_row();
        let err = rec
            .fill_missing(&mut row, &[false, false, false, false], RowCall::Extend)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("extend() is missing non-nullable field 'iter'; the schema is "),
            "{err}"
        );
        let mut row = rec.row_layout().new_row();
        rec.fill_missing(&mut row, &[false, true, false, false], RowCall::Log)
            .unwrap();
        assert!(rec.row_layout().is_valid(&row, t));
        assert!(!rec.row_layout().is_valid(&row, e));
        rec.close().unwrap();
    }
}
