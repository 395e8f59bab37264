//! Telemetry schemas: fields, dtypes, and how a row is laid out in ring words.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema};
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// Longest field name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// The type of a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F64,
    F32,
    I64,
    Bool,
    /// Free text, dictionary-encoded.
    Str,
    /// One of a fixed list of labels, dictionary-encoded with that list.
    Enum(Vec<String>),
}

impl DType {
    /// The dtype's name as the Python API spells it.
    pub fn name(&self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::Str => "str",
            DType::Enum(_) => "enum",
        }
    }

    /// Parses `f64`, `f32`, `i64`, `bool`, `str` (enums are built with variants).
    pub fn parse(name: &str) -> Result<DType> {
        Ok(match name {
            "f64" | "float64" | "float" => DType::F64,
            "f32" | "float32" => DType::F32,
            "i64" | "int64" | "int" => DType::I64,
            "bool" => DType::Bool,
            "str" | "string" => DType::Str,
            other => {
                return Err(CoreError::Schema(format!(
                "unknown dtype '{other}': expected one of f64, f32, i64, bool, str or Enum([...])"
            )))
            }
        })
    }

    fn arrow_type(&self) -> DataType {
        match self {
            DType::F64 => DataType::Float64,
            DType::F32 => DataType::Float32,
            DType::I64 => DataType::Int64,
            DType::Bool => DataType::Boolean,
            DType::Str | DType::Enum(_) => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
        }
    }

    /// True for dtypes stored as dictionary codes.
    pub fn is_dictionary(&self) -> bool {
        matches!(self, DType::Str | DType::Enum(_))
    }
}

/// One column of a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub dtype: DType,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

impl Field {
    /// A non-nullable field without unit or doc.
    pub fn new(name: impl Into<String>, dtype: DType) -> Self {
        Field {
            name: name.into(),
            dtype,
            nullable: false,
            unit: None,
            doc: None,
        }
    }

    /// The same field, nullable.
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }
}

/// An ordered list of fields with a version number (`schema_version` in every file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub fields: Vec<Field>,
    pub version: i64,
}

impl Schema {
    /// Validates names (non-empty, unique, at most 128 characters, no control
    /// characters) and enum variants (non-empty, unique).
    pub fn new(fields: Vec<Field>, version: i64) -> Result<Schema> {
        if fields.is_empty() {
            return Err(CoreError::Schema(
                "a schema needs at least one field".into(),
            ));
        }
        let mut seen = HashMap::new();
        for (i, f) in fields.iter().enumerate() {
            if f.name.is_empty() || f.name.chars().count() > MAX_NAME_LEN {
                return Err(CoreError::Schema(format!(
                    "field name '{}' must have 1 to {MAX_NAME_LEN} characters",
                    f.name
                )));
            }
            if f.name.chars().any(char::is_control) {
                return Err(CoreError::Schema(format!(
                    "field name '{}' contains a control character",
                    f.name
                )));
            }
            if seen.insert(f.name.as_str(), i).is_some() {
                return Err(CoreError::Schema(format!(
                    "field '{}' appears twice in the schema",
                    f.name
                )));
            }
            if let DType::Enum(variants) = &f.dtype {
                if variants.is_empty() {
                    return Err(CoreError::Schema(format!(
                        "enum field '{}' has no variants",
                        f.name
                    )));
                }
                let mut uniq: Vec<&String> = variants.iter().collect();
                uniq.sort();
                uniq.dedup();
                if uniq.len() != variants.len() {
                    return Err(CoreError::Schema(format!(
                        "enum field '{}' repeats a variant: {variants:?}",
                        f.name
                    )));
                }
            }
        }
        Ok(Schema { fields, version })
    }

    /// Index of a field by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Field names joined for error messages: `[iter: i64, E: f64, ...]`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{}: {}{}",
                    f.name,
                    f.dtype.name(),
                    if f.nullable { "?" } else { "" }
                )
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }

    /// The Arrow schema of the telemetry batches.
    pub fn arrow_schema(&self) -> Arc<ArrowSchema> {
        Arc::new(ArrowSchema::new(
            self.fields
                .iter()
                .map(|f| ArrowField::new(&f.name, f.dtype.arrow_type(), f.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// The schema as JSON (the `flightlog.schema` key of every file).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a schema always serialises")
    }

    /// Parses [`Schema::to_json`] output.
    pub fn from_json(text: &str) -> Result<Schema> {
        let s: Schema = serde_json::from_str(text)
            .map_err(|e| CoreError::Schema(format!("malformed schema JSON: {e}")))?;
        Schema::new(s.fields, s.version)
    }
}

/// A value for one cell, used for constant columns and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
}
