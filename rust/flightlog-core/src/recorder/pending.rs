//! A recorder whose schema is not known yet: the folder is claimed at
//! construction, events are kept, and the first row (or an explicit schema)
//! starts the [`Recorder`] ([`PendingRecorder::prepare`], then
//! [`ReadyRecorder::start`]). A binding supplies the values' conversions; the
//! order of the checks, the schema inferred and the errors are decided here.

use std::time::Instant;

use crate::claim::{Claim, Owner};
use crate::error::{CoreError, Result};
use crate::schema::{DType, Field, Schema, Value};

use super::rows::filled_in;
use super::{Recorder, RecorderConfig};

/// An event recorded before the schema was known: name, JSON payload, the
/// caller's `t_wall_ms`, and when it happened (for a stamped time).
type PendingEvent = (String, Option<String>, Option<f64>, Instant);

/// Settings kept until the schema is known.
pub struct PendingRecorder {
    /// The folder's claim, taken at construction, handed to the recorder.
    claim: Option<Claim>,
    /// The process that made the recorder: a forked child must not start one
    /// on the parent's claim.
    owner: Owner,
    config: RecorderConfig,
    schema_version: i64,
    /// Names of the constant columns, whose values the binding converts once
    /// their dtypes are known.
    constants: Vec<String>,
    /// Events recorded before the schema was known (events do not depend on
    /// it): recorded when the recorder starts, at the time they happened.
    events: Vec<PendingEvent>,
}

impl PendingRecorder {
    /// Validates `config` and claims its folder (one writer per folder, also
    /// for a recorder whose schema comes with its first row).
    pub fn new(
        config: RecorderConfig,
        schema_version: i64,
        constants: Vec<String>,
    ) -> Result<PendingRecorder> {
        config.validate()?;
        let claim = Claim::acquire(&config.layout)?;
        Ok(PendingRecorder {
            claim,
            owner: Owner::current(),
            config,
            schema_version,
            constants,
            events: Vec::new(),
        })
    }

    /// The version of the schema the recorder will have.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// Keeps an event for the recorder to come.
    pub fn event(&mut self, name: &str, payload_json: Option<String>, t_wall_ms: Option<f64>) {
        self.events
            .push((name.to_owned(), payload_json, t_wall_ms, Instant::now()));
    }

    /// Events kept so far (not written if the recorder never starts).
    pub fn events_len(&self) -> usize {
        self.events.len()
    }

    /// The schema inferred from a first row: the constant columns first (the
    /// dtype of constant `i` from `constant_dtype(i, name)`), then the row's
    /// fields in order (`field_dtype(name, value)`). A row that names a
    /// constant column, or has no field at all with no constants, is refused.
    pub fn infer_schema<V, E: From<CoreError>>(
        &self,
        mut constant_dtype: impl FnMut(usize, &str) -> std::result::Result<DType, E>,
        fields: impl IntoIterator<Item = (String, V)>,
        mut field_dtype: impl FnMut(&str, &V) -> std::result::Result<DType, E>,
    ) -> std::result::Result<Schema, E> {
        let mut spec = Vec::new();
        for (i, name) in self.constants.iter().enumerate() {
            spec.push(Field::new(name.clone(), constant_dtype(i, name)?));
        }
        for (name, value) in fields {
            if self.constants.contains(&name) {
                return Err(filled_in(&name).into());
            }
            let dtype = field_dtype(&name, &value)?;
            spec.push(Field::new(name, dtype));
        }
        if spec.is_empty() {
            return Err(CoreError::Schema(
                "cannot infer a schema from a log() without fields".into(),
            )
            .into());
        }
        Ok(Schema::new(spec, self.schema_version)?)
    }

    /// Readies the recorder of `schema`: constant `i`'s value comes from
    /// `constant_value(i, name, dtype)`. Fails in a forked child or for a
    /// constant not in the schema (the claim is then released).
    pub fn prepare<E: From<CoreError>>(
        self,
        schema: Schema,
        mut constant_value: impl FnMut(usize, &str, &DType) -> std::result::Result<Value, E>,
    ) -> std::result::Result<ReadyRecorder, E> {
        self.owner.check()?;
        let mut config = self.config;
        for (i, name) in self.constants.iter().enumerate() {
            let field = schema.index_of(name).ok_or_else(|| {
                CoreError::Schema(format!(
                    "constant column '{name}' is not in the schema {}",
                    schema.describe()
                ))
            })?;
            let v = constant_value(i, name, &schema.fields[field].dtype)?;
            config.constants.push((name.clone(), v));
        }
        Ok(ReadyRecorder {
            schema,
            config,
            claim: self.claim,
            events: self.events,
        })
    }
}

/// A recorder with its schema and constants, not started yet (a binding
/// starts it without holding its interpreter lock).
pub struct ReadyRecorder {
    schema: Schema,
    config: RecorderConfig,
    claim: Option<Claim>,
    events: Vec<PendingEvent>,
}

impl ReadyRecorder {
    /// Starts the recorder ([`Recorder::new_claimed`]) and records the events
    /// kept so far at the times they happened (negative on its clock).
    pub fn start(self) -> Result<Recorder> {
        let rec = Recorder::new_claimed(self.schema, self.config, self.claim)?;
        for (name, payload, t_wall_ms, at) in self.events {
            let t = t_wall_ms.unwrap_or_else(|| rec.now_ms() - at.elapsed().as_secs_f64() * 1e3);
            rec.event(&name, payload, Some(t))?;
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputLayout;

    fn pending(dir: &std::path::Path, constants: &[&str]) -> PendingRecorder {
        let config = RecorderConfig::new(OutputLayout::run_folder(dir));
        PendingRecorder::new(config, 3, constants.iter().map(|c| c.to_string()).collect()).unwrap()
    }

    #[test]
    fn infers_constants_first_and_refuses_them_in_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), &["host"]);
        let schema: Schema = p
            .infer_schema(
                |_, _| Ok::<_, CoreError>(DType::Str),
                [("E".to_string(), 1.5)],
                |_, _| Ok(DType::F64),
            )
            .unwrap();
        assert_eq!(schema.version, 3);
        assert_eq!(schema.fields[0].name, "host");
        assert_eq!(schema.fields[1].name, "E");
        let err = p
            .infer_schema(
                |_, _| Ok::<_, CoreError>(DType::Str),
                [("host".to_string(), 1.5)],
                |_, _| Ok(DType::F64),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "field 'host' is filled in by the recorder; do not pass it"
        );
        let rec = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::Str("a".into())))
            .and_then(ReadyRecorder::start)
            .unwrap();
        assert!(rec.constant(0).is_some());
        rec.close().unwrap();
    }

    #[test]
    fn empty_rows_unknown_constants_and_early_events() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), &[]);
        let err = p
            .infer_schema(
                |_, _| Ok::<_, CoreError>(DType::Str),
                Vec::<(String, f64)>::new(),
                |_, _| Ok(DType::F64),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot infer a schema from a log() without fields"
        );
        let mut p = pending(&dir.path().join("b"), &["nope"]);
        p.event("START", None, None);
        assert_eq!(p.events_len(), 1);
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let err = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::F64(1.0)))
            .err()
            .unwrap();
        assert!(err
            .to_string()
            .starts_with("constant column 'nope' is not in the schema"));

        let mut p = pending(&dir.path().join("c"), &[]);
        p.event("START", None, None);
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let rec = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::Null))
            .and_then(ReadyRecorder::start)
            .unwrap();
        assert_eq!(rec.stats().events, 1);
        rec.close().unwrap();
    }
}
