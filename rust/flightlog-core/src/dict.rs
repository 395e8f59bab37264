//! Dictionaries of string and enum fields: producers turn a label into an
//! `i32` code (what travels through the ring); the flusher turns codes back
//! into an Arrow dictionary array.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow_array::StringArray;

use crate::error::{CoreError, Result};

/// Distinct values a free-text field may take in one recorder. Telemetry
/// strings are labels (phases, modes, lens names); a field with millions of
/// distinct values is a bug in the caller and would hold memory forever.
pub const MAX_DISTINCT_STRINGS: usize = 1 << 20;

/// A growing dictionary (for `str` fields) or a fixed one (for enums).
#[derive(Debug)]
pub struct Dictionary {
    field: String,
    fixed: bool,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    codes: HashMap<Arc<str>, i32>,
    values: Vec<Arc<str>>,
}

impl Dictionary {
    /// An empty dictionary that grows with every new string.
    pub fn growing(field: &str) -> Self {
        Dictionary {
            field: field.to_owned(),
            fixed: false,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// A dictionary of exactly `variants`, in that order.
    pub fn fixed(field: &str, variants: &[String]) -> Self {
        let mut inner = Inner::default();
        for v in variants {
            let v: Arc<str> = Arc::from(v.as_str());
            inner
                .codes
                .insert(Arc::clone(&v), inner.values.len() as i32);
            inner.values.push(v);
        }
        Dictionary {
            field: field.to_owned(),
            fixed: true,
            inner: RwLock::new(inner),
        }
    }

    /// The code of `value`, adding it to a growing dictionary.
    pub fn code(&self, value: &str) -> Result<i32> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map and vector are updated together under the lock, so the data is
        // still consistent and we keep going.
        {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            if let Some(&code) = inner.codes.get(value) {
                return Ok(code);
            }
            if self.fixed {
                let allowed: Vec<&str> = inner.values.iter().map(|v| &**v).collect();
                return Err(CoreError::InvalidValue(format!(
                    "field '{}': '{value}' is not one of {allowed:?}",
                    self.field
                )));
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&code) = inner.codes.get(value) {
            return Ok(code);
        }
        if inner.values.len() >= MAX_DISTINCT_STRINGS {
            return Err(CoreError::InvalidValue(format!(
                "field '{}' has more than {MAX_DISTINCT_STRINGS} distinct strings; \
                 use a str field for labels, not unique text",
                self.field
            )));
        }
        let code = inner.values.len() as i32;
        let v: Arc<str> = Arc::from(value);
        inner.codes.insert(Arc::clone(&v), code);
        inner.values.push(v);
        Ok(code)
    }

    /// The values known now, as an Arrow array indexed by code.
    pub fn values(&self) -> StringArray {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        StringArray::from_iter_values(inner.values.iter().map(|v| &**v))
    }

    /// Number of known values.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values
            .len()
    }

    /// True when no value is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_dictionary_assigns_stable_codes() {
        let d = Dictionary::growing("phase");
        assert_eq!(d.code("a").unwrap(), 0);
        assert_eq!(d.code("b").unwrap(), 1);
        assert_eq!(d.code("a").unwrap(), 0);
        assert_eq!(d.code("").unwrap(), 2);
        assert_eq!(d.values().value(1), "b");
    }

    #[test]
    fn fixed_dictionary_rejects_unknown_labels_naming_the_field() {
        let d = Dictionary::fixed("phase", &["RED".into(), "GREEN".into()]);
        assert_eq!(d.code("GREEN").unwrap(), 1);
        let err = d.code("BLUE").unwrap_err().to_string();
        assert!(
            err.contains("phase") && err.contains("BLUE") && err.contains("RED"),
            "{err}"
        );
    }
}
