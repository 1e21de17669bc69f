//! The appc image manifest (appc spec, "Image Manifest"), validated field by field,
//! image ids (`sha512-` + 128 hex of the uncompressed ACI tar), Mesos' matching rules,
//! and the dependency order of Mesos' `Store::get`: dependencies before dependents,
//! each image once (for A→B→C and A→D→C: [C, B, D, A]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::image::{ImageConfig, RuntimeConfig};
use crate::reference::is_ac_identifier;
use crate::reference::{BadImageId, ImageId};

/// Largest ACI manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Why an appc document or id was refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppcError {
    /// A field is missing or wrong.
    #[error("invalid image manifest: {field}: {why}")]
    Field {
        /// The field, e.g. `name` or `dependencies[1].imageName`.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// Not an appc image id.
    #[error(transparent)]
    BadId(#[from] BadImageId),
    /// The dependencies loop.
    #[error("dependency cycle through {0}")]
    Cycle(String),
    /// A dependency cannot be found.
    #[error("dependency {0} not found")]
    MissingDependency(String),
}

fn field(field: impl Into<String>, why: impl Into<String>) -> AppcError {
    AppcError::Field { field: field.into(), why: why.into() }
}

/// A `{name, value}` label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Label {
    /// AC identifier.
    pub name: String,
    /// Any string.
    pub value: String,
}

/// An entry of `dependencies`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The image name.
    pub image_name: String,
    /// An exact image, when pinned.
    #[serde(rename = "imageID")]
    pub image_id: Option<String>,
    /// Labels the dependency must have.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Expected size, informational.
    pub size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    ac_kind: Option<String>,
    ac_version: Option<String>,
    name: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    app: Option<serde_json::Value>,
    #[serde(default)]
    dependencies: Vec<Dependency>,
    #[serde(default)]
    path_whitelist: Vec<String>,
    #[serde(default)]
    annotations: Vec<Label>,
}

/// The `os`/`arch` pairs the appc spec defines (what `actool validate` accepts).
const OS_ARCH: &[(&str, &[&str])] = &[
    ("linux", &["amd64", "i386", "aarch64", "aarch64_be", "armv6l", "armv7l", "armv7b", "ppc64", "ppc64le", "s390x"]),
    ("freebsd", &["amd64", "i386", "arm"]),
    ("darwin", &["x86_64", "i386"]),
];

/// A validated image manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageManifest {
    /// `acVersion`.
    pub ac_version: String,
    /// The image name (an AC identifier).
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// The app section, if any (exec, user, group, workingDirectory, environment).
    pub app: Option<serde_json::Value>,
    /// Dependencies, in manifest order.
    pub dependencies: Vec<Dependency>,
    /// Paths kept from the dependencies' rootfses (empty: all).
    pub path_whitelist: Vec<String>,
}

/// `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`, the core numeric.
fn is_semver(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl ImageManifest {
    /// Parses and validates a manifest; the error names the bad field.
    pub fn parse(bytes: &[u8]) -> Result<Self, AppcError> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| field("(document)", e.to_string()))?;
        match raw.ac_kind.as_deref() {
            Some("ImageManifest") => {}
            Some(other) => return Err(field("acKind", format!("'{other}' is not ImageManifest"))),
            None => return Err(field("acKind", "missing")),
        }
        let ac_version = raw.ac_version.ok_or_else(|| field("acVersion", "missing"))?;
        if !is_semver(&ac_version) {
            return Err(field("acVersion", format!("'{ac_version}' is not a semantic version")));
        }
        let name = raw.name.ok_or_else(|| field("name", "missing"))?;
        if !is_ac_identifier(&name) {
            return Err(field("name", format!("'{name}' is not an AC identifier")));
        }
        let mut labels = BTreeMap::new();
        for (i, l) in raw.labels.into_iter().enumerate() {
            if !is_ac_identifier(&l.name) {
                return Err(field(format!("labels[{i}].name"), format!("'{}' is not an AC identifier", l.name)));
            }
            if labels.insert(l.name.clone(), l.value).is_some() {
                return Err(field(format!("labels[{i}].name"), format!("'{}' appears twice", l.name)));
            }
        }
        if let Some(os) = labels.get("os") {
            let Some((_, arches)) = OS_ARCH.iter().find(|(o, _)| o == os) else {
                return Err(field("labels.os", format!("'{os}' is not an os the appc spec defines")));
            };
            if let Some(arch) = labels.get("arch").filter(|a| !arches.contains(&a.as_str())) {
                return Err(field("labels.arch", format!("'{arch}' is not an arch the appc spec defines for {os}")));
            }
        } else if let Some(arch) = labels.get("arch") {
            if !OS_ARCH.iter().any(|(_, arches)| arches.contains(&arch.as_str())) {
                return Err(field("labels.arch", format!("'{arch}' is not an arch the appc spec defines")));
            }
        }
        let mut annotations = BTreeSet::new();
        for (i, a) in raw.annotations.iter().enumerate() {
            if !is_ac_identifier(&a.name) || !annotations.insert(a.name.as_str()) {
                return Err(field(
                    format!("annotations[{i}].name"),
                    format!("'{}' is not an AC identifier or appears twice", a.name),
                ));
            }
        }
        for (i, d) in raw.dependencies.iter().enumerate() {
            if !is_ac_identifier(&d.image_name) {
                return Err(field(
                    format!("dependencies[{i}].imageName"),
                    format!("'{}' is not an AC identifier", d.image_name),
                ));
            }
            if let Some(id) = &d.image_id {
                id.parse::<ImageId>()
                    .map_err(|_| field(format!("dependencies[{i}].imageID"), format!("'{id}' is not an image id")))?;
            }
        }
        // Relative entries are read from the root, as actool accepts them.
        let mut path_whitelist = Vec::new();
        for (i, p) in raw.path_whitelist.iter().enumerate() {
            if p.is_empty() || p.split('/').any(|c| c == "..") || p.contains('\0') {
                return Err(field(format!("pathWhitelist[{i}]"), format!("'{p}' is empty or has '..'")));
            }
            path_whitelist.push(if p.starts_with('/') { p.clone() } else { format!("/{p}") });
        }
        if let Some(app) = &raw.app {
            check_app(app)?;
        }
        Ok(Self { ac_version, name, labels, app: raw.app, dependencies: raw.dependencies, path_whitelist })
    }

    /// Mesos' rule: the name matches, every wanted label is present and equal (`os`
    /// and `arch` default to the host's when not asked for).
    pub fn matches(&self, name: &str, wanted: &BTreeMap<String, String>, host: (&str, &str)) -> bool {
        if self.name != name {
            return false;
        }
        let mut wanted = wanted.clone();
        wanted.entry("os".into()).or_insert_with(|| host.0.to_owned());
        wanted.entry("arch".into()).or_insert_with(|| host.1.to_owned());
        wanted.iter().all(|(k, v)| match self.labels.get(k) {
            Some(have) => have == v,
            // An image that says nothing about os/arch is not refused for them.
            None => k == "os" || k == "arch",
        })
    }
}

/// The `app` section: `exec` a list of strings, `user` and `group` present,
/// `workingDirectory` absolute, environment names unique (the rules actool applies).
fn check_app(app: &serde_json::Value) -> Result<(), AppcError> {
    if !app.get("exec").is_none_or(|e| e.as_array().is_some_and(|a| a.iter().all(|x| x.is_string()))) {
        return Err(field("app.exec", "must be a list of strings"));
    }
    for key in ["user", "group"] {
        if app.get(key).and_then(|v| v.as_str()).is_none_or(str::is_empty) {
            return Err(field(format!("app.{key}"), "missing or empty (required)"));
        }
    }
    if let Some(dir) = app.get("workingDirectory") {
        if !dir.as_str().is_some_and(|d| d.is_empty() || d.starts_with('/')) {
            return Err(field("app.workingDirectory", "must be an absolute path"));
        }
    }
    let mut names = BTreeSet::new();
    for (i, var) in app.get("environment").and_then(|e| e.as_array()).into_iter().flatten().enumerate() {
        let name = var.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        if name.is_empty() || name.contains('=') || !names.insert(name.to_owned()) {
            return Err(field(format!("app.environment[{i}].name"), format!("'{name}' is empty, has '=' or repeats")));
        }
    }
    Ok(())
}

/// The host's `os` and `arch` as appc labels name them (appc uses `aarch64` and
/// `i386` where OCI says `arm64` and `386`).
pub fn host_labels() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "i386",
        "arm" => "armv7l",
        "powerpc64" => "ppc64le",
        other => other,
    };
    (std::env::consts::OS, arch)
}

impl ImageManifest {
    /// How to run the image, in OCI terms: `app.exec` is the entrypoint, `user:group`
    /// the user, plus the environment and working directory. `os`/`arch` come from
    /// the labels.
    pub fn runtime_config(&self) -> ImageConfig {
        let app = self.app.as_ref();
        let text = |key: &str| app.and_then(|a| a.get(key)).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
            v.and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let env = app
            .and_then(|a| a.get("environment"))
            .and_then(|e| e.as_array())
            .map(|vars| {
                vars.iter()
                    .filter_map(|v| Some(format!("{}={}", v.get("name")?.as_str()?, v.get("value")?.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let (user, group) = (text("user"), text("group"));
        ImageConfig {
            architecture: self.labels.get("arch").cloned().unwrap_or_default(),
            os: self.labels.get("os").cloned().unwrap_or_default(),
            config: RuntimeConfig {
                user: if group.is_empty() { user } else { format!("{user}:{group}") },
                env,
                entrypoint: strings(app.and_then(|a| a.get("exec"))),
                working_dir: text("workingDirectory"),
                ..RuntimeConfig::default()
            },
            ..ImageConfig::default()
        }
    }
}

/// A stored image that may match a request.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Its id.
    pub id: &'a ImageId,
    /// Its manifest.
    pub manifest: &'a ImageManifest,
    /// When it was imported, seconds since the epoch.
    pub imported_at: u64,
}

/// The tie-break when several stored images match: the highest `version` label
/// (compared as dot-separated numbers where they are numbers), then the newest import.
pub fn pick<'a>(candidates: &[Candidate<'a>]) -> Option<&'a ImageId> {
    fn version_key(v: Option<&String>) -> Vec<(u64, String)> {
        v.map(|v| v.split(['.', '-']).map(|part| (part.parse::<u64>().unwrap_or(0), part.to_owned())).collect())
            .unwrap_or_default()
    }
    candidates
        .iter()
        .max_by(|a, b| {
            version_key(a.manifest.labels.get("version"))
                .cmp(&version_key(b.manifest.labels.get("version")))
                .then(a.imported_at.cmp(&b.imported_at))
        })
        .map(|c| c.id)
}

/// Orders an image and its dependencies for provisioning: dependencies before
/// dependents, each once, depth first in manifest order (Mesos' `Store::get`).
/// `dependencies_of` resolves one image's direct dependencies to ids.
pub fn dependency_order(
    root: &ImageId,
    mut dependencies_of: impl FnMut(&ImageId) -> Result<Vec<ImageId>, AppcError>,
) -> Result<Vec<ImageId>, AppcError> {
    fn visit(
        id: &ImageId,
        deps: &mut dyn FnMut(&ImageId) -> Result<Vec<ImageId>, AppcError>,
        path: &mut Vec<ImageId>,
        done: &mut BTreeSet<ImageId>,
        out: &mut Vec<ImageId>,
    ) -> Result<(), AppcError> {
        if done.contains(id) {
            return Ok(());
        }
        if path.contains(id) {
            return Err(AppcError::Cycle(id.to_string()));
        }
        path.push(id.clone());
        for dep in deps(id)? {
            visit(&dep, deps, path, done, out)?;
        }
        path.pop();
        done.insert(id.clone());
        out.push(id.clone());
        Ok(())
    }
    let mut out = Vec::new();
    visit(root, &mut dependencies_of, &mut Vec::new(), &mut BTreeSet::new(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> ImageId {
        format!("sha512-{}", c.to_string().repeat(128)).parse().unwrap()
    }

    const GOOD: &str = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app",
        "labels":[{"name":"version","value":"1.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
        "app":{"exec":["/bin/app"],"user":"0","group":"0"},
        "dependencies":[{"imageName":"example.com/base","labels":[{"name":"version","value":"2"}]}],
        "pathWhitelist":["/etc/app"]}"#;

    #[test]
    fn parses_and_names_bad_fields() {
        let m = ImageManifest::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(m.name, "example.com/app");
        assert_eq!(m.labels["version"], "1.0");
        assert_eq!(m.dependencies[0].image_name, "example.com/base");
        let bad = |from: &str, to: &str, field_name: &str| {
            let text = GOOD.replacen(from, to, 1);
            match ImageManifest::parse(text.as_bytes()) {
                Err(AppcError::Field { field, .. }) => assert_eq!(field, field_name, "{to}"),
                other => panic!("{to}: {other:?}"),
            }
        };
        bad(r#""acKind":"ImageManifest""#, r#""acKind":"PodManifest""#, "acKind");
        bad(r#""acVersion":"0.8.11""#, r#""acVersion":"eight""#, "acVersion");
        bad(r#""name":"example.com/app""#, r#""name":"Example.com/App""#, "name");
        bad(r#""name":"version""#, r#""name":"Version""#, "labels[0].name");
        bad(r#""imageName":"example.com/base""#, r#""imageName":"-bad""#, "dependencies[0].imageName");
        bad(
            r#""imageName":"example.com/base""#,
            r#""imageName":"b","imageID":"sha512-xyz""#,
            "dependencies[0].imageID",
        );
        bad(r#""/etc/app""#, r#""../etc""#, "pathWhitelist[0]");
        bad(r#""exec":["/bin/app"]"#, r#""exec":"/bin/app""#, "app.exec");
    }

    #[test]
    fn matching_and_tie_break() {
        let m = ImageManifest::parse(GOOD.as_bytes()).unwrap();
        let host = ("linux", "amd64");
        let want = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert!(m.matches("example.com/app", &want(&[]), host));
        assert!(m.matches("example.com/app", &want(&[("version", "1.0")]), host));
        assert!(!m.matches("example.com/app", &want(&[("version", "2.0")]), host));
        assert!(!m.matches("example.com/other", &want(&[]), host));
        assert!(!m.matches("example.com/app", &want(&[]), ("linux", "arm64")));
        let newer = ImageManifest::parse(GOOD.replace(r#""value":"1.0""#, r#""value":"1.10""#).as_bytes()).unwrap();
        let (a, b, c) = (id('a'), id('b'), id('c'));
        let picked = pick(&[
            Candidate { id: &a, manifest: &m, imported_at: 300 },
            Candidate { id: &b, manifest: &newer, imported_at: 100 },
            Candidate { id: &c, manifest: &newer, imported_at: 200 },
        ]);
        assert_eq!(picked, Some(&c), "highest version (1.10 > 1.0), then newest import");
    }

    #[test]
    fn dependency_order_is_mesos_get() {
        let (a, b, c, d) = (id('a'), id('b'), id('c'), id('d'));
        let graph: BTreeMap<ImageId, Vec<ImageId>> = [
            (a.clone(), vec![b.clone(), d.clone()]),
            (b.clone(), vec![c.clone()]),
            (d.clone(), vec![c.clone()]),
            (c.clone(), vec![]),
        ]
        .into_iter()
        .collect();
        let order = dependency_order(&a, |i| Ok(graph[i].clone())).unwrap();
        assert_eq!(order, vec![c.clone(), b.clone(), d.clone(), a.clone()]);
        let cyclic: BTreeMap<ImageId, Vec<ImageId>> =
            [(a.clone(), vec![b.clone()]), (b.clone(), vec![a.clone()])].into_iter().collect();
        assert!(matches!(dependency_order(&a, |i| Ok(cyclic[i].clone())), Err(AppcError::Cycle(_))));
        let missing = dependency_order(&a, |_| Err(AppcError::MissingDependency("example.com/base".into())));
        assert!(matches!(missing, Err(AppcError::MissingDependency(_))));
    }
}
