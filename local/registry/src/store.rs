//! The store: the one handle on the registry's state that every handler shares. Reads see the
//! state under a mutex; every change is made on a copy of the state, saved (`file`) and only
//! then swapped in, all under that mutex: a change that could not be saved is not made.
//!
//! Its parts: the wire types clients send and receive (`wire`), the model and its queries
//! (`model`), the operations on it (`ops`), and its persistence to one JSON file (`file`).

mod file;
mod model;
mod ops;
mod wire;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub use file::STATE_FILE;
use model::State;
pub use wire::{
    MEDIA_TYPE, Registration, SchemaById, SchemaRequest, SubjectVersion, VersionSelector,
};

use crate::compat::CompatibilityLevel;
use crate::error::{RegistryError, StoreError};

/// The registry's state, shared by every handler; cloning gives another handle on it.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Mutex<State>>,
    file: Option<PathBuf>,
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
        let state = file::load(&file)?;
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
                file::save(file, &next)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::schema::Reference;

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
