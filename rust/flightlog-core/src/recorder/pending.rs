//! A recorder whose schema is not known yet: the folder is claimed at
//! construction, events are kept, and the first row (or an explicit schema)
//! starts the [`Recorder`] ([`PendingRecorder::prepare`], then
//! [`ReadyRecorder::start`]). A binding supplies the values' conversions; the
//! order of the checks, the schema inferred and the errors are decided here.
//!
//! Events are in a spool before `event` returns, as a started recorder's are:
//! the first one creates an events-only spool ([`SpoolMeta::events_only`]),
//! which `recover` publishes if the process dies before the first row, and
//! which the recorder adopts when it starts.
//!
//! The recorder's clock (`t_wall_ms`, `now_ms`) starts when the pending
//! recorder is made, not when its schema becomes known: early events and
//! `now_ms` before the first row are on the clock of the rows that follow.

use std::time::Instant;

use crate::claim::{instance_id, Claim, Owner};
use crate::error::{CoreError, Result};
use crate::schema::{DType, Field, Schema, Value};
use crate::spool::{self, Spool, SpoolMeta, SpooledEvent};

use super::rows::filled_in;
use super::{file_metadata, spool_dir, spool_location, Recorder, RecorderConfig};

/// An event recorded before the schema was known: name, JSON payload and
/// `t_wall_ms` (the caller's, or stamped on the recorder's clock).
pub(super) type PendingEvent = (String, Option<String>, f64);

/// The events-only spool of a pending recorder. Removed when dropped unless
/// a recorder adopted it ([`PendingSpool::into_spool`]): a recorder closed
/// before any row gave it a schema writes no events (the binding says so), and
/// a forked child leaves its parent's spool alone.
pub(super) struct PendingSpool {
    spool: Option<Spool>,
    pub(super) instance: u64,
    owner: Owner,
}

impl PendingSpool {
    /// The spool, for the recorder that adopts it.
    pub(super) fn into_spool(mut self) -> Spool {
        self.spool.take().expect("taken only here")
    }
}

impl Drop for PendingSpool {
    fn drop(&mut self) {
        if let Some(spool) = self.spool.take() {
            if self.owner.is_current() {
                spool.close_files();
                spool.remove();
            }
        }
    }
}

/// What a pending recorder hands to the recorder it starts.
#[derive(Default)]
pub(super) struct Handover {
    pub(super) events: Vec<PendingEvent>,
    pub(super) spool: Option<PendingSpool>,
    /// The origin of the recorder's clock: when the pending recorder was
    /// made (None: when the recorder starts).
    pub(super) clock_origin: Option<Instant>,
}

/// Settings kept until the schema is known.
pub struct PendingRecorder {
    /// The spool of the events kept so far (before `claim`: dropped first, so
    /// the folder's claim is released only once it is gone).
    spool: Option<PendingSpool>,
    /// The spool could not be made (a full disk, or an unfinished recording's
    /// spool in the folder, which starting the recorder will report): events
    /// are kept in memory only.
    spool_failed: bool,
    /// When the recorder was made: the origin of its clock, which the
    /// recorder it starts keeps (see [`PendingRecorder::now_ms`]).
    made: Instant,
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
    /// it): recorded when the recorder starts, with the times they were given.
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
        // Refused now, as a recorder given its schema is refused: the folder
        // holds rows or events of a recording that did not finish (an event
        // accepted here could not be spooled, and the first row would fail).
        let (spool_base, local) = spool_dir(&config);
        if local {
            spool::check_no_unfinished(&spool_base, None)?;
        }
        // So is a folder holding a finished recording, or segments not merged.
        super::finish::check_fresh(&config.layout)?;
        Ok(PendingRecorder {
            spool: None,
            spool_failed: false,
            made: Instant::now(),
            claim,
            owner: Owner::current(),
            config,
            schema_version,
            constants,
            events: Vec::new(),
        })
    }

    /// Gives up a recorder that never got its schema (closed before its
    /// first row): its events go unwritten (the count is returned, for the
    /// caller's warning), their spool is removed, and the folder's claim is
    /// released. An output file's hidden folder, then empty, goes too: a
    /// recording that wrote nothing leaves nothing behind. In a forked child
    /// nothing is touched and nothing is dropped (0): the events, their spool
    /// and the claim are the parent's.
    pub fn abandon(mut self) -> usize {
        let here = self.owner.is_current();
        let dropped = if here { self.events.len() } else { 0 };
        let sidecar = self.config.layout.claim_dir.clone();
        drop(self.spool.take());
        drop(self.claim.take());
        if let Some(dir) = sidecar.filter(|_| here) {
            // Only if empty: another recorder of the same file may be in it.
            let _ = std::fs::remove_dir(dir);
        }
        dropped
    }

    /// The version of the schema the recorder will have.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// Milliseconds since the recorder was made, from a monotonic clock: the
    /// clock of its events, which the recorder it starts continues
    /// ([`crate::Recorder::now_ms`] counts from the same instant).
    pub fn now_ms(&self) -> f64 {
        self.made.elapsed().as_secs_f64() * 1e3
    }

    /// Keeps an event for the recorder to come, in the spool before it
    /// returns (the first event creates the spool; if it cannot, events are
    /// kept in memory only, as a started recorder keeps rows when its spool
    /// fails). Refused in a forked child: the spool is the parent's.
    ///
    /// A recording that replaces an output file keeps its early events in
    /// memory: until its first row it has nothing to replace the file with,
    /// so a crash leaves the old file whole, as a close would.
    pub fn event(
        &mut self,
        name: &str,
        payload_json: Option<String>,
        t_wall_ms: Option<f64>,
    ) -> Result<()> {
        self.owner.check()?;
        let t_wall_ms = t_wall_ms.unwrap_or_else(|| self.now_ms());
        if self.spool.is_none() && !self.spool_failed && !self.config.layout.is_replacement() {
            self.spool = self.create_spool().ok();
            self.spool_failed = self.spool.is_none();
        }
        if let Some(spool) = self.spool.as_ref().and_then(|p| p.spool.as_ref()) {
            let event = SpooledEvent {
                t_wall_ms,
                iter: None,
                name: name.to_owned(),
                payload: payload_json.clone(),
            };
            if spool.log_event(self.events.len() as u64, &event).is_err() {
                spool
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.events.push((name.to_owned(), payload_json, t_wall_ms));
        Ok(())
    }

    /// The events-only spool, where the recorder's spool will be.
    fn create_spool(&self) -> Result<PendingSpool> {
        let instance = instance_id();
        let mut config = self.config.clone();
        config.layout = config.layout.with_instance(instance);
        let meta = SpoolMeta {
            format: spool::FORMAT,
            boot_id: spool::boot_id(),
            pid: std::process::id(),
            instance,
            width: 0,
            ring_capacity: 0,
            schema_json: String::new(),
            constants: Vec::new(),
            file_kv: file_metadata(self.schema_version, None, &config)?,
            run_id: config.run_id.clone(),
            location: spool_location(&config),
        };
        let (base, _) = spool_dir(&config);
        Ok(PendingSpool {
            spool: Some(Spool::create(&base, &meta)?),
            instance,
            owner: Owner::current(),
        })
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
    /// constant not in the schema; the pending recorder then comes back with
    /// the error, its events, spool and claim as they were.
    pub fn prepare<E: From<CoreError>>(
        self,
        schema: Schema,
        mut constant_value: impl FnMut(usize, &str, &DType) -> std::result::Result<Value, E>,
    ) -> std::result::Result<ReadyRecorder, NotStarted<E>> {
        let constants = (|| {
            self.owner.check()?;
            let mut values = Vec::with_capacity(self.constants.len());
            for (i, name) in self.constants.iter().enumerate() {
                let field = schema.index_of(name).ok_or_else(|| {
                    CoreError::Schema(format!(
                        "constant column '{name}' is not in the schema {}",
                        schema.describe()
                    ))
                })?;
                let v = constant_value(i, name, &schema.fields[field].dtype)?;
                values.push((name.clone(), v));
            }
            Ok(values)
        })();
        match constants {
            Ok(constants) => Ok(ReadyRecorder {
                pending: self,
                schema,
                constants,
            }),
            Err(error) => Err(NotStarted {
                error,
                pending: Box::new(self),
            }),
        }
    }
}

/// A pending recorder that could not start, and why: it keeps its early
/// events, their spool and the folder's claim, so that a later try (or its
/// close) still has them.
pub struct NotStarted<E> {
    pub error: E,
    pub pending: Box<PendingRecorder>,
}

impl<E: std::fmt::Debug> std::fmt::Debug for NotStarted<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotStarted")
            .field("error", &self.error)
            .field("events_kept", &self.pending.events.len())
            .finish()
    }
}

/// A recorder with its schema and constants, not started yet (a binding
/// starts it without holding its interpreter lock).
pub struct ReadyRecorder {
    pending: PendingRecorder,
    schema: Schema,
    constants: Vec<(String, Value)>,
}

impl ReadyRecorder {
    /// Starts the recorder ([`Recorder::new_claimed`]) with the events kept
    /// so far and the spool they are in; its clock continues the pending
    /// recorder's (it counts from when that was made). On an error the
    /// pending recorder comes back as it was (see [`Recorder::start`] for
    /// what it keeps when the error comes after its spool was adopted).
    pub fn start(self) -> std::result::Result<Recorder, NotStarted<CoreError>> {
        let ReadyRecorder {
            mut pending,
            schema,
            constants,
        } = self;
        let mut config = pending.config.clone();
        config.constants.extend(constants);
        let mut handover = Handover {
            events: std::mem::take(&mut pending.events),
            spool: pending.spool.take(),
            clock_origin: Some(pending.made),
        };
        let had_spool = handover.spool.is_some();
        let mut claim = pending.claim.take();
        match Recorder::start(schema, config, &mut claim, &mut handover) {
            Ok(recorder) => Ok(recorder),
            Err(error) => {
                pending.events = handover.events;
                pending.spool = handover.spool;
                // A spool adopted before the error stays on disk for
                // `recover`; another one cannot be made beside it.
                pending.spool_failed |= had_spool && pending.spool.is_none();
                pending.claim = claim;
                Err(NotStarted {
                    error,
                    pending: Box::new(pending),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputLayout;
    use std::collections::BTreeMap;

    fn spool_of(run: &std::path::Path) -> Vec<std::path::PathBuf> {
        spool::spool_dirs(&run.join(spool::SPOOL_DIR_NAME))
    }

    /// Events before the schema are in an events-only spool when `event`
    /// returns (what recover would publish after a kill); the recorder that
    /// starts adopts that spool, and its clock continues the pending one's:
    /// the events' times stand, and `now_ms` never goes back.
    #[test]
    fn early_events_are_spooled_then_adopted_by_the_recorder() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut p = pending(&run, &[]);
        assert!(spool_of(&run).is_empty(), "no spool before the first event");
        p.event("START", Some("{\"k\":1}".into()), None).unwrap();
        p.event("CONFIG", None, Some(42.0)).unwrap();
        let spools = spool_of(&run);
        assert_eq!(spools.len(), 1);
        let s = spool::salvage(&spools[0], &BTreeMap::new(), 0).unwrap();
        assert!(s.meta.as_ref().unwrap().events_only());
        let names: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["START", "CONFIG"]);
        assert_eq!(s.events[1].t_wall_ms, 42.0);
        let stamped = s.events[0].t_wall_ms;
        assert!(stamped >= 0.0);
        let batches = crate::recorder::salvaged_batches(&s).unwrap().unwrap();
        assert!(batches.telemetry.is_none());
        assert_eq!(batches.events.unwrap().num_rows(), 2);

        std::thread::sleep(std::time::Duration::from_millis(5));
        let before = p.now_ms();
        assert!(before >= stamped + 5.0, "{before} {stamped}");
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let rec = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::Null))
            .and_then(ReadyRecorder::start)
            .unwrap();
        assert!(rec.now_ms() >= before, "the clock went back at the start");
        assert_eq!(spool_of(&run), spools, "the recorder took over the spool");
        let s = spool::salvage(&spools[0], &BTreeMap::new(), 0).unwrap();
        assert!(!s.meta.as_ref().unwrap().events_only());
        assert_eq!(s.events.len(), 2);
        assert_eq!(
            s.events[0].t_wall_ms, stamped,
            "on the recorder's clock already"
        );
        assert_eq!(s.events[1].t_wall_ms, 42.0);
        rec.event("LATER", None, None).unwrap();
        let s = spool::salvage(&spools[0], &BTreeMap::new(), 0).unwrap();
        let names: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["START", "CONFIG", "LATER"], "numbered on");
        assert_eq!(rec.stats().events, 3);
        rec.close().unwrap();
        assert!(!run.join(spool::SPOOL_DIR_NAME).exists());
        let events = crate::read::read_events(&OutputLayout::run_folder(&run)).unwrap();
        let total: usize = events
            .iter()
            .flat_map(|(_, b)| b)
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(total, 3);
    }

    /// A pending recorder dropped before any row (a binding's close without
    /// a schema) leaves no spool, and releases the folder.
    #[test]
    fn a_pending_recorder_dropped_leaves_no_spool() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut p = pending(&run, &[]);
        p.event("START", None, None).unwrap();
        assert_eq!(spool_of(&run).len(), 1);
        drop(p);
        assert!(!run.join(spool::SPOOL_DIR_NAME).exists());
        let mut again = pending(&run, &[]);
        again.event("START", None, None).unwrap();
    }

    fn pending(dir: &std::path::Path, constants: &[&str]) -> PendingRecorder {
        let config = RecorderConfig::new(OutputLayout::run_folder(dir));
        PendingRecorder::new(config, 3, constants.iter().map(|c| c.to_string()).collect()).unwrap()
    }

    /// A start that fails (here: a finished recording's file appeared in the
    /// folder after the pending recorder was made) hands the pending recorder
    /// back whole: its events, their spool on disk (what `recover` would
    /// publish after a kill) and the folder's claim. Once the folder is fit
    /// again, a second start records the events as if nothing had happened.
    #[test]
    fn a_failed_start_keeps_the_early_events_and_their_spool() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut p = pending(&run, &[]);
        p.event("START", Some("{\"k\":1}".into()), None).unwrap();
        p.event("CONFIG", None, Some(42.0)).unwrap();
        assert_eq!(spool_of(&run).len(), 1);
        let intruder = run.join("telemetry.parquet");
        std::fs::write(&intruder, b"PAR1").unwrap();
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let failed = p
            .prepare(schema.clone(), |_, _, _| Ok::<_, CoreError>(Value::Null))
            .and_then(ReadyRecorder::start)
            .err()
            .expect("a finished recording's file is in the folder");
        assert!(
            matches!(failed.error, CoreError::Exists(_)),
            "{:?}",
            failed.error
        );
        let p = *failed.pending;
        assert_eq!(p.events_len(), 2);
        let spools = spool_of(&run);
        assert_eq!(spools.len(), 1, "the events' spool is still on disk");
        let s = spool::salvage(&spools[0], &BTreeMap::new(), 0).unwrap();
        assert_eq!(s.events.len(), 2);
        // Still this folder's one writer.
        let other = RecorderConfig::new(OutputLayout::run_folder(&run));
        assert!(PendingRecorder::new(other, 3, Vec::new()).is_err());

        std::fs::remove_file(&intruder).unwrap();
        let rec = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::Null))
            .and_then(ReadyRecorder::start)
            .unwrap();
        let mut row = rec.row_layout().new_row();
        row[0] = 1.5f64.to_bits();
        rec.push(&row).unwrap();
        rec.close().unwrap();
        assert!(spool_of(&run).is_empty());
        let (_, events) = crate::parquet_io::read_file(&run.join("events.parquet")).unwrap();
        let rows: usize = events.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 2);
        let (_, telemetry) = crate::parquet_io::read_file(&run.join("telemetry.parquet")).unwrap();
        assert_eq!(telemetry.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    }

    /// A folder it could never record into (a finished recording's final
    /// files) is refused at construction, before any event is accepted.
    #[test]
    fn a_finished_folder_is_refused_before_any_event() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("telemetry.parquet"), b"PAR1").unwrap();
        let config = RecorderConfig::new(OutputLayout::run_folder(dir.path()));
        let err = PendingRecorder::new(config, 3, Vec::new())
            .err()
            .expect("refused");
        assert!(matches!(err, CoreError::Exists(_)), "{err:?}");
        assert!(spool_of(dir.path()).is_empty());
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
        p.event("START", None, None).unwrap();
        assert_eq!(p.events_len(), 1);
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let err = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::F64(1.0)))
            .err()
            .unwrap();
        assert!(err
            .error
            .to_string()
            .starts_with("constant column 'nope' is not in the schema"));
        assert_eq!(err.pending.events_len(), 1, "the refusal keeps the event");

        let mut p = pending(&dir.path().join("c"), &[]);
        p.event("START", None, None).unwrap();
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let rec = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::Null))
            .and_then(ReadyRecorder::start)
            .unwrap();
        assert_eq!(rec.stats().events, 1);
        rec.close().unwrap();
    }

    /// A replacing output file keeps its early events in memory (no spool):
    /// stamped on the same clock, which the recorder continues, so the
    /// events keep their order against the first row's.
    #[test]
    fn events_kept_in_memory_are_on_the_clock_the_recorder_continues() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.parquet");
        let config = RecorderConfig::new(OutputLayout::output_file(&file, true));
        let mut p = PendingRecorder::new(config, 1, Vec::new()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        p.event("EARLY", None, None).unwrap();
        assert!(
            p.spool.is_none(),
            "a replacing recording spools nothing yet"
        );
        let before = p.now_ms();
        assert!(before >= 5.0, "{before}");
        let schema = Schema::new(vec![Field::new("E", DType::F64)], 1).unwrap();
        let rec = p
            .prepare(schema, |_, _, _| Ok::<_, CoreError>(Value::Null))
            .and_then(ReadyRecorder::start)
            .unwrap();
        assert!(rec.now_ms() >= before);
        rec.event("LATER", None, None).unwrap();
        rec.close().unwrap();
        // The close moved the recording into place (the output file, and the
        // events beside it in the sidecar).
        let placed = OutputLayout::output_file(&file, false);
        let events = crate::read::read_events(&placed).unwrap();
        let times: Vec<f64> = events
            .iter()
            .flat_map(|(_, b)| b)
            .flat_map(|b| {
                let col = b.column_by_name("t_wall_ms").unwrap();
                let col = col
                    .as_any()
                    .downcast_ref::<arrow_array::Float64Array>()
                    .unwrap();
                col.values().to_vec()
            })
            .collect();
        assert_eq!(times.len(), 2);
        assert!(
            5.0 <= times[0] && times[0] <= before && before <= times[1],
            "{times:?}"
        );
    }
}
