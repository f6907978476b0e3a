// SPDX-License-Identifier: Apache-2.0
//! The user's `preferences.toml` in Nestbox's config directory
//! (`$XDG_CONFIG_HOME/nestbox`, else `~/.config/nestbox`). A missing file
//! means the defaults; a broken one means the defaults plus the error to
//! show, and the file is left untouched.

use std::io;
use std::path::{Path, PathBuf};

use directories::ProjectDirs;
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::config::{ConfigError, Problem, SCHEMA, ScaleMode, load_versioned};

/// The preferences file's name.
pub const PREFS_FILE: &str = "preferences.toml";

/// The release chord when none is set.
pub const DEFAULT_RELEASE_CHORD: &str = "ctrl+alt";

/// The user's preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// Schema version of the file.
    pub schema: u32,
    /// Where VMs live, instead of the data directory's `vms/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_folder: Option<PathBuf>,
    /// The keys that release a grabbed pointer and keyboard, e.g. `ctrl+alt`.
    pub release_chord: String,
    /// The scale mode new VMs get.
    pub default_scale: ScaleMode,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            schema: SCHEMA,
            vm_folder: None,
            release_chord: DEFAULT_RELEASE_CHORD.to_string(),
            default_scale: ScaleMode::default(),
        }
    }
}

/// Preferences as loaded: what to use, and what was wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPrefs {
    /// The preferences to use (the defaults if the file is broken).
    pub prefs: Preferences,
    /// Why the file was not used, if it exists and is broken.
    pub error: Option<ConfigError>,
}

impl Preferences {
    /// `preferences.toml` in Nestbox's config directory, if there is a home.
    pub fn default_path() -> Option<PathBuf> {
        ProjectDirs::from("org", "Nestbox", "nestbox").map(|d| d.config_dir().join(PREFS_FILE))
    }

    /// Loads the preferences at `path`.
    pub fn load(path: &Path) -> LoadedPrefs {
        match load_versioned::<Preferences>(path) {
            Ok(prefs) => match prefs.release_chord_error() {
                None => LoadedPrefs { prefs, error: None },
                Some(message) => LoadedPrefs {
                    prefs: Preferences::default(),
                    error: Some(ConfigError {
                        file: path.to_path_buf(),
                        problem: Problem::Parse {
                            location: None,
                            message,
                        },
                    }),
                },
            },
            Err(ConfigError {
                problem:
                    Problem::Read {
                        kind: io::ErrorKind::NotFound,
                        ..
                    },
                ..
            }) => LoadedPrefs {
                prefs: Preferences::default(),
                error: None,
            },
            Err(err) => LoadedPrefs {
                prefs: Preferences::default(),
                error: Some(err),
            },
        }
    }

    /// Loads the preferences from [`Preferences::default_path`].
    pub fn load_default() -> LoadedPrefs {
        match Self::default_path() {
            Some(path) => Self::load(&path),
            None => LoadedPrefs {
                prefs: Preferences::default(),
                error: None,
            },
        }
    }

    /// Writes the preferences to `path` atomically, creating its directory.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = toml::to_string_pretty(self)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        write_atomic(path, text.as_bytes())
    }

    /// Why the release chord is not usable: it must be keys joined by `+`,
    /// each a letter, digit or name such as `ctrl`, `alt`, `shift`, `f12`.
    pub fn release_chord_error(&self) -> Option<String> {
        let valid = !self.release_chord.is_empty()
            && self
                .release_chord
                .split('+')
                .all(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()));
        (!valid).then(|| {
            format!(
                "release_chord = \"{}\" is not a key chord (write keys joined by +, like \"ctrl+alt\")",
                self.release_chord
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::testdir::TestDir;

    #[test]
    fn test_missing_file_is_defaults_without_error() {
        let loaded = Preferences::load(Path::new("/nonexistent/preferences.toml"));
        assert_eq!(loaded.prefs, Preferences::default());
        assert_eq!(loaded.prefs.release_chord, "ctrl+alt");
        assert!(loaded.error.is_none());
    }

    #[test]
    fn test_save_then_load() {
        let dir = TestDir::new("prefs-save");
        let path = dir.path().join("nested/preferences.toml");
        let prefs = Preferences {
            vm_folder: Some(PathBuf::from("/big/disk/vms")),
            release_chord: "ctrl+shift".to_string(),
            default_scale: ScaleMode::Integer,
            ..Preferences::default()
        };
        prefs.save(&path).unwrap();
        assert_eq!(Preferences::load(&path).prefs, prefs);
    }

    #[test]
    fn test_partial_file_fills_in_defaults() {
        let dir = TestDir::new("prefs-partial");
        let path = dir.path().join(PREFS_FILE);
        std::fs::write(&path, "default_scale = \"stretch\"\nsomething_newer = 1\n").unwrap();
        let loaded = Preferences::load(&path);
        assert!(loaded.error.is_none(), "{:?}", loaded.error);
        assert_eq!(loaded.prefs.default_scale, ScaleMode::Stretch);
        assert_eq!(loaded.prefs.release_chord, "ctrl+alt");
    }

    #[test]
    fn test_corrupt_file_is_defaults_plus_error_and_untouched() {
        let dir = TestDir::new("prefs-corrupt");
        let path = dir.path().join(PREFS_FILE);
        let text = "release_chord = \"ctrl+alt\"\ndefault_scale = 3\n";
        std::fs::write(&path, text).unwrap();
        let loaded = Preferences::load(&path);
        assert_eq!(loaded.prefs, Preferences::default());
        let err = loaded.error.unwrap();
        assert!(err.to_string().contains("line 2, column 17"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn test_bad_chord_is_reported() {
        let dir = TestDir::new("prefs-chord");
        let path = dir.path().join(PREFS_FILE);
        std::fs::write(&path, "release_chord = \"ctrl++\"\n").unwrap();
        let loaded = Preferences::load(&path);
        assert_eq!(loaded.prefs.release_chord, "ctrl+alt");
        assert!(
            loaded
                .error
                .unwrap()
                .to_string()
                .contains("not a key chord")
        );
    }
}
