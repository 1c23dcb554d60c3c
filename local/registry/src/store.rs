//! The registry's state — schemas by global id, subjects and their versions, compatibility
//! settings — the operations on it, and its persistence to one JSON file.
//!
//! Every change is made on a copy of the state, written to disk (temporary file, fsync,
//! rename, fsync of the directory) and only then swapped in, all under one mutex: a change
//! that could not be saved is not made.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::compat::{self, CompatibilityLevel, Earlier};
use crate::error::{RegistryError, StoreError};
use crate::schema::{self, Parsed, Reference, Resolved};

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "registry.json";

/// A schema as submitted for registration, lookup or a compatibility test: the body of
/// Confluent's `POST /subjects/{subject}/versions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    /// The schema's JSON text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub schema: String,
    /// `AVRO` or absent; anything else is refused.
    #[serde(default)]
    pub schema_type: Option<String>,
    /// Named types this schema uses from other subjects.
    #[serde(default, deserialize_with = "null_as_default")]
    pub references: Vec<Reference>,
}

/// Reads `null` as the default value, as Confluent's Jackson-based server does.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl SchemaRequest {
    /// A request for a schema without references.
    pub fn avro(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }
}

/// Which version of a subject a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The latest version (`latest` or `-1`).
    Latest,
    /// A version number.
    Number(u32),
}

impl FromStr for VersionSelector {
    type Err = RegistryError;

    /// Parses `latest`, `-1` or a number from 1 to 2^31-1; anything else is a 42202 error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" || s == "-1" {
            return Ok(Self::Latest);
        }
        match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(Self::Number(n.unsigned_abs())),
            _ => Err(RegistryError::InvalidVersion(s.to_owned())),
        }
    }
}

/// One version of a subject, as `GET /subjects/{subject}/versions/{version}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number.
    pub version: u32,
    /// The schema's global id.
    pub id: u32,
    /// The schema's text, as first registered.
    pub schema: String,
    /// The schema's references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A schema found by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaById {
    /// The schema's text, as first registered.
    pub schema: String,
    /// The schema's references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The schema's global id.
    pub id: u32,
    /// The version of the subject that holds it.
    pub version: u32,
    /// Whether a new version was added (false: the subject already had this schema).
    pub created: bool,
}

/// The registry's state, shared by every handler; cloning gives another handle on it.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Mutex<State>>,
    file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// The global compatibility level; `None` means the default, BACKWARD.
    #[serde(default)]
    compatibility: Option<CompatibilityLevel>,
    /// Every schema ever registered, by global id. Ids are never reused or forgotten, so
    /// the same schema registered again after a permanent delete gets its old id back.
    #[serde(default)]
    schemas: BTreeMap<u32, SchemaRecord>,
    #[serde(default)]
    subjects: BTreeMap<String, SubjectRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SchemaRecord {
    text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    references: Vec<Reference>,
    fingerprint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SubjectRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compatibility: Option<CompatibilityLevel>,
    /// Versions in increasing order; permanently deleted ones are gone.
    #[serde(default)]
    versions: Vec<VersionRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct VersionRecord {
    version: u32,
    id: u32,
    #[serde(default)]
    deleted: bool,
}

impl VersionRecord {
    fn visible(&self, include_deleted: bool) -> bool {
        include_deleted || !self.deleted
    }
}

impl Store {
    /// A store kept in memory only, lost when the last handle is dropped.
    pub fn in_memory() -> Self {
        Self {
            inner: Arc::new(Mutex::new(State::default())),
            file: None,
        }
    }

    /// Opens the store kept in `data_dir`, creating the directory if needed and loading the
    /// state file if there is one.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            action: "creating",
            path: data_dir.to_owned(),
            source,
        })?;
        let file = data_dir.join(STATE_FILE);
        let state = match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: file.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "reading",
                    path: file,
                    source,
                });
            }
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(state)),
            file: Some(file),
        })
    }

    /// The state file, if the store is persistent.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        // A panic while the lock was held cannot have left a half-made change behind (changes
        // are made on a copy), so a poisoned lock is safe to use.
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&state)
    }

    fn change<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = state.clone();
        let out = f(&mut next)?;
        if next != *state {
            if let Some(file) = &self.file {
                save(file, &next)?;
            }
            *state = next;
        }
        Ok(out)
    }

    /// Registers `request` under `subject` (Confluent's `POST /subjects/{subject}/versions`).
    pub fn register(
        &self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<Registration, RegistryError> {
        self.change(|state| state.register(subject, request))
    }

    /// Finds the version of `subject` holding `request`'s schema (`POST /subjects/{subject}`).
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        self.read(|state| state.lookup(subject, request, include_deleted))
    }

    /// The schema with global id `id`, if a version still holds it (soft-deleted included).
    pub fn schema_by_id(&self, id: u32) -> Result<SchemaById, RegistryError> {
        self.read(|state| {
            let record = state.schema_in_use(id)?;
            Ok(SchemaById {
                schema: record.text.clone(),
                references: record.references.clone(),
            })
        })
    }

    /// The subject-version pairs that hold schema `id`, by subject: as Confluent's registry,
    /// one per subject, the latest version registered with it (a schema registered again
    /// after a soft delete gets a new version with the same id), left out when soft-deleted
    /// unless `include_deleted`. An id whose versions are all soft-deleted has none; one that
    /// no version holds is not found.
    pub fn versions_of_id(
        &self,
        id: u32,
        include_deleted: bool,
    ) -> Result<Vec<(String, u32)>, RegistryError> {
        self.read(|state| {
            state.schema_in_use(id)?;
            Ok(state
                .subjects
                .iter()
                .filter_map(|(subject, record)| {
                    record
                        .versions
                        .iter()
                        .filter(|v| v.id == id)
                        .max_by_key(|v| v.version)
                        .filter(|v| v.visible(include_deleted))
                        .map(|v| (subject.clone(), v.version))
                })
                .collect())
        })
    }

    /// The subjects with a live version (or any version, with `include_deleted`), sorted,
    /// optionally only those starting with `prefix`.
    pub fn subjects(&self, include_deleted: bool, prefix: Option<&str>) -> Vec<String> {
        self.read(|state| {
            state
                .subjects
                .iter()
                .filter(|(name, record)| {
                    prefix.is_none_or(|p| name.starts_with(p))
                        && record.versions.iter().any(|v| v.visible(include_deleted))
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
    }

    /// The version numbers of `subject`.
    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        self.read(|state| {
            Ok(state
                .visible_versions(subject, include_deleted)?
                .map(|v| v.version)
                .collect())
        })
    }

    /// One version of `subject`.
    pub fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        self.read(|state| {
            let found = state.find_version(subject, selector, include_deleted)?;
            Ok(state.show(subject, found))
        })
    }

    /// The ids of the schemas whose references point at this version of `subject`.
    pub fn referenced_by(
        &self,
        subject: &str,
        selector: VersionSelector,
    ) -> Result<Vec<u32>, RegistryError> {
        self.read(|state| {
            let found = state.find_version(subject, selector, false)?;
            Ok(state
                .referrers(subject, found.version)
                .into_iter()
                .collect())
        })
    }

    /// Deletes every version of `subject`: softly, or for good after a soft delete. Returns
    /// the versions deleted.
    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        self.change(|state| state.delete_subject(subject, permanent))
    }

    /// Deletes one version of `subject`: softly, or for good after a soft delete. Returns the
    /// version deleted.
    pub fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        self.change(|state| state.delete_version(subject, selector, permanent))
    }

    /// The global compatibility level.
    pub fn global_compatibility(&self) -> CompatibilityLevel {
        self.read(|state| state.compatibility.unwrap_or_default())
    }

    /// Sets the global compatibility level.
    pub fn set_global_compatibility(&self, level: CompatibilityLevel) -> Result<(), RegistryError> {
        self.change(|state| {
            state.compatibility = Some(level);
            Ok(())
        })
    }

    /// Resets the global compatibility level to the default; returns the level it had.
    pub fn reset_global_compatibility(&self) -> Result<CompatibilityLevel, RegistryError> {
        self.change(|state| Ok(state.compatibility.take().unwrap_or_default()))
    }

    /// The subject's own compatibility level, if it has one.
    pub fn subject_compatibility(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.read(|state| state.subjects.get(subject).and_then(|s| s.compatibility))
    }

    /// Sets the subject's own compatibility level (the subject need not have versions).
    pub fn set_subject_compatibility(
        &self,
        subject: &str,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        self.change(|state| {
            state
                .subjects
                .entry(subject.to_owned())
                .or_default()
                .compatibility = Some(level);
            Ok(())
        })
    }

    /// Removes the subject's own compatibility level; returns the level it had.
    pub fn delete_subject_compatibility(
        &self,
        subject: &str,
    ) -> Result<CompatibilityLevel, RegistryError> {
        self.change(|state| {
            let record = state.subjects.get_mut(subject);
            let level = record
                .and_then(|r| r.compatibility.take())
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
            state.forget_if_empty(subject);
            Ok(level)
        })
    }

    /// Tests `request` against `subject` (`POST /compatibility/subjects/{subject}/versions[/{v}]`):
    /// against one version when `selector` is given, else against the live versions the
    /// subject's level looks at. Returns the messages; empty when compatible.
    pub fn test_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        request: &SchemaRequest,
    ) -> Result<Vec<String>, RegistryError> {
        self.read(|state| state.test_compatibility(subject, selector, request))
    }
}

impl State {
    fn level(&self, subject: &str) -> CompatibilityLevel {
        self.subjects
            .get(subject)
            .and_then(|s| s.compatibility)
            .or(self.compatibility)
            .unwrap_or_default()
    }

    /// The versions of `subject` that are visible; 40401 when there are none.
    fn visible_versions(
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

    fn find_version(
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

    fn show(&self, subject: &str, found: VersionRecord) -> SubjectVersion {
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
    fn schema_in_use(&self, id: u32) -> Result<&SchemaRecord, RegistryError> {
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
    fn referrers(&self, subject: &str, version: u32) -> BTreeSet<u32> {
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
    fn resolve(&self, references: &[Reference]) -> Result<Vec<Resolved>, RegistryError> {
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

    fn parse_request(&self, request: &SchemaRequest) -> Result<Parsed, RegistryError> {
        schema::check_type(request.schema_type.as_deref()).map_err(RegistryError::InvalidSchema)?;
        if request.schema.trim().is_empty() {
            return Err(RegistryError::InvalidSchema("Empty schema".into()));
        }
        let resolved = self.resolve(&request.references)?;
        schema::parse(&request.schema, &request.references, &resolved)
            .map_err(RegistryError::InvalidSchema)
    }

    fn parse_stored(&self, id: u32) -> Result<(&str, Parsed), RegistryError> {
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

    /// Checks `parsed` against `versions` (oldest first) under `level`.
    fn check(
        &self,
        level: CompatibilityLevel,
        parsed: &Parsed,
        versions: &[VersionRecord],
    ) -> Result<Vec<String>, RegistryError> {
        if level == CompatibilityLevel::None || versions.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = if level.is_transitive() {
            versions
        } else {
            &versions[versions.len() - 1..]
        };
        let stored = wanted
            .iter()
            .map(|v| Ok((v.version, self.parse_stored(v.id)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let earlier: Vec<Earlier<'_>> = stored
            .iter()
            .map(|(version, (text, parsed))| Earlier {
                version: *version,
                text,
                schema: &parsed.schema,
            })
            .collect();
        Ok(compat::check(level, &parsed.schema, &earlier))
    }

    fn live(&self, subject: &str) -> Vec<VersionRecord> {
        self.subjects
            .get(subject)
            .map(|s| s.versions.iter().filter(|v| !v.deleted).copied().collect())
            .unwrap_or_default()
    }

    fn register(
        &mut self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<Registration, RegistryError> {
        let parsed = self.parse_request(request)?;
        let live = self.live(subject);
        if let Some(existing) = live.iter().rev().find(|v| {
            self.schemas
                .get(&v.id)
                .is_some_and(|s| s.fingerprint == parsed.fingerprint)
        }) {
            return Ok(Registration {
                id: existing.id,
                version: existing.version,
                created: false,
            });
        }
        let details = self.check(self.level(subject), &parsed, &live)?;
        if !details.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                details,
            });
        }
        let known = self
            .schemas
            .iter()
            .find(|(_, s)| s.fingerprint == parsed.fingerprint)
            .map(|(id, _)| *id);
        let id = match known {
            Some(id) => id,
            None => {
                let id = self.schemas.keys().next_back().map_or(1, |last| last + 1);
                self.schemas.insert(
                    id,
                    SchemaRecord {
                        text: request.schema.clone(),
                        references: request.references.clone(),
                        fingerprint: parsed.fingerprint,
                    },
                );
                id
            }
        };
        let record = self.subjects.entry(subject.to_owned()).or_default();
        let version = record.versions.last().map_or(1, |v| v.version + 1);
        record.versions.push(VersionRecord {
            version,
            id,
            deleted: false,
        });
        Ok(Registration {
            id,
            version,
            created: true,
        })
    }

    fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let visible: Vec<VersionRecord> = self
            .visible_versions(subject, include_deleted)?
            .copied()
            .collect();
        let parsed = self.parse_request(request)?;
        let found = visible
            .iter()
            .rev()
            .find(|v| {
                self.schemas
                    .get(&v.id)
                    .is_some_and(|s| s.fingerprint == parsed.fingerprint)
            })
            .ok_or(RegistryError::SchemaNotFound)?;
        Ok(self.show(subject, *found))
    }

    fn test_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        request: &SchemaRequest,
    ) -> Result<Vec<String>, RegistryError> {
        let parsed = self.parse_request(request)?;
        let live = self.live(subject);
        let level = self.level(subject);
        match selector {
            None => self.check(level, &parsed, &live),
            Some(VersionSelector::Latest) => self.check(
                non_transitive(level),
                &parsed,
                &live[live.len().saturating_sub(1)..],
            ),
            Some(VersionSelector::Number(n)) => {
                // Confluent answers 40402 here even when the subject does not exist at all.
                let version = live
                    .iter()
                    .find(|v| v.version == n)
                    .ok_or(RegistryError::VersionNotFound(n))?;
                self.check(
                    non_transitive(level),
                    &parsed,
                    std::slice::from_ref(version),
                )
            }
        }
    }

    fn ensure_unreferenced(&self, subject: &str, version: u32) -> Result<(), RegistryError> {
        if self.referrers(subject, version).is_empty() {
            Ok(())
        } else {
            Err(RegistryError::ReferenceExists {
                subject: subject.to_owned(),
                version,
            })
        }
    }

    fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let versions: Vec<VersionRecord> = self
            .subjects
            .get(subject)
            .map(|s| s.versions.clone())
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let live: Vec<u32> = versions
            .iter()
            .filter(|v| !v.deleted)
            .map(|v| v.version)
            .collect();
        if permanent && !live.is_empty() {
            return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
        }
        if !permanent && live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
        }
        let targets: Vec<u32> = if permanent {
            versions.iter().map(|v| v.version).collect()
        } else {
            live
        };
        for version in &targets {
            self.ensure_unreferenced(subject, *version)?;
        }
        if permanent {
            self.subjects.remove(subject);
        } else if let Some(record) = self.subjects.get_mut(subject) {
            record.versions.iter_mut().for_each(|v| v.deleted = true);
            // As Confluent does, deleting a subject also drops its compatibility setting.
            record.compatibility = None;
        }
        Ok(targets)
    }

    fn delete_version(
        &mut self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let versions: Vec<VersionRecord> = self
            .subjects
            .get(subject)
            .map(|s| s.versions.clone())
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let target = match selector {
            VersionSelector::Number(n) => versions
                .iter()
                .find(|v| v.version == n)
                .ok_or(RegistryError::VersionNotFound(n))?,
            VersionSelector::Latest if permanent => versions
                .last()
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?,
            VersionSelector::Latest => versions
                .iter()
                .rev()
                .find(|v| !v.deleted)
                .or(versions.last())
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?,
        };
        let version = target.version;
        if permanent && !target.deleted {
            return Err(RegistryError::VersionNotSoftDeleted {
                subject: subject.to_owned(),
                version,
            });
        }
        if !permanent && target.deleted {
            return Err(RegistryError::VersionSoftDeleted {
                subject: subject.to_owned(),
                version,
            });
        }
        self.ensure_unreferenced(subject, version)?;
        if let Some(record) = self.subjects.get_mut(subject) {
            if permanent {
                record.versions.retain(|v| v.version != version);
            } else {
                record
                    .versions
                    .iter_mut()
                    .filter(|v| v.version == version)
                    .for_each(|v| v.deleted = true);
            }
        }
        self.forget_if_empty(subject);
        Ok(version)
    }

    /// Drops a subject left with neither versions nor settings.
    fn forget_if_empty(&mut self, subject: &str) {
        if self
            .subjects
            .get(subject)
            .is_some_and(|s| s.versions.is_empty() && s.compatibility.is_none())
        {
            self.subjects.remove(subject);
        }
    }
}

/// The level's non-transitive counterpart, for checks against one chosen version.
fn non_transitive(level: CompatibilityLevel) -> CompatibilityLevel {
    match level {
        CompatibilityLevel::BackwardTransitive => CompatibilityLevel::Backward,
        CompatibilityLevel::ForwardTransitive => CompatibilityLevel::Forward,
        CompatibilityLevel::FullTransitive => CompatibilityLevel::Full,
        other => other,
    }
}

/// Writes `state` to `file` atomically: a temporary file beside it, fsync, rename, and an
/// fsync of the directory so the rename itself survives a crash.
fn save(file: &Path, state: &State) -> Result<(), StoreError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(StoreError::Serialise)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let mut out = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    out.write_all(&bytes).map_err(io("writing", &tmp))?;
    out.sync_all().map_err(io("syncing", &tmp))?;
    drop(out);
    fs::rename(&tmp, file).map_err(io("renaming to", file))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn user(extra_fields: &str) -> SchemaRequest {
        SchemaRequest::avro(format!(
            r#"{{"type":"record","name":"User","fields":[{{"name":"id","type":"long"}}{extra_fields}]}}"#
        ))
    }

    #[test]
    fn the_same_schema_keeps_its_id_across_subjects_and_registrations() {
        let store = Store::in_memory();
        let first = store.register("a", &user("")).unwrap();
        assert_eq!((first.id, first.version, first.created), (1, 1, true));
        let again = store.register("a", &user("")).unwrap();
        assert_eq!((again.id, again.version, again.created), (1, 1, false));
        let respelt = SchemaRequest::avro(
            r#"{ "fields": [ { "type": "long", "name": "id" } ], "name": "User", "type": "record" }"#,
        );
        assert!(!store.register("a", &respelt).unwrap().created);
        let other = store.register("b", &user("")).unwrap();
        assert_eq!((other.id, other.version, other.created), (1, 1, true));
        let evolved = store
            .register("a", &user(r#",{"name":"n","type":"string","default":""}"#))
            .unwrap();
        assert_eq!((evolved.id, evolved.version), (2, 2));
        assert_eq!(store.versions_of_id(1, false).unwrap().len(), 2);
    }

    #[test]
    fn incompatible_schemas_are_refused_unless_the_level_allows() {
        let store = Store::in_memory();
        store.register("a", &user("")).unwrap();
        let breaking = user(r#",{"name":"n","type":"string"}"#);
        let err = store.register("a", &breaking).unwrap_err();
        assert_eq!(err.error_code(), 409, "{err}");
        assert!(
            err.to_string()
                .contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
            "{err}"
        );
        store
            .set_subject_compatibility("a", CompatibilityLevel::None)
            .unwrap();
        assert_eq!(store.register("a", &breaking).unwrap().version, 2);
    }

    #[test]
    fn soft_deleted_versions_are_hidden_and_come_back_with_their_id() {
        let store = Store::in_memory();
        let first = store.register("a", &user("")).unwrap();
        assert_eq!(
            store.delete_subject("a", true).unwrap_err().error_code(),
            40405
        );
        assert_eq!(store.delete_subject("a", false).unwrap(), vec![1]);
        assert_eq!(
            store.delete_subject("a", false).unwrap_err().error_code(),
            40404
        );
        assert_eq!(store.versions("a", false).unwrap_err().error_code(), 40401);
        assert_eq!(store.versions("a", true).unwrap(), vec![1]);
        assert!(store.subjects(false, None).is_empty());
        assert_eq!(
            store.schema_by_id(first.id).unwrap().schema,
            user("").schema
        );
        let back = store.register("a", &user("")).unwrap();
        assert_eq!((back.id, back.version), (first.id, 2));
        store
            .delete_version("a", VersionSelector::Number(2), false)
            .unwrap();
        assert_eq!(store.delete_subject("a", true).unwrap(), vec![1, 2]);
        assert_eq!(
            store.schema_by_id(first.id).unwrap_err().error_code(),
            40403
        );
        let reborn = store.register("a", &user("")).unwrap();
        assert_eq!((reborn.id, reborn.version), (first.id, 1));
    }

    #[test]
    fn the_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.register("a", &user("")).unwrap();
        store
            .register("b", &user(r#",{"name":"x","type":"int"}"#))
            .unwrap();
        store
            .set_subject_compatibility("a", CompatibilityLevel::Full)
            .unwrap();
        store
            .set_global_compatibility(CompatibilityLevel::Forward)
            .unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.subjects(false, None), vec!["a", "b"]);
        assert_eq!(
            reopened
                .version("b", VersionSelector::Latest, false)
                .unwrap()
                .id,
            2
        );
        assert_eq!(
            reopened.subject_compatibility("a"),
            Some(CompatibilityLevel::Full)
        );
        assert_eq!(reopened.global_compatibility(), CompatibilityLevel::Forward);
        assert!(!dir.path().join(format!(".{STATE_FILE}.tmp")).exists());
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn references_resolve_and_protect_what_they_point_at() {
        let store = Store::in_memory();
        store.register("user", &user("")).unwrap();
        let outer = SchemaRequest {
            schema: r#"{"type":"record","name":"Outer","fields":[{"name":"u","type":"User"}]}"#
                .into(),
            schema_type: Some("AVRO".into()),
            references: vec![Reference {
                name: "User".into(),
                subject: "user".into(),
                version: 1,
            }],
        };
        let registered = store.register("outer", &outer).unwrap();
        assert_eq!(registered.id, 2);
        assert_eq!(
            store
                .referenced_by("user", VersionSelector::Number(1))
                .unwrap(),
            vec![2]
        );
        let err = store.delete_subject("user", false).unwrap_err();
        assert_eq!(err.error_code(), 42206, "{err}");
        let missing = SchemaRequest {
            references: vec![Reference {
                name: "User".into(),
                subject: "user".into(),
                version: 9,
            }],
            ..outer
        };
        assert_eq!(
            store.register("outer", &missing).unwrap_err().error_code(),
            42201
        );
    }

    #[test]
    fn requests_read_like_confluent_bodies() {
        let request: SchemaRequest = serde_json::from_str(
            r#"{"schema":"\"int\"","schemaType":"AVRO","references":null,"metadata":{}}"#,
        )
        .unwrap();
        assert_eq!(request.schema, r#""int""#);
        assert!(request.references.is_empty());
        let empty: SchemaRequest = serde_json::from_str(r#"{"schema":null}"#).unwrap();
        let err = Store::in_memory().register("s", &empty).unwrap_err();
        assert_eq!(
            (err.error_code(), err.to_string()),
            (42201, "Empty schema".to_owned())
        );
    }

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(
            "latest".parse::<VersionSelector>().unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            "-1".parse::<VersionSelector>().unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            "3".parse::<VersionSelector>().unwrap(),
            VersionSelector::Number(3)
        );
        for bad in ["0", "-2", "abc", "2147483648"] {
            assert_eq!(
                bad.parse::<VersionSelector>().unwrap_err().error_code(),
                42202
            );
        }
    }
}
