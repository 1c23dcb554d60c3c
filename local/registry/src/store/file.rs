//! The store's persistence: the whole state as one JSON file, read at start and replaced
//! atomically on every change.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::model::State;
use crate::error::StoreError;

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "registry.json";

/// The state kept in `file`; the empty state when there is no file yet.
pub(super) fn load(file: &Path) -> Result<State, StoreError> {
    match fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: file.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(source) => Err(StoreError::Io {
            action: "reading",
            path: file.to_owned(),
            source,
        }),
    }
}

/// Writes `state` to `file` atomically: a temporary file beside it, fsync, rename, and an
/// fsync of the directory so the rename itself survives a crash.
pub(super) fn save(file: &Path, state: &State) -> Result<(), StoreError> {
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
