//! Validated container and rootfs ids: the only inputs `paths` turns into paths.

use std::fmt;

use std::str::FromStr;

/// Linux's NAME_MAX: a container id is one path component.
const MAX_ID_LEN: usize = 255;

/// Why a container id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// Empty.
    #[error("container id is empty")]
    Empty,
    /// `.` or `..`.
    #[error("container id '{0}' is a dot name")]
    DotName(String),
    /// Over 255 bytes.
    #[error("container id is longer than 255 bytes")]
    TooLong,
    /// Holds `/`, NUL or a control character.
    #[error("container id '{id}' holds a forbidden character {ch:?}")]
    BadChar {
        /// The id.
        id: String,
        /// The offending character.
        ch: char,
    },
}

/// A container id: one safe path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() {
            return Err(InvalidId::Empty);
        }
        if s == "." || s == ".." {
            return Err(InvalidId::DotName(s.to_owned()));
        }
        if s.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong);
        }
        if let Some(ch) = s.chars().find(|c| *c == '/' || c.is_control()) {
            return Err(InvalidId::BadChar { id: s.escape_debug().to_string(), ch });
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container and its ancestors, outermost first (Mesos' nested `ContainerID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPath(Vec<ContainerId>);

impl ContainerPath {
    /// A top-level container.
    pub fn top(id: ContainerId) -> Self {
        Self(vec![id])
    }

    /// `id` nested under `self`.
    #[must_use]
    pub fn child(&self, id: ContainerId) -> Self {
        let mut ids = self.0.clone();
        ids.push(id);
        Self(ids)
    }

    /// The ids, outermost first.
    pub fn ids(&self) -> &[ContainerId] {
        &self.0
    }

    /// The parent, if nested.
    pub fn parent(&self) -> Option<Self> {
        (self.0.len() > 1).then(|| Self(self.0[..self.0.len() - 1].to_vec()))
    }
}

impl FromStr for ContainerPath {
    type Err = InvalidId;
    /// `a` or `a/b/c` (nested).
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let ids = s.split('/').map(str::parse).collect::<Result<Vec<ContainerId>, _>>()?;
        Ok(Self(ids))
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.0.iter().map(ContainerId::as_str).collect();
        f.write_str(&parts.join("/"))
    }
}

impl<'de> serde::Deserialize<'de> for ContainerPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ContainerPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A rootfs id: a UUID, as Mesos uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RootfsId(String);

impl RootfsId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RootfsId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for RootfsId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        uuid::Uuid::parse_str(&s).map(|_| Self(s.clone())).map_err(|_| format!("rootfs id '{s}' is not a UUID"))
    }
}

impl From<RootfsId> for String {
    fn from(id: RootfsId) -> String {
        id.0
    }
}

impl fmt::Display for RootfsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let cases: &[(&str, bool)] = &[
            ("c1", true),
            ("a.b-c_d", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a\0b", false),
            ("a\nb", false),
        ];
        for (id, ok) in cases {
            assert_eq!(id.parse::<ContainerId>().is_ok(), *ok, "{id:?}");
        }
        assert!("x".repeat(256).parse::<ContainerId>().is_err());
        assert!("x".repeat(255).parse::<ContainerId>().is_ok());
        let nested: ContainerPath = "p/c".parse().unwrap();
        assert_eq!(nested.ids().len(), 2);
        assert_eq!(nested.parent().unwrap().to_string(), "p");
        assert!("p//c".parse::<ContainerPath>().is_err());
        assert!(RootfsId::try_from("../x".to_owned()).is_err());
        assert!(RootfsId::try_from(RootfsId::new().to_string()).is_ok());
    }
}
