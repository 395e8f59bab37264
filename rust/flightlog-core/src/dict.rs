//! Dictionaries of string and enum fields: producers turn a label into an
//! `i32` code (what travels through the ring); the flusher turns codes back
//! into an Arrow dictionary array.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

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
    /// Where new strings are logged (field index, spool) before their code is
    /// handed out: recovery needs them to read rows that use the code.
    spool: OnceLock<(usize, Arc<crate::spool::Spool>)>,
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
            spool: OnceLock::new(),
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
            spool: OnceLock::new(),
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
                return Err(CoreError::InvalidValue(format!(
                    "field '{}': {} is not one of {}",
                    self.field,
                    shown(value),
                    labels_summary(&inner.values)
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
        if let Some((field, spool)) = self.spool.get() {
            if spool.log_string(*field, code, value).is_err() {
                spool
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let v: Arc<str> = Arc::from(value);
        inner.codes.insert(Arc::clone(&v), code);
        inner.values.push(v);
        Ok(code)
    }

    /// Logs every new string of a growing dictionary to `spool` as field
    /// `field` (fixed dictionaries need no log: the schema holds them).
    pub fn spool_to(&self, field: usize, spool: Arc<crate::spool::Spool>) {
        if !self.fixed {
            let _ = self.spool.set((field, spool));
        }
    }

    /// A growing dictionary holding `values` by code (recovery; a code
    /// whose string was not logged becomes an empty string).
    pub fn from_codes(field: &str, values: &[Option<String>]) -> Self {
        let d = Dictionary::growing(field);
        {
            let mut inner = d.inner.write().unwrap_or_else(|e| e.into_inner());
            for v in values {
                let v: Arc<str> = Arc::from(v.as_deref().unwrap_or(""));
                let code = inner.values.len() as i32;
                inner.codes.entry(Arc::clone(&v)).or_insert(code);
                inner.values.push(v);
            }
        }
        d
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

/// Labels shown in an error message: enough to see the pattern, never the
/// whole list of a large enum (the message would be megabytes).
const SHOWN_LABELS: usize = 8;

/// Longest text of one value shown in an error message.
const SHOWN_CHARS: usize = 80;

/// A value for an error message: `'text'`, cut to a readable length.
fn shown(value: &str) -> String {
    let n = value.chars().count();
    if n <= SHOWN_CHARS {
        format!("'{value}'")
    } else {
        let head: String = value.chars().take(SHOWN_CHARS).collect();
        format!("'{head}...' ({n} characters)")
    }
}

/// A label for the list of allowed ones: quoted as before (`"RED"`), cut.
fn shown_label(label: &str) -> String {
    if label.chars().count() <= SHOWN_CHARS {
        format!("{label:?}")
    } else {
        let head: String = label.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}...")
    }
}

/// `["A", "B"]`, or the first few labels and the count: `["A", ... ] (100000 labels)`.
fn labels_summary(values: &[Arc<str>]) -> String {
    let head: Vec<String> = values
        .iter()
        .take(SHOWN_LABELS)
        .map(|v| shown_label(v))
        .collect();
    if values.len() <= SHOWN_LABELS {
        format!("[{}]", head.join(", "))
    } else {
        format!("[{}, ...] ({} labels)", head.join(", "), values.len())
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

    #[test]
    fn large_enum_error_shows_a_few_labels_and_the_count() {
        let labels: Vec<String> = (0..100_000).map(|i| format!("L{i:06}")).collect();
        let d = Dictionary::fixed("phase", &labels);
        let err = d.code("NOPE").unwrap_err().to_string();
        assert!(err.len() < 500, "{} bytes: {err}", err.len());
        assert!(
            err.contains("phase")
                && err.contains("'NOPE'")
                && err.contains("L000000")
                && err.contains("100000 labels"),
            "{err}"
        );
        assert!(!err.contains("L099999"), "{err}");
    }

    #[test]
    fn a_long_bad_value_is_cut_in_the_message() {
        let d = Dictionary::fixed("phase", &["A".into()]);
        let err = d.code(&"x".repeat(1_000_000)).unwrap_err().to_string();
        assert!(
            err.len() < 300 && err.contains("1000000 characters"),
            "{err}"
        );
        // Small enums still list every label.
        let err = d.code("B").unwrap_err().to_string();
        assert!(err.ends_with("[\"A\"]"), "{err}");
    }

    #[test]
    fn every_label_of_a_large_enum_is_found_by_hash() {
        let labels: Vec<String> = (0..100_000).map(|i| format!("L{i}")).collect();
        let d = Dictionary::fixed("phase", &labels);
        for i in [0, 1, 15, 16, 50_000, 99_999] {
            assert_eq!(d.code(&format!("L{i}")).unwrap(), i);
        }
        assert_eq!(d.len(), 100_000);
    }

    #[test]
    fn growing_dictionary_codes_are_dense_and_capped_per_field() {
        let d = Dictionary::growing("s");
        for i in 0..1000 {
            assert_eq!(d.code(&i.to_string()).unwrap(), i);
        }
        assert_eq!(d.code("0").unwrap(), 0);
        assert_eq!(d.len(), 1000);
        assert_eq!(d.values().value(999), "999");
    }
}
