//! The desired state on disk: the registry's `app/` and `scale/` entries as this node holds
//! them, removals (tombstones) included, each with the version it was written at, written
//! atomically (a temporary file, fsync, rename, fsync of the directory) so a crash leaves the old
//! or the new file, never half of one.
//!
//! The versions are what make a restart safe in a cluster: an agent that comes back merges what
//! it persisted as the old writes they are, so a removal or a change made through another agent
//! while it was down wins over them, where applying its old specs again would have undone it.
//! A file of the first format (`{"apps": [...]}`, specs without versions) is still read.

use std::io::Write;
use std::path::{Path, PathBuf};

use canteen_core::cluster_file::{FileError, RawClusterFile, build_with};
use canteen_core::model::{AppSpec, SpecError};
use canteen_core::node::Value;
use canteen_core::registry::{Entry, Key};
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;

/// The file of [`identity`], inside the data directory.
const IDENTITY_FILE: &str = "identity";
/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "state.json";

/// Why the state could not be read or written. A failed write leaves the previous file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file or its directory could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The file exists but is not a state file; nothing was loaded.
    #[error("{path}: not a canteen state file ({error}); move it away to start empty")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        error: String,
    },
}

/// A registry entry as persisted: its key, value (or tombstone) and version.
pub type PersistedEntry = (Key, Entry<Value>);

/// What a state file holds.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Specs without versions, from a file of the first format: applied again as new writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppSpec>,
    /// `app/`, `scale/` and `rollout/` entries with their versions: merged as the writes they
    /// were.
    #[serde(default)]
    pub entries: Vec<PersistedEntry>,
}

/// Reads the state persisted in `data_dir`; nothing when there is no file yet.
pub fn load(data_dir: &Path) -> Result<Persisted, StateError> {
    let path = data_dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
        Err(error) => return Err(StateError::Io { path, error }),
    };
    let file: Persisted =
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt { path: path.clone(), error: e.to_string() })?;
    if let Some((key, _)) = file.entries.iter().find(|(k, _)| !k.is_desired_state()) {
        let error = format!("entry {key} is not part of the desired state");
        return Err(StateError::Corrupt { path, error });
    }
    Ok(file)
}

/// Writes `entries` (`app/`, `scale/` and `rollout/` entries) as the desired state in `data_dir`, atomically.
pub fn save(data_dir: &Path, entries: &[PersistedEntry]) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| StateError::Io { path, error }
    };
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let path = data_dir.join(STATE_FILE);
    let tmp = data_dir.join(format!("{STATE_FILE}.tmp"));
    let file = Persisted { apps: Vec::new(), entries: entries.to_vec() };
    let text = serde_json::to_string_pretty(&file).expect("entries encode");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// This agent's identity: 16 random hex digits kept in `data_dir/identity`, made the first
/// time. Its containers carry it beside the node's name, so two agents that share a name on
/// one Docker engine (a mistake) never adopt, stop or remove each other's containers; an
/// agent restarted on the same data directory adopts its own.
pub fn identity(data_dir: &Path) -> Result<String, StateError> {
    let path = data_dir.join(IDENTITY_FILE);
    let io = |error| StateError::Io { path: path.clone(), error };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(id.to_owned());
            }
            Err(StateError::Io {
                path: path.clone(),
                error: std::io::Error::other(format!("{id:?} is no identity (16 hex digits): remove the file")),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let mut f = std::fs::File::create(&path).map_err(io)?;
            f.write_all(format!("{id}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// Removes the state file (after `canteen up` removed everything it started).
pub fn clear(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(STATE_FILE));
}

/// The apps of a cluster file, for `apply` and `up`. The file's `[cluster]` and `[[node]]`
/// tables may be left out (this agent is the node). Apps whose file gives no
/// `[app.health] interval_ms` or `balance` take the agent's `health_interval_ms` and `balance`.
pub fn apps_from_file(file: &str, text: &str, config: &AgentConfig) -> Result<Vec<AppSpec>, FileError> {
    let mut raw: RawClusterFile = toml::from_str(text).map_err(|e| crate::config::toml_error(file, text, &e))?;
    // A file of apps alone knows none of the cluster's nodes (nor their GPU models): a
    // stand-in node lets it build, and the models are left to placement's reasons.
    let apps_alone = raw.cluster.nodes == 0 && raw.node.is_empty();
    if apps_alone {
        raw.cluster.nodes = 1;
    }
    let cluster = build_with(file, &raw.cluster, &raw.node, &raw.app, !apps_alone)?;
    let table: toml::Table = toml::from_str(text).map_err(|e| crate::config::toml_error(file, text, &e))?;
    let raw_apps = table.get("app").and_then(|a| a.as_array()).cloned().unwrap_or_default();
    let mut apps = cluster.apps;
    for (i, spec) in apps.iter_mut().enumerate() {
        let raw_app = raw_apps.iter().find(|a| a.get("name").and_then(|n| n.as_str()) == Some(spec.name.as_str()));
        let given = |key: &str, sub: Option<&str>| {
            raw_app.and_then(|a| a.get(key)).is_some_and(|v| sub.is_none_or(|s| v.get(s).is_some()))
        };
        if !given("health", Some("interval_ms")) {
            spec.health.interval_ms = config.health_interval_ms;
            if !given("health", Some("timeout_ms")) {
                // The default timeout never outlasts a shorter default interval.
                spec.health.timeout_ms = spec.health.timeout_ms.min(config.health_interval_ms);
            }
        }
        if !given("balance", None) {
            spec.balance = config.balance;
        }
        spec.validate().map_err(|e| match e {
            SpecError::Invalid { field, problem } => {
                let from_agent = if field.starts_with("health.") && !given("health", Some("interval_ms")) {
                    format!(" (interval_ms is the agent's health_interval_ms, {} ms)", config.health_interval_ms)
                } else {
                    String::new()
                };
                FileError::new(file, format!("app[{i}].{field}"), format!("{problem}{from_agent}"))
            }
            other => FileError::new(file, format!("app[{i}]"), other.to_string()),
        })?;
    }
    if apps.is_empty() {
        return Err(FileError::new(file, "app", "the file has no [[app]] table: give at least one app to run"));
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "[[app]]\nname = \"web\"\nimage = \"canteen-demo:latest\"\nport = 8080\n";

    #[test]
    fn a_file_without_nodes_is_one_node_and_takes_the_agent_defaults() {
        let config = AgentConfig { health_interval_ms: 250, ..AgentConfig::default() };
        let apps = apps_from_file("web.toml", WEB, &config).unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].health.interval_ms, 250);
        let text = format!("{WEB}[app.health]\ninterval_ms = 700\n");
        assert_eq!(apps_from_file("web.toml", &text, &config).unwrap()[0].health.interval_ms, 700);
    }

    #[test]
    fn a_file_of_apps_alone_may_name_gpu_models_the_cluster_has_and_bad_requests_are_refused() {
        // The file knows none of the cluster's nodes: a model is not checked against them.
        let text = format!("{WEB}gpus = 1\ngpu_models = [\"A100\"]\n");
        let apps = apps_from_file("train.toml", &text, &AgentConfig::default()).unwrap();
        assert_eq!(apps[0].gpu.gpu_models, ["A100"]);
        let e = apps_from_file("train.toml", &format!("{WEB}gpu_milli = 1000\n"), &AgentConfig::default()).unwrap_err();
        assert_eq!(e.key, "app[0].gpu_milli", "{e}");
        // A file that lists its nodes is the cluster: their models are the only ones.
        let nodes = "[[node]]\nname = \"a\"\ncpu_millis = 1000\nmem_mb = 1024\ngpus = 1\ngpu_model = \"T4\"\n";
        let e = apps_from_file("train.toml", &format!("{nodes}{text}"), &AgentConfig::default()).unwrap_err();
        assert_eq!(e.key, "app[0].gpu_models", "{e}");
    }

    #[test]
    fn a_timeout_longer_than_the_agents_interval_is_an_error_not_a_silent_change() {
        let config = AgentConfig { health_interval_ms: 500, ..AgentConfig::default() };
        let text = format!("{WEB}[app.health]\ntimeout_ms = 800\n");
        let e = apps_from_file("web.toml", &text, &config).unwrap_err();
        assert_eq!(e.key, "app[0].health.timeout_ms", "{e}");
        assert!(e.to_string().contains("health_interval_ms"), "{e}");
    }

    #[test]
    fn a_bad_app_names_the_file_and_the_key() {
        let e = apps_from_file("web.toml", &WEB.replace("8080", "\"x\""), &AgentConfig::default()).unwrap_err();
        assert!(e.to_string().starts_with("web.toml"), "{e}");
        assert_eq!(e.key, "app.port", "{e}");
        assert!(e.to_string().contains("u16"), "{e}");
    }

    #[test]
    fn state_survives_a_save_and_load_with_its_versions_and_removals() {
        use canteen_core::model::NodeId;
        use canteen_core::registry::Version;
        let dir = std::env::temp_dir().join(format!("canteen-state-test-{}", std::process::id()));
        let apps = apps_from_file("web.toml", WEB, &AgentConfig::default()).unwrap();
        let version = |wall_ms| Version { wall_ms, logical: 2, writer: NodeId::new("node-a") };
        let entries = vec![
            (
                Key::App(apps[0].name.clone()),
                Entry { version: version(10), value: Some(Value::App(Box::new(apps[0].clone()))) },
            ),
            (Key::App("gone".into()), Entry { version: version(20), value: None }),
            (Key::Scale(apps[0].name.clone()), Entry { version: version(30), value: Some(Value::Scale(4)) }),
        ];
        save(&dir, &entries).unwrap();
        assert_eq!(load(&dir).unwrap(), Persisted { apps: Vec::new(), entries });
        clear(&dir);
        assert_eq!(load(&dir).unwrap(), Persisted::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_of_the_first_format_is_read() {
        let dir = std::env::temp_dir().join(format!("canteen-state-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let apps = apps_from_file("web.toml", WEB, &AgentConfig::default()).unwrap();
        let text = serde_json::json!({ "apps": apps }).to_string();
        std::fs::write(dir.join(STATE_FILE), text).unwrap();
        assert_eq!(load(&dir).unwrap().apps, apps);
        std::fs::write(dir.join(STATE_FILE), "{\"entries\": 3}").unwrap();
        assert!(matches!(load(&dir), Err(StateError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
