//! The directory source: a manifest's module is a file beside it (the
//! behaviour Oasis always had).

use super::{Fetched, ModuleRef, PolicySource, SourceError};

/// Reads modules from files.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirSource;

impl PolicySource for DirSource {
    fn kind(&self) -> &'static str {
        "directory"
    }

    fn fetch(&self, _key: &str, reference: &ModuleRef) -> Result<Fetched, SourceError> {
        let Some(path) = reference.path() else {
            return Err(SourceError::Io {
                module: reference.to_string(),
                error: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a file (the directory source reads files)",
                ),
            });
        };
        match std::fs::read(path) {
            Ok(bytes) => Ok(Fetched {
                bytes,
                origin: format!("directory:{}", path.display()),
                by: "directory",
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::Missing {
                module: path.display().to_string(),
            }),
            Err(error) => Err(SourceError::Io {
                module: path.display().to_string(),
                error,
            }),
        }
    }
}
