//! The registry's model: schemas by global id, subjects and their versions (soft-deleted ones
//! kept), compatibility levels; and the queries on it that every operation shares (visible
//! versions, references resolved, schemas parsed).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::wire::{SchemaRequest, SubjectVersion, VersionSelector};
use crate::compat::CompatibilityLevel;
use crate::error::{RegistryError, StoreError};
use crate::schema::{self, Parsed, Reference, Resolved};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct State {
    /// The global compatibility level; `None` means the default, BACKWARD.
    #[serde(default)]
    pub(super) compatibility: Option<CompatibilityLevel>,
    /// Every schema ever registered, by global id. Ids are never reused or forgotten, so
    /// the same schema registered again after a permanent delete gets its old id back.
    #[serde(default)]
    pub(super) schemas: BTreeMap<u32, SchemaRecord>,
    #[serde(default)]
    pub(super) subjects: BTreeMap<String, SubjectRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SchemaRecord {
    pub(super) text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) references: Vec<Reference>,
    pub(super) fingerprint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SubjectRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) compatibility: Option<CompatibilityLevel>,
    /// Versions in increasing order; permanently deleted ones are gone.
    #[serde(default)]
    pub(super) versions: Vec<VersionRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct VersionRecord {
    pub(super) version: u32,
    pub(super) id: u32,
    #[serde(default)]
    pub(super) deleted: bool,
}

impl VersionRecord {
    pub(super) fn visible(&self, include_deleted: bool) -> bool {
        include_deleted || !self.deleted
    }
}

impl State {
    pub(super) fn level(&self, subject: &str) -> CompatibilityLevel {
        self.subjects
            .get(subject)
            .and_then(|s| s.compatibility)
            .or(self.compatibility)
            .unwrap_or_default()
    }

    /// The versions of `subject` that are visible; 40401 when there are none.
    pub(super) fn visible_versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<impl Iterator<Item = &VersionRecord>, RegistryError> {
        let versions = self
            .subjects
            .get(subject)
            .map(|s| s.versions.as_slice())
            .unwrap_or_default();
        if !versions.iter().any(|v| v.visible(include_deleted)) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions.iter().filter(move |v| v.visible(include_deleted)))
    }

    pub(super) fn find_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        include_deleted: bool,
    ) -> Result<VersionRecord, RegistryError> {
        let mut visible = self.visible_versions(subject, include_deleted)?;
        let found = match selector {
            VersionSelector::Latest => visible.last(),
            VersionSelector::Number(n) => visible.find(|v| v.version == n),
        };
        found.copied().ok_or(match selector {
            VersionSelector::Number(n) => RegistryError::VersionNotFound(n),
            VersionSelector::Latest => RegistryError::SubjectNotFound(subject.to_owned()),
        })
    }

    pub(super) fn show(&self, subject: &str, found: VersionRecord) -> SubjectVersion {
        let record = self.schemas.get(&found.id);
        SubjectVersion {
            subject: subject.to_owned(),
            version: found.version,
            id: found.id,
            schema: record.map(|r| r.text.clone()).unwrap_or_default(),
            references: record.map(|r| r.references.clone()).unwrap_or_default(),
        }
    }

    /// The schema with this id, if some version (soft-deleted included) still holds it.
    pub(super) fn schema_in_use(&self, id: u32) -> Result<&SchemaRecord, RegistryError> {
        let in_use = self
            .subjects
            .values()
            .any(|s| s.versions.iter().any(|v| v.id == id));
        self.schemas
            .get(&id)
            .filter(|_| in_use)
            .ok_or(RegistryError::SchemaIdNotFound(id))
    }

    /// The ids of schemas held by some version whose references name `subject` `version`.
    pub(super) fn referrers(&self, subject: &str, version: u32) -> BTreeSet<u32> {
        self.subjects
            .values()
            .flat_map(|s| s.versions.iter())
            .filter_map(|v| {
                let record = self.schemas.get(&v.id)?;
                record
                    .references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
                    .then_some(v.id)
            })
            .collect()
    }

    /// Looks up `references` and everything they reference in turn.
    pub(super) fn resolve(&self, references: &[Reference]) -> Result<Vec<Resolved>, RegistryError> {
        let mut resolved: Vec<Resolved> = Vec::new();
        let mut pending: Vec<Reference> = references.to_vec();
        while let Some(reference) = pending.pop() {
            let version = self
                .subjects
                .get(&reference.subject)
                .and_then(|s| s.versions.iter().find(|v| v.version == reference.version))
                .ok_or_else(|| {
                    RegistryError::InvalidSchema(format!(
                        "Invalid schema: reference '{}' to subject '{}' version {} not found",
                        reference.name, reference.subject, reference.version
                    ))
                })?;
            if resolved.iter().any(|r| r.id == version.id) {
                continue;
            }
            let record = self.schemas.get(&version.id).ok_or_else(|| {
                RegistryError::Store(StoreError::StoredSchema {
                    id: version.id,
                    reason: "missing from the schema table".into(),
                })
            })?;
            pending.extend(record.references.iter().cloned());
            resolved.push(Resolved {
                id: version.id,
                text: record.text.clone(),
            });
        }
        Ok(resolved)
    }

    pub(super) fn parse_request(&self, request: &SchemaRequest) -> Result<Parsed, RegistryError> {
        schema::check_type(request.schema_type.as_deref()).map_err(RegistryError::InvalidSchema)?;
        if request.schema.trim().is_empty() {
            return Err(RegistryError::InvalidSchema("Empty schema".into()));
        }
        let resolved = self.resolve(&request.references)?;
        schema::parse(&request.schema, &request.references, &resolved)
            .map_err(RegistryError::InvalidSchema)
    }

    pub(super) fn parse_stored(&self, id: u32) -> Result<(&str, Parsed), RegistryError> {
        let stored = |reason: String| RegistryError::Store(StoreError::StoredSchema { id, reason });
        let record = self
            .schemas
            .get(&id)
            .ok_or_else(|| stored("missing from the schema table".into()))?;
        let resolved = self
            .resolve(&record.references)
            .map_err(|e| stored(e.to_string()))?;
        let parsed = schema::parse(&record.text, &record.references, &resolved).map_err(stored)?;
        Ok((&record.text, parsed))
    }

    pub(super) fn live(&self, subject: &str) -> Vec<VersionRecord> {
        self.subjects
            .get(subject)
            .map(|s| s.versions.iter().filter(|v| !v.deleted).copied().collect())
            .unwrap_or_default()
    }

    /// Every version of `subject`, soft-deleted ones included; 40401 when it has none.
    pub(super) fn all_versions(&self, subject: &str) -> Result<Vec<VersionRecord>, RegistryError> {
        let versions: Vec<VersionRecord> = self
            .subjects
            .get(subject)
            .map(|s| s.versions.clone())
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }
}
