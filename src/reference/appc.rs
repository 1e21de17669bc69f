//! appc references: `appc:NAME[:VERSION][?LABEL=VALUE&...]` and `appc:sha512-HEX`,
//! plus the two appc identifier rules every appc piece shares (AC identifiers and
//! image ids).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::ParseError;

const ID_PREFIX: &str = "sha512-";
const ID_HEX_LEN: usize = 128;

/// appc "AC Identifier": `[a-z0-9]+([-._~/][a-z0-9]+)*`; names and label names.
pub fn is_ac_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    b.windows(2).all(|w| alnum(w[0]) || alnum(w[1])) && b.iter().all(|&c| alnum(c) || b"-._~/".contains(&c))
}

/// Not an appc image id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid appc image id '{0}': expected sha512- and 128 lower-case hex characters")]
pub struct BadImageId(pub String);

/// An appc image id: `sha512-` and the 128-hex sha512 of the uncompressed ACI tar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageId(String);

impl ImageId {
    /// The id of an ACI whose uncompressed tar has this sha512.
    pub fn from_sha512(digest: &[u8]) -> Self {
        Self(format!("{ID_PREFIX}{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageId {
    type Err = BadImageId;
    fn from_str(s: &str) -> Result<Self, BadImageId> {
        let hex = s.strip_prefix(ID_PREFIX).ok_or_else(|| BadImageId(s.to_owned()))?;
        if hex.len() == ID_HEX_LEN && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadImageId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for ImageId {
    type Error = BadImageId;
    fn try_from(s: String) -> Result<Self, BadImageId> {
        s.parse()
    }
}

impl From<ImageId> for String {
    fn from(id: ImageId) -> String {
        id.0
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an `appc:` reference asks for: an exact id, or a name and labels (a version
/// is the `version` label). `os` and `arch` are left out unless given: the store
/// fills in the host's when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppcRef {
    /// `appc:sha512-HEX`.
    Id(ImageId),
    /// `appc:NAME[:VERSION][?LABEL=VALUE&...]`.
    Name {
        /// An AC identifier, e.g. `example.com/app`.
        name: String,
        /// Required labels, `version` included.
        labels: BTreeMap<String, String>,
    },
}

impl AppcRef {
    /// Parses what follows `appc:`.
    pub(super) fn parse(input: &str, rest: &str) -> Result<Self, ParseError> {
        if rest.starts_with(ID_PREFIX) {
            return rest.parse().map(Self::Id).map_err(|e: BadImageId| ParseError::new(input, rest, &e.to_string()));
        }
        let (head, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        let (name, version) = match head.split_once(':') {
            Some((name, version)) => (name, Some(version)),
            None => (head, None),
        };
        if !is_ac_identifier(name) {
            return Err(ParseError::new(input, name, "the appc name is not an AC identifier ([a-z0-9] and -._~/)"));
        }
        let mut labels = BTreeMap::new();
        if let Some(version) = version {
            check_value(input, version)?;
            labels.insert("version".to_owned(), version.to_owned());
        }
        for pair in query.map(|q| q.split('&')).into_iter().flatten() {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(ParseError::new(input, pair, "a label is not LABEL=VALUE"));
            };
            if !is_ac_identifier(key) {
                return Err(ParseError::new(input, key, "the label name is not an AC identifier"));
            }
            check_value(input, value)?;
            if labels.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(ParseError::new(input, key, "the label is given twice (a version counts as one)"));
            }
        }
        Ok(Self::Name { name: name.to_owned(), labels })
    }
}

fn check_value(input: &str, value: &str) -> Result<(), ParseError> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || c == '/' || c == '&' || c == '?') {
        return Err(ParseError::new(input, value, "a label value is empty or has '/', '&', '?' or control characters"));
    }
    Ok(())
}

impl fmt::Display for AppcRef {
    /// The normalized form: labels sorted, the version as a label.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "appc:{id}"),
            Self::Name { name, labels } => {
                write!(f, "appc:{name}")?;
                for (i, (k, v)) in labels.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AppcRef, ParseError> {
        AppcRef::parse(s, s)
    }

    #[test]
    fn names_versions_labels_ids() {
        let r = parse("example.com/app:1.0?os=linux&channel=stable").unwrap();
        assert_eq!(r.to_string(), "appc:example.com/app?channel=stable&os=linux&version=1.0");
        assert_eq!(parse("example.com/app").unwrap().to_string(), "appc:example.com/app");
        let id = format!("sha512-{}", "ab".repeat(64));
        assert_eq!(parse(&id).unwrap(), AppcRef::Id(id.parse().unwrap()));
        assert_eq!(parse("sha512-xyz").unwrap_err().part(), "sha512-xyz");
        assert_eq!(parse("Example.com/app").unwrap_err().part(), "Example.com/app");
        assert_eq!(parse("a:1.0?version=2").unwrap_err().part(), "version");
        assert_eq!(parse("a?os").unwrap_err().part(), "os");
        assert_eq!(parse("a:").unwrap_err().part(), "");
        assert_eq!(parse("a:1/2").unwrap_err().part(), "1/2");
    }

    #[test]
    fn identifiers_and_ids() {
        assert!(is_ac_identifier("example.com/app-1_x~y"));
        for bad in ["", "-a", "a-", "a--b", "A", "a b", "a:b"] {
            assert!(!is_ac_identifier(bad), "{bad}");
        }
        assert!(format!("sha512-{}", "a".repeat(128)).parse::<ImageId>().is_ok());
        assert!(format!("sha512-{}", "a".repeat(64)).parse::<ImageId>().is_err());
        assert!(format!("sha256-{}", "a".repeat(128)).parse::<ImageId>().is_err());
        assert!(format!("sha512-{}", "A".repeat(128)).parse::<ImageId>().is_err());
        assert_eq!(ImageId::from_sha512(&[0xab; 64]).as_str(), format!("sha512-{}", "ab".repeat(64)));
    }
}
