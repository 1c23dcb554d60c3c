//! The registry's operations on its model: registering (compatibility checked), looking up,
//! testing compatibility, and soft or permanent deletes (refused while referenced).

use super::model::{SchemaRecord, State, VersionRecord};
use super::wire::{Registration, SchemaRequest, SubjectVersion, VersionSelector};
use crate::compat::{self, CompatibilityLevel, Earlier};
use crate::error::RegistryError;
use crate::schema::Parsed;

impl State {
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

    pub(super) fn register(
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

    pub(super) fn lookup(
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

    pub(super) fn test_compatibility(
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

    pub(super) fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let versions = self.all_versions(subject)?;
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

    pub(super) fn delete_version(
        &mut self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let versions = self.all_versions(subject)?;
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
    pub(super) fn forget_if_empty(&mut self, subject: &str) {
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
